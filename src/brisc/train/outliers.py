"""Procedural outliers for outlier exposure (Hendrycks et al. 2019, "Deep anomaly detection with outlier exposure").

Each training batch gets ``round(outliers x batch)`` images that are not scans, made on the fly on the training
device, and the loss pulls their prediction toward the uniform distribution (cross-entropy to uniform, weight
``outlier_weight``), so that an input with no evidence gets no confident class. Only images made here train: the
images that installed packages ship are kept for the evaluation (``brisc.ood_eval``), which uses other patterns.

Kinds (one drawn per outlier): noise (Gaussian, uniform, salt-and-pepper), blank and near-blank frames, linear
and radial gradients, gratings and checkerboards, smooth low-frequency noise, a batch scan with its 16x16 patches
shuffled, and a batch scan with most of its patches blacked out (the deletion test's end point). All in the
model's units (x/255 - 0.5) / 0.5, grey (the three channels equal) unless tinted. Randomness comes from torch's
global generator, which the trainer seeds per epoch, so a resumed run draws the same outliers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATCH = 16  # the ViTs' patch side: shuffles and deletions move whole tokens
KINDS = ("noise", "blank", "gradient", "grating", "smooth", "shuffled", "deleted")


def _u(n: int, lo: float, hi: float, device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=device)


def _coords(size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.linspace(-1.0, 1.0, size, device=device)
    return torch.meshgrid(t, t, indexing="ij")  # yy, xx [S, S]


def _noise(n: int, size: int, device) -> torch.Tensor:
    which = torch.randint(0, 3, (n, 1, 1), device=device)
    mean, std = _u(n, -0.8, 0.8, device).view(n, 1, 1), _u(n, 0.05, 0.8, device).view(n, 1, 1)
    gauss = mean + std * torch.randn(n, size, size, device=device)
    uniform = _u(n, -1.0, 0.0, device).view(n, 1, 1) + _u(n, 0.2, 2.0, device).view(n, 1, 1) * torch.rand(n, size, size, device=device)
    salt = torch.where(torch.rand(n, size, size, device=device) < _u(n, 0.01, 0.5, device).view(n, 1, 1), 1.0, -1.0)
    return torch.where(which == 0, gauss, torch.where(which == 1, uniform, salt))


def _blank(n: int, size: int, device) -> torch.Tensor:
    level = _u(n, -1.0, 1.0, device).view(n, 1, 1)
    jitter = torch.where(torch.rand(n, 1, 1, device=device) < 0.5, 0.0, _u(n, 0.0, 0.1, device).view(n, 1, 1))
    return level + jitter * torch.randn(n, size, size, device=device)


def _gradient(n: int, size: int, device) -> torch.Tensor:
    yy, xx = _coords(size, device)
    angle = _u(n, 0, 2 * math.pi, device).view(n, 1, 1)
    linear = (xx * torch.cos(angle) + yy * torch.sin(angle)) / math.sqrt(2)  # [-1, 1]
    cx, cy = _u(n, -0.7, 0.7, device).view(n, 1, 1), _u(n, -0.7, 0.7, device).view(n, 1, 1)
    radial = 1 - 2 * ((xx - cx) ** 2 + (yy - cy) ** 2).sqrt().clamp(max=1.0)
    g = torch.where(torch.rand(n, 1, 1, device=device) < 0.5, linear, radial)
    lo, span = _u(n, -1.0, 0.0, device).view(n, 1, 1), _u(n, 0.3, 2.0, device).view(n, 1, 1)
    return lo + span * (g + 1) / 2


def _grating(n: int, size: int, device) -> torch.Tensor:
    yy, xx = _coords(size, device)
    angle = _u(n, 0, math.pi, device).view(n, 1, 1)
    freq = _u(n, 1.0, 40.0, device).view(n, 1, 1)
    phase = _u(n, 0, 2 * math.pi, device).view(n, 1, 1)
    wave = torch.sin(math.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
    checker = torch.sign(torch.sin(math.pi * freq * xx + phase) * torch.sin(math.pi * freq * yy))
    return torch.where(torch.rand(n, 1, 1, device=device) < 0.6, wave, checker) * _u(n, 0.2, 1.0, device).view(n, 1, 1)


def _smooth(n: int, size: int, device) -> torch.Tensor:
    out = torch.empty(n, size, size, device=device)
    for i in range(n):  # a few per batch: the per-image coarse grid size is the point
        k = int(torch.randint(2, 17, ()))
        coarse = torch.randn(1, 1, k, k, device=device)
        out[i] = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0]
    out = out / out.flatten(1).abs().amax(1).clamp_min(1e-6).view(n, 1, 1)
    return (out * _u(n, 0.3, 1.0, device).view(n, 1, 1) + _u(n, -0.5, 0.5, device).view(n, 1, 1)).clamp(-1, 1)


def _patches(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    n, c, s, _ = x.shape
    g = s // PATCH
    return x.reshape(n, c, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c, PATCH, PATCH), g


def _unpatch(p: torch.Tensor, g: int) -> torch.Tensor:
    n, _, c, _, _ = p.shape
    return p.reshape(n, g, g, c, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5).reshape(n, c, g * PATCH, g * PATCH)


def shuffled(scans: torch.Tensor) -> torch.Tensor:
    """[n, 3, S, S] -> each scan's 16x16 patches in a random order (all its pixels, none of its anatomy)."""
    p, g = _patches(scans)
    order = torch.argsort(torch.rand(p.shape[0], p.shape[1], device=scans.device), dim=1)
    return _unpatch(p[torch.arange(p.shape[0], device=scans.device)[:, None], order], g)


