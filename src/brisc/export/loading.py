"""Load trained models back from a run folder (no network: the HF architecture comes from config.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from brisc.train import checkpoint as ckpt
from brisc.train.models import model_from_config


class ExportInputError(Exception):
    """Bad input to brisc-export: one line, exit 2."""


@dataclass
class TrainedModel:
    kind: str
    model: torch.nn.Module
    config: dict
    metrics: dict
    checkpoint: Path
    checkpoint_sha256: str


def load_trained(run: Path, kind: str) -> TrainedModel:
    d = run / kind
    weights = d / "model.safetensors"
    if not (d / "config.json").is_file() or not weights.is_file():
        have = sorted(p.name for p in run.iterdir() if (p / "model.safetensors").is_file()) if run.is_dir() else []
        raise ExportInputError(f"{run}: no trained '{kind}' model in this run (it has: {', '.join(have) or 'none'})")
    config = json.loads((d / "config.json").read_text())
    metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
    model = model_from_config(kind, config["model"])
    ckpt.load_weights(weights, model)
    return TrainedModel(kind=kind, model=model.eval(), config=config, metrics=metrics, checkpoint=weights,
                        checkpoint_sha256=ckpt.sha256_file(weights))


def trained_kinds(run: Path) -> list[str]:
    return [k for k in ("vit", "hf_vit", "sae") if (run / k / "model.safetensors").is_file()]


def check_images(run: Path, n: int = 8) -> list[str]:
    """Real images for the self-checks: the run's first validation images (split.json)."""
    split = run / "split.json"
    if split.is_file():
        paths = [p for p in json.loads(split.read_text())["val"] if Path(p).is_file()]
        if paths:
            return paths[:: max(1, len(paths) // n)][:n]
    return []
