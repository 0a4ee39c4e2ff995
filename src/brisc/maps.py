"""Explanation maps as plain numpy: rollout (the reference for the in-graph version), resizing, scaling.

Torch-free: inference and metrics use these, and tests check the exported graphs against them.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


# Rollout maps whose spread is under 5% of their peak are nearly flat (typical of an untrained ViT):
# they are scaled by 5% of the peak instead of their spread, so rounding noise is never stretched
# into a full-contrast "explanation" (and exported graphs stay within 1e-5 of PyTorch).
FLAT_SPREAD = 0.05


def minmax(x: np.ndarray, axes: tuple[int, ...] = (-2, -1), eps: float = 1e-12, flat: float = 0.0) -> np.ndarray:
    """Scale each map into [0, 1] over ``axes``: (x - min) / max(max - min, flat * max, eps)."""
    x = np.asarray(x, np.float64)
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    return (x - lo) / np.maximum(np.maximum(hi - lo, flat * np.abs(hi)), eps)


def rollout(attentions: np.ndarray, *, head_fusion: str = "mean", start_layer: int = 0, prefix: int = 1) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020) from full attention [B, L, H, N, N] (token 0 = [CLS], then
    ``prefix - 1`` registers, then the patches).

    Heads fused (mean or max), identity added for the residual path, rows renormalised (divide by
    the row sum, not the column sum as jacobgil/vit-explain does), product over layers, then the
    [CLS] row without [CLS], reshaped to a square grid and scaled into [0, 1] per image (``FLAT_SPREAD``).
    """
    a = np.asarray(attentions, np.float64)[:, start_layer:]
    a = a.mean(2) if head_fusion == "mean" else a.max(2)  # [B, L, N, N]
    n = a.shape[-1]
    a = a + np.eye(n)
    a = a / a.sum(-1, keepdims=True)
    r = a[:, 0]
    for layer in range(1, a.shape[1]):
        r = a[:, layer] @ r  # later layers mix the already-mixed tokens
    cls = r[:, 0, prefix:]  # [B, patches]
    g = int(round(np.sqrt(n - prefix)))
    return minmax(cls.reshape(-1, g, g), flat=FLAT_SPREAD)


def cls_map(cls_rows: np.ndarray, *, layer: int = -1, head_fusion: str = "mean", head: int = -1) -> np.ndarray:
    """[CLS] attention to the patches, [B, L, H, N-1] (the exported ``attentions``) -> one layer's map,
    heads fused (or one ``head``, 0-based), as [B, g, g] scaled into [0, 1] like rollout. Mirrors the export's
    ``cls_map_torch``."""
    rows = np.asarray(cls_rows, np.float64)[:, layer]  # [B, H, N-1]
    fused = rows[:, head] if head >= 0 else rows.mean(1) if head_fusion == "mean" else rows.max(1)
    g = int(round(np.sqrt(fused.shape[-1])))
    return minmax(fused.reshape(-1, g, g), flat=FLAT_SPREAD)


def resize_map(m: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of one 2-D map to (H, W) (Pillow 'F' mode, so it stays float)."""
    h, w = size_hw
    img = Image.fromarray(np.asarray(m, np.float32), "F")
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), np.float32)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over the (2r+1)^2 window around each pixel (the window shrinks at the borders), by running sums."""
    def rows(a: np.ndarray) -> np.ndarray:  # window sums down axis 0
        c = np.cumsum(np.pad(a, ((r + 1, r), (0, 0))), axis=0)
        return c[2 * r + 1:] - c[:-2 * r - 1]

    h, w = x.shape
    counts = rows(np.ones((h, 1))) * rows(np.ones((w, 1))).T
    return rows(rows(x).T).T / counts


def guided_upsample(m: np.ndarray, guide: np.ndarray, *, radius: int = 8, power: float = 2.0) -> np.ndarray:
    """A [g, g] map brought to the scan's (H, W) with the scan deciding where inside each region its mass goes:
    the bilinear map times (brightness / the mean brightness within ``radius``) ** ``power``, scaled into [0, 1].
    Each neighbourhood keeps about the share the model gave it; within it, brighter pixels (on a contrast T1:
    enhancement) take more. ``power`` 0 is the bilinear map. A 14x14 map, however right, spreads a patch's
    weight over the whole 16x16 patch; this is one way past that. It is an assumption about the scan, not the
    model's: for display and study, never the model's own map."""
    g = np.asarray(guide, np.float64)
    g = g / 255.0 if g.max() > 1 else g
    g = g + 0.05  # black background: no division by zero, and no weight from nothing
    q = resize_map(m, g.shape).astype(np.float64) * (g / _box(g, radius)) ** power
    return (q / q.max() if q.max() > 0 else q).astype(np.float32)


def stem_refine(m: np.ndarray, activation: np.ndarray, *, power: float = 2.0) -> np.ndarray:
    """A [g, g] map on the finer [k*g, k*g] grid of the model's own conv-stem activation (mean over channels, >= 0):
    each patch keeps the mean the map gave it, and within it the k x k cells share that in proportion to
    activation ** ``power`` (0: the patch's value in every cell), scaled into [0, 1] by the peak. Unlike
    ``guided_upsample`` the guide is the model's first features, not the scan's brightness."""
    m, a = np.asarray(m, np.float64), np.asarray(activation, np.float64)
    g, k = m.shape[-1], a.shape[-1] // m.shape[-1]
    if a.shape[-1] != k * g or a.shape[-2] != k * m.shape[-2] or k < 1:
        raise ValueError(f"activation {a.shape} is not a whole multiple of the map's {m.shape} grid")
    w = (a + 1e-6) ** power  # a cell of no activation gets a share only where its whole patch has none
    block = w.reshape(*w.shape[:-2], g, k, g, k).mean((-3, -1))  # [g, g]
    q = np.repeat(np.repeat(m / block, k, -2), k, -1) * w
    return (q / q.max() if q.max() > 0 else q).astype(np.float32)


def shift_scans(x: np.ndarray, dy: int, dx: int, fill: float = -1.0) -> np.ndarray:
    """[B, C, H, W] preprocessed scans moved ``dy`` rows down and ``dx`` columns right (negative: up, left), the gap
    ``fill`` (-1 is black after brisc's normalisation): the view ``stitch_shifted`` takes back."""
    def span(d: int, n: int) -> tuple[slice, slice]:  # (where it lands, where it comes from)
        return (slice(d, n), slice(0, n - d)) if d >= 0 else (slice(0, n + d), slice(-d, n))

    (ty, sy), (tx, sx) = span(dy, x.shape[-2]), span(dx, x.shape[-1])
    out = np.full_like(x, fill)
    out[..., ty, tx] = x[..., sy, sx]
    return out


def stitch_shifted(maps: np.ndarray, shifts: list[tuple[int, int]], patch: int = 16) -> np.ndarray:
    """The model's [g, g] maps of shifted views (``shift_scans``), each spread over its patches' pixels and moved back
    into the scan's frame, averaged -> [g*patch, g*patch] in [0, 1]. Views shifted by half a patch put each patch's
    boundaries elsewhere, so their mean resolves the map to the cells that every view's peak patch covers: a finer
    map that is still only the model's own, at one forward pass a view."""
    maps = np.asarray(maps, np.float64)
    acc = np.zeros((maps.shape[-2] * patch, maps.shape[-1] * patch))
    for m, (dy, dx) in zip(maps, shifts):
        acc += shift_scans(np.repeat(np.repeat(m, patch, 0), patch, 1), -dy, -dx, fill=0.0)  # the view's frame, back
    return minmax(acc / len(shifts)).astype(np.float32)
