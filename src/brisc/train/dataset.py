"""Torch datasets over the shared loader: the eval transform is the loader itself, plus augmentation for training."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from brisc.data import Sample, load_mask
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


class TrainTransform:
    """The seed's augmentation: flip, affine (rotation, zoom, shift), colour jitter, then ``eval_transform``.

    ``paired`` sends a tumour mask through the same flip and affine as its image, from the same random
    draw (colour jitter touches the image only), so that mask guidance sees where the lesion went."""

    def __init__(self, aug: AugmentConfig, prep: Preprocessing = DEFAULT):
        self.hflip = aug.hflip
        self.affine = (T.RandomAffine(degrees=aug.rotation, scale=aug.scale,
                                      translate=(aug.translate, aug.translate) if aug.translate else None)
                       if aug.rotation or aug.scale != (1.0, 1.0) or aug.translate else None)
        self.jitter = T.ColorJitter(brightness=aug.brightness, contrast=aug.contrast) if aug.brightness or aug.contrast else None
        self.finish = eval_transform(prep)

    def paired(self, img: Image.Image, mask: Image.Image | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (pixel_values [3, S, S], mask [1, S, S] in [0, 1] or None)."""
        if torch.rand(1) < self.hflip:
            img = TF.hflip(img)
            mask = TF.hflip(mask) if mask is not None else None
        if self.affine is not None:
            a = self.affine
            params = a.get_params(a.degrees, a.translate, a.scale, a.shear, list(img.size))
            img = TF.affine(img, *params, interpolation=a.interpolation, fill=0)
            mask = TF.affine(mask, *params, interpolation=a.interpolation, fill=0) if mask is not None else None
        if self.jitter is not None:
            img = self.jitter(img)
        return self.finish(img), (TF.to_tensor(mask) if mask is not None else None)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return self.paired(img, None)[0]


def train_transform(aug: AugmentConfig, prep: Preprocessing = DEFAULT) -> TrainTransform:
    return TrainTransform(aug, prep)


def load_mask_resized(path: str, size: int) -> Image.Image:
    """A BRISC mask stretched to size x size like its image (``brisc.imageio.resize``): 'L', 0 or 255."""
    m = Image.fromarray(load_mask(path).astype(np.uint8) * 255, "L")
    return m if m.size == (size, size) else m.resize((size, size), Image.Resampling.NEAREST)


class ScanDataset(Dataset):
    """(pixel_values [3, S, S], label) per sample, decoded by the shared loader.

    ``cache=True`` decodes every file once, up front, on a thread pool, and keeps the resized
    224x224 images in memory (~150 KB each): epochs then cost augmentation and the model alone.
    A file that fails to decode is reported once (one line naming it) and replaced by the next
    sample, so one bad file cannot kill a long run.

    ``mask_grid=g`` (training with mask guidance, ``transform`` a ``TrainTransform``) adds a third item:
    the share of each of the g x g patches inside the augmented tumour mask, [g*g], zeros without a mask.
    Masks are cached with their images (~50 KB each)."""

    def __init__(self, samples: list[Sample], transform, prep: Preprocessing = DEFAULT, *, cache: bool = False,
                 mask_grid: int = 0):
        if not samples:
            raise ValueError("ScanDataset needs at least one sample")
        self.samples, self.transform, self.prep, self.mask_grid = samples, transform, prep, mask_grid
        self._reported: set[str] = set()
        self._cache = None
        if cache:
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
                self._cache = list(pool.map(self._decode, samples))

    def _decode(self, s: Sample) -> tuple[Image.Image, Image.Image | None] | None:
        try:
            img = decode_resized(s.path, size=self.prep.size)
        except ImageLoadError as e:
            self._report(s.path, f"skipped {e}")
            return None
        mask = None
        if self.mask_grid and s.mask:
            try:
                mask = load_mask_resized(s.mask, self.prep.size)
            except (OSError, ValueError) as e:  # a broken mask loses its guidance, not its image
                self._report(s.mask, f"{s.mask}: unreadable mask ({e}); its image trains without guidance")
        return img, mask

    def decoded(self) -> list[tuple[Image.Image, Image.Image | None] | None]:
        """The cached (image, mask) of every sample, None where it did not decode (``cache=True`` only)."""
        if self._cache is None:
            raise ValueError("this ScanDataset was built without cache=True: nothing is decoded up front")
        return self._cache

    def _report(self, path: str, message: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            print(f"warning: {message}", file=sys.stderr)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        n = len(self.samples)
        for k in range(n):
            j = (i + k) % n
            item = self._cache[j] if self._cache is not None else self._decode(self.samples[j])
            if item is None:
                continue
            img, mask = item
            label = self.samples[j].label
            if not self.mask_grid:
                return self.transform(img), label
            x, m = self.transform.paired(img, mask)
            g = self.mask_grid
            pooled = (F.avg_pool2d(m, self.prep.size // g).flatten() if m is not None else torch.zeros(g * g))
            return x, label, pooled
        raise RuntimeError("no sample of the dataset could be decoded")
