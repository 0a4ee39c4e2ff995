"""Training batches augmented as whole tensors on the training device: the loader that keeps a GPU busy.

The PIL path (``ScanDataset`` + ``DataLoader``) augments one image at a time on the CPU; on a GPU it starved the
model (1467 img/s against 4026 for the training step alone: docs/archive/results-2026-11.md). Here the decoded images
(and tumour masks) are stacked once as uint8 tensors on the device (~150 KB an image, ~50 KB a mask) and every batch is
flipped, rotated/zoomed/shifted (one ``affine_grid`` + ``grid_sample`` for image and mask alike), jittered and
normalised in a few batched operations. No worker processes, nothing re-forked per epoch.

Every draw comes from one generator seeded by the epoch's seed, so an epoch is the same after a resume. The
augmentation has the PIL path's strengths (``AugmentConfig``); its pixels are not bit-equal to torchvision's.
Select it with ``--set vit.loader=tensor`` (the ``gpu`` preset does).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from brisc.imageio import Preprocessing
from brisc.train.dataset import AugmentConfig, ScanDataset


class TensorBatches:
    def __init__(self, ds: ScanDataset, aug: AugmentConfig, prep: Preprocessing, *, device: torch.device,
                 batch_size: int, rank: int = 0, world_size: int = 1):
        kept = [(i, item) for i, item in enumerate(ds.decoded()) if item is not None]  # undecodable files are skipped
        s = prep.size
        self.images = torch.from_numpy(np.stack([np.asarray(img.convert("RGB")) for _, (img, _) in kept])
                                       ).permute(0, 3, 1, 2).contiguous().to(device)  # [N, 3, S, S] uint8
        self.masks = None
        if ds.mask_grid:
            blank = np.zeros((s, s), np.uint8)
            self.masks = torch.from_numpy(np.stack([np.asarray(m) if m is not None else blank for _, (_, m) in kept])
                                          )[:, None].contiguous().to(device)  # [N, 1, S, S] uint8, 255 inside
        self.labels = torch.tensor([ds.samples[i].label for i, _ in kept], device=device)
        self.aug, self.device, self.batch_size, self.grid = aug, device, batch_size, ds.mask_grid
        self.rank, self.world_size = rank, world_size
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def epoch(self, seed: int) -> "EpochBatches":
        return EpochBatches(self, seed)

    def augment(self, x: torch.Tensor, m: torch.Tensor | None, g: torch.Generator):
        """x [B, 3, S, S] in [0, 1], m [B, 1, S, S] in [0, 1] or None -> both through the same flip and affine,
        x through brightness/contrast jitter."""
        a, B = self.aug, x.shape[0]

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(B, generator=g, device=x.device)

        flip = torch.rand(B, generator=g, device=x.device) < a.hflip
        sign = 1.0 - 2.0 * flip.float()  # -1 mirrors x
        angle = uniform(-a.rotation, a.rotation) * (math.pi / 180)
        scale = uniform(*a.scale)
        shift = [uniform(-2 * a.translate, 2 * a.translate) for _ in range(2)]  # in [-1, 1] grid units
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # Output pixel -> input pixel: mirror, then the inverse rotation and zoom, then the shift.
        theta = torch.stack([torch.stack([cos * sign, -sin, -shift[0]], 1),
                             torch.stack([sin * sign, cos, -shift[1]], 1)], 1)  # [B, 2, 3]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if m is not None:
            m = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if a.brightness:
            x = x * uniform(1 - a.brightness, 1 + a.brightness).view(B, 1, 1, 1)
        if a.contrast:
            grey = x.mean((1, 2, 3), keepdim=True)
            x = (x - grey) * uniform(1 - a.contrast, 1 + a.contrast).view(B, 1, 1, 1) + grey
        return x.clamp(0, 1), m


class EpochBatches:
    """One epoch of (pixel_values, labels[, pooled masks]) batches; ``len`` is the number of batches."""

    def __init__(self, src: TensorBatches, seed: int):
        self.src, self.seed = src, seed
        n = len(src) // src.world_size
        self.n_batches = max(1, n // src.batch_size)  # full batches only, as the DataLoader path; at least one

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        s = self.src
        g = torch.Generator(device=s.device).manual_seed(self.seed)
        order = torch.randperm(len(s), generator=g, device=s.device)[s.rank::s.world_size]
        for b in range(self.n_batches):
            idx = order[b * s.batch_size:(b + 1) * s.batch_size]
            x = s.images[idx].float() / 255
            m = s.masks[idx].float() / 255 if s.masks is not None else None
            x, m = s.augment(x, m, g)
            x = (x - s.mean) / s.std
            if m is None:
                yield x, s.labels[idx]
            else:
                yield x, s.labels[idx], F.avg_pool2d(m, x.shape[-1] // s.grid).flatten(1)  # [B, g*g] shares
