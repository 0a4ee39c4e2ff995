"""Weights & Biases tracking, offline by default. wandb is imported only when tracking is on.

``Tracker`` is the no-op used for ``--wandb disabled`` and on non-zero ranks, so the training code
never branches on whether tracking is on.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


class Tracker:
    """No-op tracker."""

    run_dirs: list[str] = []

    def start(self, name: str, config: dict) -> None: ...
    def log(self, metrics: dict, step: int | None = None) -> None: ...
    def log_images(self, key: str, images: list[tuple[np.ndarray, str]]) -> None: ...
    def log_confusion(self, key: str, y_true, y_pred, class_names) -> None: ...
    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None: ...
    def summary(self, metrics: dict) -> None: ...
    def finish(self) -> None: ...

    def sync_hint(self) -> str | None:
        return None


class WandbTracker(Tracker):
    """One group per invocation, one run per model (and a last run for the comparison table)."""

    def __init__(self, *, mode: str, out_dir: Path, group: str, project: str = "brisc"):
        import wandb  # lazy: slow to import, and not needed with --wandb disabled

        self.wandb, self.mode, self.dir, self.group, self.project = wandb, mode, Path(out_dir), group, project
        self.run = None
        self.run_dirs = []
        self.dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, config: dict) -> None:
        self.finish()
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = self.wandb.init(project=self.project, group=self.group, name=name, job_type="train",
                                   config=config, mode=self.mode, dir=str(self.dir), reinit="finish_previous")
        self.run_dirs.append(str(Path(self.run.dir).parent))

    def log(self, metrics: dict, step: int | None = None) -> None:
        self.run.log(metrics, step=step)

    def log_images(self, key: str, images: list[tuple[np.ndarray, str]]) -> None:
        self.run.log({key: [self.wandb.Image(img, caption=cap) for img, cap in images]})

    def log_confusion(self, key: str, y_true, y_pred, class_names) -> None:
        self.run.log({key: self.wandb.plot.confusion_matrix(
            y_true=list(map(int, y_true)), preds=list(map(int, y_pred)), class_names=list(class_names))})

    def log_table(self, key: str, columns: list[str], rows: list[list]) -> None:
        self.run.log({key: self.wandb.Table(columns=columns, data=rows)})

    def summary(self, metrics: dict) -> None:
        for k, v in metrics.items():
            self.run.summary[k] = v

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    def sync_hint(self) -> str | None:
        if self.mode != "offline" or not self.run_dirs:
            return None
        return "wandb sync " + " ".join(self.run_dirs)


def make_tracker(mode: str, *, out_dir: Path, group: str, is_main: bool = True) -> Tracker:
    if mode == "disabled" or not is_main:
        return Tracker()
    return WandbTracker(mode=mode, out_dir=out_dir, group=group)