def deleted(scans: torch.Tensor, low: float = 0.75) -> torch.Tensor:
    """[n, 3, S, S] -> each scan with a share in [low, 1] of its patches set to black (-1), as the deletion test does."""
    p, g = _patches(scans)
    share = _u(p.shape[0], low, 1.0, scans.device).view(-1, 1)
    drop = torch.rand(p.shape[0], p.shape[1], device=scans.device) < share
    return _unpatch(torch.where(drop[:, :, None, None, None], torch.full_like(p, -1.0), p), g)


def make_outliers(scans: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` procedural outliers [n, 3, S, S] like the batch ``scans`` [B, 3, S, S] (device, dtype, size); the
    shuffled and deleted kinds start from scans of the batch."""
    if n <= 0:
        return scans.new_zeros((0, *scans.shape[1:]))
    device, size = scans.device, scans.shape[-1]
    kind = torch.randint(0, len(KINDS), (n,))
    out = torch.empty(n, 3, size, size, device=device)
    for k, name in enumerate(KINDS):
        idx = (kind == k).nonzero().flatten()
        if not len(idx):
            continue
        m = len(idx)
        if name in ("shuffled", "deleted"):
            src = scans[torch.randint(0, len(scans), (m,))].float()
            out[idx.to(device)] = shuffled(src) if name == "shuffled" else deleted(src)
            continue
        grey = {"noise": _noise, "blank": _blank, "gradient": _gradient, "grating": _grating, "smooth": _smooth}[name](m, size, device)
        # A fifth of the generated ones get a colour tint: photographs and plots are not grey.
        tint = torch.where(torch.rand(m, 1, 1, device=device) < 0.2, _u(m * 3, 0.5, 1.5, device).view(m, 3, 1), torch.ones(m, 3, 1, device=device))
        out[idx.to(device)] = (grey[:, None] * tint[..., None]).clamp(-1.0, 1.0)
    return out.to(scans.dtype)


def count(batch: int, share: float) -> int:
    """Outliers added to a batch of ``batch`` scans (at least one whenever the share is positive)."""
    return max(1, round(batch * share)) if share > 0 else 0


def uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``logits`` [n, C] to the uniform distribution (its minimum, log C, at equal logits); 0 for none."""
    if not len(logits):
        return logits.new_zeros((), dtype=torch.float32)
    return -F.log_softmax(logits.float(), dim=1).mean(1).mean()
