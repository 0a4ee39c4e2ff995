"""Explanation maps as plain numpy: rollout (the reference for the in-graph version), resizing, scaling.

Torch-free: inference and metrics use these, and tests check the exported graphs against them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def minmax(x: np.ndarray, axes: tuple[int, ...] = (-2, -1), eps: float = 1e-12) -> np.ndarray:
    """Scale each map to [0, 1] over ``axes``."""
    x = np.asarray(x, np.float64)
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    return (x - lo) / np.maximum(hi - lo, eps)


def rollout(attentions: np.ndarray, *, head_fusion: str = "mean", start_layer: int = 0) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) from full attention [B, L, H, N, N] (token 0 = [CLS]).

    Heads fused (mean or max), identity added for the residual path, rows renormalised (divide by
    the row sum, not the column sum as jacobgil/vit-explain does), product over layers, then the
    [CLS] row without [CLS], reshaped to a square grid and scaled to [0, 1] per image.
    """
    a = np.asarray(attentions, np.float64)[:, start_layer:]
    a = a.mean(2) if head_fusion == "mean" else a.max(2)  # [B, L, N, N]
    n = a.shape[-1]
    a = a + np.eye(n)
    a = a / a.sum(-1, keepdims=True)
    r = a[:, 0]
    for layer in range(1, a.shape[1]):
        r = a[:, layer] @ r  # later layers mix the already-mixed tokens
    cls = r[:, 0, 1:]  # [B, N-1]
    g = int(round(np.sqrt(n - 1)))
    return minmax(cls.reshape(-1, g, g))


def resize_map(m: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one 2-D map to (H, W) (Pillow 'F' mode, so it stays float)."""
    h, w = size_hw
    img = Image.fromarray(np.asarray(m, np.float32), "F")
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), np.float32)
