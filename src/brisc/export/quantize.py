"""Static INT8 (QDQ) for the per-token weight MatMul/Gemm nodes only (``int8_nodes``); attention stays fp32.

Only MatMul/Gemm nodes whose second input is a 2-D weight are quantized, by name, so the Q.K^T and P.V products
(both inputs activations), the softmax and every map keep full precision. Activation scales are calibrated once,
on the run's training images (MinMax), and stored in the graph: unlike dynamic quantization, whose scales come
from each batch at run time, a scan's probabilities do not depend on its batch-mates, at about the dynamic graph's
img/s (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from brisc.export.selfcheck import ort_runner
from brisc.fsio import atomic_path


# 7-bit weights: on x86 CPUs without VNNI the u8 x s8 products saturate in int16 (vpmaddubsw), and the
# graph does not know which CPU will run it, so it is quantized to be exact on all of them (ORT docs).
REDUCE_RANGE = True
CALIBRATION_BATCH = 16
QUANTIZATION = "static int8 (QDQ, weight MatMul/Gemm only, per channel, reduce_range, MinMax on training images)"


def int8_nodes(path: Path) -> list[str]:
    """The weight products made INT8: those with a 2-D initializer as weight on as many rows per image as the
    per-token ones. Left fp32: the head-major q/k/v products ([B, 1, N, C] @ [H, C, d], which onnxruntime's
    per-channel INT8 MatMul cannot run), and those on fewer rows (the ViT's last block, which runs on the prefix
    tokens only, and the head): they cost next to nothing and decide the argmax, so INT8 there only adds
    disagreements; and those whose weight another product also reads (the stacked autoencoder's tied decoder),
    which onnxruntime would quantize once along one product's channel axis for both."""
    import onnx

    graph = onnx.shape_inference.infer_shapes(onnx.load(str(path))).graph
    # float32 weights only: the OOD head's Mahalanobis products are float64 on purpose
    weights = {t.name: len(t.dims) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in [*graph.value_info, *graph.input]}

    def rows(name: str) -> int | None:  # rows per image of an activation [B, ..., C]
        dims = shapes.get(name)
        return None if dims is None or None in dims[1:-1] else int(np.prod(dims[1:-1], dtype=np.int64))

    products = [n for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    readers = Counter(name for n in products for name in n.input)
    products = [n for n in products if weights.get(n.input[1]) == 2 and readers[n.input[1]] == 1]
    most = max((rows(n.input[0]) or 0 for n in products), default=0)
    return [n.name for n in products if (rows(n.input[0]) or most) >= most]


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray) -> None:
    """``calibration``: preprocessed images [N, 3, H, W] (the run's training images) whose activations set the
    INT8 scales."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    nodes = int8_nodes(fp32)
    if not nodes:  # onnxruntime reads an empty list as "quantize every node"
        raise ValueError(f"{fp32}: no weight product to quantize")

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.rest = iter(range(0, len(calibration), CALIBRATION_BATCH))

        def get_next(self):
            i = next(self.rest, None)
            return None if i is None else {"pixel_values": calibration[i:i + CALIBRATION_BATCH]}

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer warns on the float64 rollout tensors it rightly leaves alone
    try:
        with atomic_path(out) as tmp:
            quantize_static(str(fp32), str(tmp), Batches(), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul", "Gemm"], nodes_to_quantize=nodes,
                            per_channel=True, reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            # ORT 1.2x's bias-scale adjustment indexes a Gemm's per-channel scales on the wrong
                            # axis (IndexError); the int32 biases fit without it at these magnitudes.
                            extra_options={"QDQDisableWeightAdjustForInt32Bias": True,
                                           "OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"]})
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
