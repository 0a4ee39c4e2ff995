"""The model card, written as the sidecar ``<model>.onnx.json``: what inference needs to trust and drive an
exported graph, and what a reader needs to judge it.

Torch-free: ``brisc.export`` writes it, ``brisc.inference`` reads and verifies it; both go through ``ModelCard``.
Preprocessing has one shape everywhere (``Preprocessing.to_dict``, as in checkpoints). The training data is
named, not located: a card never carries a path of the machine that trained the model.
"""

from __future__ import annotations

from brisc.errors import BriscError

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from brisc.fsio import write_json_atomic
from brisc.imageio import PREPROCESSING_VERSION, Preprocessing

FORMAT_VERSION = 2  # 2: ModelCard (one preprocessing shape, training data by name)


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    model_kind: str  # brisc.kinds.MODEL_KINDS
    model_name: str
    classes: tuple[str, ...]
    preprocessing: Preprocessing
    outputs: tuple[str, ...]  # the graph's outputs, in order (brisc.export.wrapper.output_names)
    format: str  # onnx | torchscript | pt2
    temperature: float  # probabilities = softmax(logits / temperature), fitted on validation
    heatmap: str  # the recommended map the graph's `heatmap` output holds: rollout, cls:layer=K or saliency
    heatmap_method: str  # that map in words
    explain_methods: tuple[str, ...]  # brisc.kinds.EXPLAIN_METHODS this graph supports
    validation_metrics: dict
    training_data: dict  # split seed/method/sizes, preset, and the data folder's name only
    checkpoint_sha256: str
    brisc_version: str
    torch: str
    opset: int | None = None
    self_check: dict = field(default_factory=dict)  # max abs diff against PyTorch, fused onnxruntime ops
    quantization: dict | None = None  # INT8: type, agreement with fp32, the CPU it was checked on
    shipped_from: str | None = None
    ood: dict | None = None  # the ood_score output: score, threshold, rule, validation flag rate, evaluation AUROC
    model_file: str = ""  # set by write_sidecar
    model_sha256: str = ""  # set by write_sidecar

    def to_json(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["preprocessing"] = self.preprocessing.to_dict()
        return {"format_version": FORMAT_VERSION} | {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> "ModelCard":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        return cls(**d | {"preprocessing": Preprocessing.from_dict(d["preprocessing"]), "classes": tuple(d["classes"]),
                          "outputs": tuple(d["outputs"]), "explain_methods": tuple(d["explain_methods"])})


class SidecarError(BriscError):
    """A model that must not be used: the message names the file and what to do."""


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(f"{model_path}.json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_sidecar(model_path: str | os.PathLike, card: ModelCard) -> Path:
    """Records the model file's name and sha256 in the card, then writes it atomically beside the model."""
    path = sidecar_path(model_path)
    card = replace(card, model_file=Path(model_path).name, model_sha256=sha256_file(model_path))
    write_json_atomic(path, card.to_json())
    return path


def read_sidecar(model_path: str | os.PathLike, *, verify: bool = True) -> ModelCard:
    """Read and check the card of ``model_path``: present, same format, same preprocessing, same bytes."""
    path = sidecar_path(model_path)
    if not Path(model_path).is_file():
        raise SidecarError(f"{model_path}: model file not found")
    if not path.is_file():
        raise SidecarError(f"{model_path}: no sidecar {path.name} beside it; export the model with brisc-export")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SidecarError(f"{path}: unreadable sidecar ({e})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version") if isinstance(meta, dict) else None
        raise SidecarError(f"{path}: sidecar format {got} is not {FORMAT_VERSION}; re-export the model with this brisc")
    pv = (meta.get("preprocessing") or {}).get("version")
    if pv != PREPROCESSING_VERSION:
        raise SidecarError(f"{model_path}: made for preprocessing version {pv}, this brisc uses "
                           f"{PREPROCESSING_VERSION}; re-export it with this version of brisc")
    try:
        card = ModelCard.from_json(meta)
    except (KeyError, TypeError, ValueError) as e:
        raise SidecarError(f"{path}: incomplete sidecar ({type(e).__name__}: {e}); re-export the model") from None
    if verify and sha256_file(model_path) != card.model_sha256:
        raise SidecarError(f"{model_path}: sha256 does not match its sidecar (truncated, tampered with or "
                           "replaced); re-export the model")
    return card
