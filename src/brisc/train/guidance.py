"""Mask-guided attention: an auxiliary loss that pulls the [CLS] attention toward the tumour mask.

For a training image with a tumour mask, the [CLS] row over the patches of each guided layer (mean over
heads, renormalised over the patches) is pulled toward the mask pooled to the patch grid, blurred and
mixed with a uniform floor so that the target is never zero outside the lesion:

    loss = mean over guided images and layers of KL(target || attention)

(LGM-ViT: KL between the spatially normalised [CLS] attention and the blurred mask; RobustViT, Chefer
et al. 2022). KL(target || attention) is mass-covering: it is large when attention misses part of the
lesion, which is what the pointing game and energy-in-mask measure. Images without a mask (no_tumor,
or a tumour whose mask is missing) add nothing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F


def excluded_masks(path: str) -> set[str]:
    """Image file names, one a line (``scripts/mask_audit.py``'s flagged.txt), whose masks guidance ignores: their
    images still train, as if they had no mask. A missing or empty list is an error, not silently nothing."""
    try:
        names = {line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()}
    except OSError as e:
        raise ValueError(f"cannot read the list of masks to leave out ({e.strerror or e})") from None
    if not names:
        raise ValueError(f"{path} names no image")
    return names


def without_masks(samples: list, names: set[str]) -> list:
    """``samples`` with the masks of the images named in ``names`` (by file name) dropped."""
    return [replace(s, mask=None) if s.mask and Path(s.path).name in names else s for s in samples]


def resolve_layers(layers: tuple[int, ...], depth: int) -> list[int]:
    """1-based layer numbers (as in ``--heatmap cls:layer=K``; -1 is the last) -> 0-based indices."""
    out = []
    for k in layers:
        i = depth + k if k < 0 else k - 1
        if not 0 <= i < depth:
            raise ValueError(f"guide layer {k} is outside the model's {depth} layers (1..{depth}, or -1 for the last)")
        out.append(i)
    return out


def gaussian_blur(grid_maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, g, g] -> [B, g, g] blurred with a Gaussian of ``sigma`` patches (zero padding: mass near the
    border is lost, which only lowers the target there). sigma 0 returns the input."""
    if sigma <= 0:
        return grid_maps
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=grid_maps.dtype, device=grid_maps.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = grid_maps[:, None]
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))
    return x[:, 0]


def mask_targets(mask_fractions: torch.Tensor, *, blur: float, floor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled masks [B, g*g] (the share of each patch inside the mask) -> (targets [B, g*g] that sum to 1,
    has_mask [B] bool). Rows without any mask get a uniform target and has_mask False."""
    B, n = mask_fractions.shape
    g = int(round(math.sqrt(n)))
    m = mask_fractions.float()
    has = m.sum(1) > 0
    m = gaussian_blur(m.view(B, g, g), blur).reshape(B, n)
    m = m / m.sum(1, keepdim=True).clamp_min(1e-12)
    uniform = torch.full_like(m, 1.0 / n)
    t = (1 - floor) * m + floor * uniform
    return torch.where(has[:, None], t, uniform), has


def cls_attention(attentions: tuple[torch.Tensor, ...], layers: list[int], prefix: int) -> torch.Tensor:
    """[CLS] attention over the patches, mean over heads, renormalised: [B, len(layers), N_patches]."""
    rows = torch.stack([attentions[i][:, :, 0, prefix:].float().mean(1) for i in layers], 1)  # [B, K, N]
    return rows / rows.sum(-1, keepdim=True).clamp_min(1e-12)


def guidance_loss(attentions: tuple[torch.Tensor, ...], mask_fractions: torch.Tensor, *, layers: list[int],
                  prefix: int = 1, blur: float = 1.0, floor: float = 0.05) -> torch.Tensor:
    """KL(target || attention), averaged over the guided layers and the images that have a mask; 0 without any."""
    targets, has = mask_targets(mask_fractions, blur=blur, floor=floor)
    if not bool(has.any()):
        return attentions[0].new_zeros((), dtype=torch.float32)
    att = cls_attention(attentions, layers, prefix)[has]  # [b, K, N]
    t = targets[has][:, None]  # [b, 1, N]
    kl = (t * (t.clamp_min(1e-12).log() - att.clamp_min(1e-12).log())).sum(-1)  # [b, K]
    return kl.mean()
