"""Tumour masks that look wrong: small pure numpy checks, and the findings of one mask (``scripts/mask_audit.py``).

A finding is a reason for a person to look, never a verdict: a mask is flagged when it is empty, speckled (many
pieces, or no dominant one), mostly outside the head, or far from where a confident, correct, guided model looks.
"""

from __future__ import annotations

from collections import deque

import numpy as np

HEAD_MIN = 20  # grey level (of 255) above which a pixel is head, not air: BRISC's background is 0-10
SPECKLED_PIECES = 4  # this many separate pieces of at least MIN_PIECE pixels...
MIN_PIECE = 20
DOMINANT_SHARE = 0.6  # ...or a largest piece holding less than this share of the mask
OUTSIDE_SHARE = 0.5  # more than this share of the mask on air
CONFIDENT = 0.95  # "the model looks elsewhere" only counts for a correct prediction at least this sure
FAR_PX = 15.0  # the pointing game's tolerance, in pixels of the mask


def pieces(mask: np.ndarray) -> list[int]:
    """Sizes of the 8-connected pieces of a boolean mask, largest first (a breadth-first fill over mask pixels
    only, which are ~2% of a BRISC scan)."""
    mask = np.asarray(mask, bool)
    seen = np.zeros_like(mask)
    h, w = mask.shape
    sizes = []
    for y0, x0 in zip(*np.nonzero(mask)):
        if seen[y0, x0]:
            continue
        seen[y0, x0] = True
        queue, n = deque([(y0, x0)]), 0
        while queue:
            y, x = queue.popleft()
            n += 1
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    v, u = y + dy, x + dx
                    if 0 <= v < h and 0 <= u < w and mask[v, u] and not seen[v, u]:
                        seen[v, u] = True
                        queue.append((v, u))
        sizes.append(n)
    return sorted(sizes, reverse=True)


def head_region(grey: np.ndarray, level: int = HEAD_MIN) -> np.ndarray:
    """The head as a filled silhouette: pixels between the first and last bright pixel of both their row and their
    column (so a dark necrotic core or ventricle inside the head counts as head)."""
    bright = np.asarray(grey) > level
    idx_x, idx_y = np.arange(bright.shape[1]), np.arange(bright.shape[0])[:, None]
    r_any, c_any = bright.any(1), bright.any(0)
    first_x = np.where(r_any, bright.argmax(1), bright.shape[1])
    last_x = np.where(r_any, bright.shape[1] - 1 - bright[:, ::-1].argmax(1), -1)
    rows = (idx_x[None, :] >= first_x[:, None]) & (idx_x[None, :] <= last_x[:, None])
    first_y = np.where(c_any, bright.argmax(0), bright.shape[0])
    last_y = np.where(c_any, bright.shape[0] - 1 - bright[::-1, :].argmax(0), -1)
    cols = (idx_y >= first_y[None, :]) & (idx_y <= last_y[None, :])
    return rows & cols


def peak_distance(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """Pixels from the map's maximum to the nearest mask pixel (0 inside); both at the mask's resolution."""
    ys, xs = np.nonzero(np.asarray(mask, bool))
    if not len(ys):
        return None
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return float(np.sqrt(((ys - y) ** 2 + (xs - x) ** 2).min()))


def findings(mask: np.ndarray, grey: np.ndarray, *, heatmap: np.ndarray | None = None, correct: bool = False,
             probability: float = 0.0) -> dict:
    """-> {"flags": [...], and the measurements behind them}. ``grey``: the scan, uint8 at the mask's size;
    ``heatmap``: the model's map at the mask's size (None: not judged)."""
    mask = np.asarray(mask, bool)
    out: dict = {"area": float(mask.mean()), "flags": []}
    if not mask.any():
        out["flags"].append("empty")
        return out
    sizes = pieces(mask)
    out["pieces"] = sum(s >= MIN_PIECE for s in sizes)
    out["largest_share"] = sizes[0] / mask.sum()
    if out["pieces"] >= SPECKLED_PIECES or out["largest_share"] < DOMINANT_SHARE:
        out["flags"].append("speckled")
    out["outside_head"] = float((mask & ~head_region(grey)).sum() / mask.sum())
    if out["outside_head"] > OUTSIDE_SHARE:
        out["flags"].append("outside the head")
    if heatmap is not None:
        out["peak_distance"] = peak_distance(heatmap, mask)
        if correct and probability >= CONFIDENT and out["peak_distance"] > FAR_PX:
            out["flags"].append("far from where the model looks")
    return out
