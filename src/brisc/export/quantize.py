"""Dynamic INT8 for the per-token weight MatMul/Gemm nodes only (``fp32_nodes``); the attention products stay fp32.

``MatMulConstBOnly`` quantizes a MatMul only when its second input is a constant (a weight), so the
Q.K^T and P.V products (both inputs activations) and the softmax keep full precision and the
attention maps survive quantization.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from brisc.export.selfcheck import ort_runner
from brisc.fsio import atomic_path


# 7-bit weights: on x86 CPUs without VNNI the u8 x s8 products saturate in int16 (vpmaddubsw), and the
# graph does not know which CPU will run it, so it is quantized to be exact on all of them (ORT docs).
REDUCE_RANGE = True
QUANTIZATION = "dynamic int8 (weight MatMul/Gemm only, per channel, reduce_range)"


def fp32_nodes(path: Path) -> list[str]:
    """The weight products left fp32: those whose weight is not a 2-D initializer (the head-major q/k/v products,
    [B, 1, N, C] @ [H, C, d], which onnxruntime's per-channel INT8 MatMul cannot run), and those on fewer rows
    per image than the per-token ones (the ViT's last block, which runs on the prefix tokens only, and the head):
    they cost next to nothing and decide the argmax, so INT8 there only adds disagreements."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    weights = {t.name: len(t.dims) for t in graph.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.input]}

    def rows(name: str) -> int | None:  # rows per image of an activation [B, ..., C]
        dims = shapes.get(name)
        return None if dims is None or None in dims[1:-1] else int(np.prod(dims[1:-1], dtype=np.int64))

    products = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    most = max((rows(n.input[0]) or 0 for n in products if weights.get(n.input[1]) == 2), default=0)
    return [n.name for n in products if n.input[1] in weights
            and (weights[n.input[1]] != 2 or (rows(n.input[0]) or most) < most)]


def quantize_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer warns on the float64 rollout tensors it rightly leaves alone
    try:
        with atomic_path(out) as tmp:
            quantize_dynamic(str(fp32), str(tmp), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                             per_channel=True, reduce_range=REDUCE_RANGE, extra_options={"MatMulConstBOnly": True},
                             nodes_to_exclude=fp32_nodes(fp32))
    finally:
        root.setLevel(level)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Mean per-image Pearson correlation of two stacks of maps (identical flat maps count as 1)."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    return float(np.mean([np.corrcoef(u, v)[0, 1] if u.std() > 0 and v.std() > 0 else float(np.allclose(u, v))
                          for u, v in zip(x, y)]))


def logit_error_ratio(fp32_logits: np.ndarray, int8_logits: np.ndarray) -> float:
    """Largest INT8 logit error over the mean per-image spread (max - min) of the fp32 logits.

    Unlike top-1 agreement, this does not hinge on near-tied logits: a model near chance has a small
    spread and its argmax flips under any rounding, but its relative error stays as small as a trained one's."""
    spread = float(np.mean(fp32_logits.max(1) - fp32_logits.min(1)))
    return float(np.abs(fp32_logits - int8_logits).max() / max(spread, 1e-12))


def agreement(fp32: Path, int8: Path, images: np.ndarray) -> dict:
    """Top-1 agreement with the fp32 graph, the relative logit error and the correlation of its maps
    (heatmap; rollout for ViTs), measured on this machine's CPU (named in ``cpu``)."""
    from brisc.hardware import describe

    a, b = ort_runner(fp32)(images), ort_runner(int8)(images)
    out = {"images": int(len(images)), "top1_agreement": float((a["logits"].argmax(1) == b["logits"].argmax(1)).mean()),
           "logit_error_ratio": logit_error_ratio(a["logits"], b["logits"]),
           "heatmap_correlation": _correlation(a["heatmap"], b["heatmap"]),
           "logits_max_abs_diff": float(np.abs(a["logits"] - b["logits"]).max()), "cpu": describe()}
    if "rollout" in a:
        out["rollout_correlation"] = _correlation(a["rollout"], b["rollout"])
    return out
