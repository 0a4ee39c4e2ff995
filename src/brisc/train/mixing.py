"""CutMix on the patch grid (Yun et al. 2019), with the tumour masks carried along.

A box of whole 16x16 patches is cut from each image's partner (the batch shuffled) and pasted in; the label
becomes the two labels weighted by the share of patches each image keeps, and the pooled mask is cut and
pasted the same way, so mask guidance pulls attention toward the tumour that is actually in the mixed image.
Boxes on the patch grid keep every patch token from a single source image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

CUTMIX_PATCH = 16  # the ViTs' patch side (the SAE's 4x4 pooling divides it)


def patch_cutmix(x: torch.Tensor, masks: torch.Tensor | None, *, patch: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, float]:
    """x [B, C, H, W], masks [B, g*g] or None -> (mixed x, mixed masks, partner index [B], lam).

    lam ~ U(0, 1) sets the box area (1 - lam of the grid, rounded to whole patches); the returned lam is the
    share of patches each image keeps, the weight of its own label. One box for the whole batch. Without a
    generator, torch's global one (seeded per epoch by the trainer, so resume stays exact)."""
    B, _, H, W = x.shape
    gh, gw = H // patch, W // patch
    lam = float(torch.rand((), generator=generator))
    bh = int(round(gh * (1 - lam) ** 0.5))
    bw = int(round(gw * (1 - lam) ** 0.5))
    top = int(torch.randint(0, gh - bh + 1, (), generator=generator))
    left = int(torch.randint(0, gw - bw + 1, (), generator=generator))
    partner = torch.randperm(B, generator=generator).to(x.device)
    x = x.clone()
    rows, cols = slice(top * patch, (top + bh) * patch), slice(left * patch, (left + bw) * patch)
    x[:, :, rows, cols] = x[partner][:, :, rows, cols]
    if masks is not None:
        m = masks.view(B, gh, gw).clone()
        m[:, top:top + bh, left:left + bw] = m[partner][:, top:top + bh, left:left + bw]
        masks = m.view(B, gh * gw)
    return x, masks, partner, 1.0 - bh * bw / (gh * gw)


def mixed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, partner: torch.Tensor | None, lam: float,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """lam x CE(own label) + (1 - lam) x CE(partner's label); plain CE without a partner."""
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if partner is None:
        return loss
    return lam * loss + (1 - lam) * F.cross_entropy(logits, y[partner], label_smoothing=label_smoothing)
