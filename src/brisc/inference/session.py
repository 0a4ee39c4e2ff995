"""One onnxruntime session per run, driven by the model's verified sidecar."""

from __future__ import annotations

import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brisc.errors import BriscError
from brisc.imageio import Preprocessing
from brisc.sidecar import ModelCard, SidecarError, read_sidecar

MODELS_DIR = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS_DIR / "default.onnx"


class InferenceError(BriscError):
    """A usage or model problem: one line, exit code 2."""


def default_model() -> Path:
    if not DEFAULT_MODEL.is_file():
        raise InferenceError("no default model is shipped with this brisc yet: pass --model PATH.onnx "
                             "(make one with brisc-train and brisc-export)")
    return DEFAULT_MODEL


def _installed(dist: str) -> bool:
    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Explicit providers for ``--device auto|cpu|cuda``; cuda without a working CUDA provider fails loudly."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise InferenceError("--device cuda: onnxruntime has no CUDAExecutionProvider here "
                             f"(available: {', '.join(available)}); install brisc-mri[gpu] on a CUDA machine, or use --device cpu")
    return ["CPUExecutionProvider"]


@dataclass
class ModelSession:
    path: Path
    card: ModelCard
    session: object
    output_names: list[str]
    provider: str

    @property
    def prep(self) -> Preprocessing:
        return self.card.preprocessing

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def name(self) -> str:
        return self.path.name

    def run(self, pixel_values: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        names = outputs or self.output_names
        return dict(zip(names, self.session.run(names, {"pixel_values": np.ascontiguousarray(pixel_values, np.float32)})))


def open_session(model: str | os.PathLike | None, *, device: str = "auto", threads: int | None = None,
                 spin: bool = True) -> ModelSession:
    """Verify the sidecar (sha256, preprocessing version), then open one session with explicit providers.

    ``spin=False``: the session's threads sleep when they run out of work instead of spinning, which leaves those
    cycles to threads beside it (brisc-infer's heatmap drawing: docs/benchmarks.md); alone, spinning is a little
    faster."""
    path = Path(model) if model else default_model()
    if path.name.endswith(".onnx.json"):  # the sidecar named instead of its model: take the model beside it
        path = path.with_name(path.name[: -len(".json")])
    try:
        card = read_sidecar(path)
    except SidecarError as e:
        raise InferenceError(str(e)) from None
    try:
        import onnxruntime as ort
    except ImportError:
        raise InferenceError("onnxruntime is not installed: pip install 'brisc-mri[cpu]' (or 'brisc-mri[gpu]')") from None
    if _installed("onnxruntime") and _installed("onnxruntime-gpu"):
        warnings.warn("both onnxruntime and onnxruntime-gpu are installed; they share one module and may shadow "
                      "each other: uninstall one of them", stacklevel=2)
    providers = choose_providers(device, ort.get_available_providers())
    opts = ort.SessionOptions()
    if threads:
        cores = os.cpu_count() or 1
        if threads > cores:  # more threads than cores only thrash (a tester's 100000 drove the load to 751)
            warnings.warn(f"--threads {threads} is more than the {cores} CPU cores here: using {cores}", stacklevel=2)
            threads = cores
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise InferenceError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from None
    used = sess.get_providers()
    if device == "cuda" and "CUDAExecutionProvider" not in used:
        raise InferenceError("--device cuda: the CUDA provider failed to initialise (check the CUDA/cuDNN install)")
    return ModelSession(path=path, card=card, session=sess, output_names=[o.name for o in sess.get_outputs()],
                        provider=used[0])
