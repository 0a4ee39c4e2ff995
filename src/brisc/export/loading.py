"""Load trained models back from a run folder (no network: the HF architecture comes from config.json)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from brisc.errors import BriscError
from brisc.runfolder import CHECKPOINTS, RunFolder
from brisc.train import checkpoint as ckpt


class ExportInputError(BriscError):
    """Bad input to brisc-export: one line, exit 2."""


@dataclass
class TrainedModel:
    kind: str
    model: torch.nn.Module
    config: dict
    metrics: dict
    checkpoint: Path
    checkpoint_sha256: str


def load_trained(run: Path, kind: str, checkpoint: str = "best") -> TrainedModel:
    """``checkpoint`` (CHECKPOINTS): "last" also replaces the best epoch's temperature and validation metrics by the
    last epoch's, from the trainer's logits of that epoch (val_logits.npy)."""
    rf = RunFolder(run)
    if not rf.has_model(kind):
        have = rf.trained_kinds() if run.is_dir() else []
        raise ExportInputError(f"{run}: no trained '{kind}' model in this run (it has: {', '.join(have) or 'none'})")
    if checkpoint not in CHECKPOINTS:
        raise ExportInputError(f"checkpoint '{checkpoint}': choose one of {', '.join(CHECKPOINTS)}")
    try:
        config = rf.config(kind)
    except (OSError, ValueError) as e:
        raise ExportInputError(f"{rf.config_path(kind)}: unreadable or torn config ({e}); retrain or restore it") from None
    try:
        metrics = rf.metrics(kind)
    except (OSError, ValueError) as e:
        raise ExportInputError(f"{rf.metrics_path(kind)}: unreadable or torn metrics ({e})") from None
    weights = ckpt.weights_file(run, kind, checkpoint)
    for need in [weights] + ([rf.val_logits(kind)] if checkpoint == "last" else []):
        if not need.is_file():
            raise ExportInputError(f"{need}: missing, so the {checkpoint} epoch cannot be exported (a run from before "
                                   "brisc kept it, or one still in its first epoch)")
    if checkpoint == "last":
        config, metrics = last_epoch(rf, kind, config)
    try:
        model = ckpt.load_model(run, kind, checkpoint)
    except Exception as e:  # noqa: BLE001 - safetensors, torch and transformers each raise their own types
        raise ExportInputError(f"{weights}: cannot load the trained weights ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else 'truncated or of another model'})") from None
    return TrainedModel(kind=kind, model=model, config=config, metrics=metrics, checkpoint=weights,
                        checkpoint_sha256=ckpt.sha256_file(weights))


def last_epoch(rf: RunFolder, kind: str, config: dict) -> tuple[dict, dict]:
    """The run's ``config`` and metrics for its last epoch: temperature fitted and validation metrics measured on
    that epoch's validation logits, as the trainer does for the best epoch."""
    import numpy as np

    from brisc import CLASSES
    from brisc.data import label_from_path
    from brisc.metrics import classification_metrics, fit_temperature

    try:
        logits = np.load(rf.val_logits(kind))
        y = np.array([CLASSES.index(label_from_path(p)) for p in rf.val_paths()])
    except (OSError, ValueError) as e:
        raise ExportInputError(f"{rf.val_logits(kind)}: cannot read the last epoch's validation logits or the "
                               f"labels of {rf.split_path} ({e})") from None
    if logits.ndim != 3 or logits.shape[1] != len(y):
        raise ExportInputError(f"{rf.val_logits(kind)}: logits {logits.shape} do not match the {len(y)} validation "
                               f"scans of {rf.split_path}")
    t = fit_temperature(logits[-1], y)
    val = classification_metrics(logits[-1], y, t) | {"ece_uncalibrated": classification_metrics(logits[-1], y)["ece"]}
    epoch = int(logits.shape[0])
    return {**config, "temperature": t, "checkpoint": f"last (epoch {epoch})"}, {"val": val, "temperature": t,
                                                                                 "epoch": epoch}


def _spread(paths: list[str], n: int) -> list[str]:
    paths = [p for p in paths if Path(p).is_file()]
    return paths[:: max(1, len(paths) // n)][:n]


def check_images(run: Path, n: int = 8) -> list[str]:
    """Real images for the self-checks: validation images spread over the run's split.json."""
    rf = RunFolder(run)
    return _spread(rf.val_paths(), n) if rf.split_path.is_file() else []


def calibration_images(run: Path, n: int = 128) -> list[str]:
    """Training images spread over the classes (split.json lists them class by class) for INT8 calibration: the
    scales come from what the model was trained on, never from the validation images that judge it."""
    rf = RunFolder(run)
    return _spread(rf.train_paths(), n) if rf.split_path.is_file() else []
