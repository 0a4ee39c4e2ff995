"""Dynamic INT8 for the weight MatMul/Gemm nodes only; the attention products stay fp32.

``MatMulConstBOnly`` quantizes a MatMul only when its second input is a constant (a weight), so the
Q.K^T and P.V products (both inputs activations) and the softmax keep full precision and the
attention maps survive quantization.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from brisc.export.onnx import ort_runner
from brisc.fsio import atomic_path


def quantize_int8(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer warns on the float64 rollout tensors it rightly leaves alone
    try:
        with atomic_path(out) as tmp:
            quantize_dynamic(str(fp32), str(tmp), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8,
                             per_channel=True, extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Mean per-image Pearson correlation of two stacks of maps (identical flat maps count as 1)."""
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    return float(np.mean([np.corrcoef(u, v)[0, 1] if u.std() > 0 and v.std() > 0 else float(np.allclose(u, v))
                          for u, v in zip(x, y)]))


def agreement(fp32: Path, int8: Path, images: np.ndarray) -> dict:
    """Top-1 agreement with the fp32 graph and the correlation of its maps (heatmap; rollout for ViTs)."""
    a, b = ort_runner(fp32)(images), ort_runner(int8)(images)
    out = {"images": int(len(images)), "top1_agreement": float((a["logits"].argmax(1) == b["logits"].argmax(1)).mean()),
           "heatmap_correlation": _correlation(a["heatmap"], b["heatmap"]),
           "logits_max_abs_diff": float(np.abs(a["logits"] - b["logits"]).max())}
    if "rollout" in a:
        out["rollout_correlation"] = _correlation(a["rollout"], b["rollout"])
    return out
