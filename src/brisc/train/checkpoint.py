"""Run-folder I/O: safetensors weights, JSON, and optimizer state loadable with weights_only=True.

Every file is written under a temporary name and renamed, so a kill never leaves a half-written file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from brisc.fsio import atomic_path, write_json_atomic as write_json  # noqa: F401 - ckpt.write_json
from brisc.sidecar import sha256_file  # noqa: F401 - re-exported for the run folder's users


def save_weights(path: Path, model: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_weights(path: Path, model: torch.nn.Module) -> None:
    model.load_state_dict(load_file(str(path)))


def save_state(path: Path, state: dict) -> None:
    """Optimizer/scheduler/progress: tensors and plain types only, so ``torch.load(weights_only=True)`` reads it."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)

