"""Torch datasets over the shared loader: the eval transform is the loader itself, plus augmentation for training."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset
from PIL import Image
from torchvision import transforms as T

from brisc.data import Sample
from brisc.imageio import DEFAULT, ImageLoadError, Preprocessing, decode_resized


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    """The seed's augmentation (flip, colour jitter, rotation), with strengths to tune."""

    hflip: float = 0.5
    rotation: float = 10.0  # degrees; scans are roughly aligned, small rotations only
    brightness: float = 0.2
    contrast: float = 0.2
    scale: tuple[float, float] = (1.0, 1.0)  # RandomAffine zoom; (1, 1) keeps the seed's recipe
    translate: float = 0.0  # RandomAffine shift, as a fraction of the side


def eval_transform(prep: Preprocessing = DEFAULT) -> T.Compose:
    """PIL RGB (already decoded and resized by the shared loader) -> normalised tensor.

    Equal to ``brisc.imageio.to_array`` (tested to 1e-6): torchvision's ToTensor + Normalize."""
    return T.Compose([T.ToTensor(), T.Normalize(prep.mean, prep.std)])


def train_transform(aug: AugmentConfig, prep: Preprocessing = DEFAULT) -> T.Compose:
    ops = [T.RandomHorizontalFlip(aug.hflip)]
    if aug.rotation or aug.scale != (1.0, 1.0) or aug.translate:
        ops.append(T.RandomAffine(degrees=aug.rotation, scale=aug.scale,
                                  translate=(aug.translate, aug.translate) if aug.translate else None))
    if aug.brightness or aug.contrast:
        ops.append(T.ColorJitter(brightness=aug.brightness, contrast=aug.contrast))
    return T.Compose([*ops, eval_transform(prep)])


class ScanDataset(Dataset):
    """(pixel_values [3, S, S], label) per sample, decoded by the shared loader.

    ``cache=True`` decodes every file once, up front, on a thread pool, and keeps the resized
    224x224 images in memory (~150 KB each): epochs then cost augmentation and the model alone.
    A file that fails to decode is reported once (one line naming it) and replaced by the next
    sample, so one bad file cannot kill a long run."""

    def __init__(self, samples: list[Sample], transform, prep: Preprocessing = DEFAULT, *, cache: bool = False):
        if not samples:
            raise ValueError("ScanDataset needs at least one sample")
        self.samples, self.transform, self.prep = samples, transform, prep
        self._reported: set[str] = set()
        self._cache = None
        if cache:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                self._cache = list(pool.map(self._decode, samples))

    def _decode(self, s: Sample) -> Image.Image | None:
        try:
            return decode_resized(s.path, size=self.prep.size)
        except ImageLoadError as e:
            if s.path not in self._reported:
                self._reported.add(s.path)
                print(f"warning: skipped {e}", file=sys.stderr)
            return None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        n = len(self.samples)
        for k in range(n):
            j = (i + k) % n
            img = self._cache[j] if self._cache is not None else self._decode(self.samples[j])
            if img is not None:
                return self.transform(img), self.samples[j].label
        raise RuntimeError("no sample of the dataset could be decoded")
