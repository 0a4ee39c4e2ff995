"""Run-folder I/O: safetensors weights, JSON, and optimizer state loadable with weights_only=True.

Every file is written under a temporary name and renamed, so a kill never leaves a half-written file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from brisc.fsio import atomic_path, write_json_atomic as write_json  # noqa: F401 - ckpt.write_json
from brisc.runfolder import RunFolder
from brisc.sidecar import sha256_file  # noqa: F401 - re-exported for the run folder's users
from brisc.train.models import model_from_config


def save_weights(path: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_weights(path: Path, model: torch.nn.Module) -> None:
    model.load_state_dict(load_file(str(path)))


def weights_file(run: Path, kind: str, checkpoint: str = "best") -> Path:
    """Where a run's ``checkpoint`` ("best" or "last") of ``kind`` lies: the last epoch's evaluated model is the
    weight average of an EMA run, which only state.pt holds, else last.safetensors."""
    rf = RunFolder(run)
    if checkpoint == "best":
        return rf.weights(kind)
    return rf.state(kind) if rf.config(kind).get("train", {}).get("ema", 0) > 0 else rf.last(kind)


def load_model(run: Path, kind: str, checkpoint: str = "best") -> torch.nn.Module:
    """A run's trained ``kind`` (``weights_file``): the architecture rebuilt from its config.json (no network), in
    eval mode. The caller checks ``RunFolder(run).has_model(kind)`` first, to word its own error."""
    rf = RunFolder(run)
    model = model_from_config(kind, rf.config(kind)["model"])
    path = weights_file(run, kind, checkpoint)
    if path.suffix == ".pt":
        model.load_state_dict(load_state(path)["ema"]["weights"])
    else:
        load_weights(path, model)
    return model.eval()


def save_state(path: Path, state: dict) -> None:
    """Optimizer/scheduler/progress: tensors and plain types only, so ``torch.load(weights_only=True)`` reads it."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)

