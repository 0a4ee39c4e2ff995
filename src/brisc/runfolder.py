"""The run folder that brisc-train writes and every other tool reads (torch-free): one definition of its files.

    <run>/split.json               the split: seed, val_fraction, method, groups, train/val/test image paths
    <run>/<kind>/config.json       architecture, training recipe, preprocessing, run info, temperature
    <run>/<kind>/metrics.json      validation metrics of the best checkpoint ("complete": true when finished)
    <run>/<kind>/model.safetensors the best checkpoint (by validation macro-F1)
    <run>/<kind>/last.safetensors  the last epoch's weights, with state.pt the exact resume point
    <run>/<kind>/state.pt          optimizer, scheduler, history and recipe after the last epoch
    <run>/<kind>/val_logits.npy    [epochs, validation scans, classes] float32: every epoch's validation logits, in
                                   split.json's val order (brisc.selection scores the choice of epoch honestly)
    <run>/<kind>/val_logits_mirror.npy  the same of the scans' left-right mirrors (flip averaging, scored alike)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from brisc.kinds import MODEL_KINDS

SPLIT, CONFIG, METRICS = "split.json", "config.json", "metrics.json"
WEIGHTS, LAST, STATE = "model.safetensors", "last.safetensors", "state.pt"
VAL_LOGITS, VAL_LOGITS_MIRROR = "val_logits.npy", "val_logits_mirror.npy"

# Which of a run's weights to export. "last" chooses nothing on validation, so its validation figures are honest
# (choosing the best of 40 noisy epochs on the 501 scans it is scored on flatters it: brisc.selection).
CHECKPOINTS = {"best": "the epoch with the best validation macro-F1 (model.safetensors)",
               "last": "the last epoch's evaluated model (the weight average of an EMA run)"}


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def model_dir(self, kind: str) -> Path:
        return self.root / kind

    @property
    def split_path(self) -> Path:
        return self.root / SPLIT

    def split(self) -> dict:
        return json.loads(self.split_path.read_text())

    def train_paths(self) -> list[str]:
        """The training images (what the OOD statistics are fitted on)."""
        return list(self.split()["train"])

    def val_paths(self) -> list[str]:
        """The validation images, in the order the run evaluated them."""
        return list(self.split()["val"])

    def config_path(self, kind: str) -> Path:
        return self.root / kind / CONFIG

    def metrics_path(self, kind: str) -> Path:
        return self.root / kind / METRICS

    def weights(self, kind: str) -> Path:
        return self.root / kind / WEIGHTS

    def last(self, kind: str) -> Path:
        return self.root / kind / LAST

    def state(self, kind: str) -> Path:
        return self.root / kind / STATE

    def val_logits(self, kind: str, mirror: bool = False) -> Path:
        return self.root / kind / (VAL_LOGITS_MIRROR if mirror else VAL_LOGITS)

    def config(self, kind: str) -> dict:
        return json.loads(self.config_path(kind).read_text())

    def metrics(self, kind: str) -> dict:
        """{} before the first run of ``kind`` has finished."""
        p = self.metrics_path(kind)
        return json.loads(p.read_text()) if p.is_file() else {}

    def complete(self, kind: str) -> bool:
        return bool(self.metrics(kind).get("complete"))

    def has_model(self, kind: str) -> bool:
        return self.weights(kind).is_file() and self.config_path(kind).is_file()

    def trained_kinds(self) -> list[str]:
        return [k for k in MODEL_KINDS if self.has_model(k)]

    def started_kinds(self, kinds) -> list[str]:
        """Of ``kinds``, those with a resume point (a run of them has begun here)."""
        return [k for k in kinds if self.state(k).exists()]

    def data_root(self, kind: str) -> str:
        return self.config(kind)["data"]
