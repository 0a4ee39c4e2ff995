"""The export self-check, used by every format (ONNX, INT8, TorchScript, torch.export): a written graph's outputs
against PyTorch's on real images, within stated tolerances; a graph that disagrees is not kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from brisc.errors import BriscError
from brisc.export.wrapper import ExportWrapper

# Self-check tolerances (max abs diff, ORT vs PyTorch).
TOLERANCE = {"logits": 1e-4, "probabilities": 1e-4, "heatmap": 1e-5, "attentions": 1e-5, "rollout": 1e-5,
             "attentions_full": 1e-5, "ood_score": 1e-3}
# Squared distances run to 1e4 on outliers, and whitening magnifies the features' float32 rounding (most on tiny
# models with near-singular covariances): compared relative to max(1, |PyTorch's|). 1e-3 of a distance moves no
# flag: validation and outliers lie orders of magnitude apart.
RELATIVE = {"ood_score"}


class ExportCheckError(BriscError):
    """The written graph does not agree with PyTorch: it was deleted (exit 1)."""

    exit_code = 1

    def __str__(self) -> str:
        return f"self-check failed, nothing written: {super().__str__()}"


def torch_outputs(wrapper: ExportWrapper, x: np.ndarray) -> dict[str, np.ndarray]:
    with torch.no_grad():
        return {n: t.numpy() for n, t in zip(wrapper.names, wrapper(torch.from_numpy(x)))}


def compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict[str, float]:
    def diff(n):
        d = np.abs(ref[n].astype(np.float64) - got[n])
        return d / np.maximum(1.0, np.abs(ref[n])) if n in RELATIVE else d
    return {n: float(diff(n).max()) for n in ref}


def check_against_torch(run_fn, wrapper: ExportWrapper, images: np.ndarray, what: str) -> dict[str, float]:
    """Run ``run_fn(x) -> {name: array}`` on the images and compare every output with PyTorch."""
    ref, got = torch_outputs(wrapper, images), run_fn(images)
    diffs = compare(ref, got)
    bad = {n: d for n, d in diffs.items() if not d <= TOLERANCE[n]}  # `not <=` also catches NaN
    if bad:
        raise ExportCheckError(f"{what} disagrees with PyTorch: " +
                               ", ".join(f"{n} max abs diff {d:.2e} > {TOLERANCE[n]:.0e}" for n, d in bad.items()))
    return diffs


def ort_runner(path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return lambda x: dict(zip(names, sess.run(None, {"pixel_values": x})))
