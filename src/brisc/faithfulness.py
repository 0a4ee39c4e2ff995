"""Is a map faithful to the model? Deletion and insertion curves (RISE, Petsiuk et al. 2018), numpy only.

Patches are removed (deletion) or revealed (insertion) in the order of the map, most important first,
and the probability of the class predicted on the intact image is recorded after each step. The area
under that curve (x from 0 to 1, trapezoids) summarises it:
- deletion AUC: lower is better (removing what the map points at should destroy the evidence fast);
- insertion AUC: higher is better (revealing it first should restore the evidence fast).
A map painted on the lesion without the model using the lesion scores no better than a random order.

Removed patches become black (-1 after normalisation, the MRI background); insertion starts from a
heavily blurred copy (each patch replaced by its mean), so that the start is not out of distribution.
Torch-free: ``predict`` is any function images [n, 3, S, S] -> probabilities [n, C] (an onnxruntime
session in brisc-infer, a PyTorch model in the explanation study).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

BLACK = -1.0  # a black pixel after the brisc normalisation (x / 255 - 0.5) / 0.5


def patch_order(maps: np.ndarray) -> np.ndarray:
    """[B, g, g] -> [B, g*g] patch indices, highest map value first (ties in index order)."""
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    return np.argsort(-flat, axis=1, kind="stable")


def patch_means(images: np.ndarray, grid: int) -> np.ndarray:
    """[B, C, S, S] -> each patch replaced by its mean (the insertion curve's starting image)."""
    B, C, S, _ = images.shape
    p = S // grid
    m = images.reshape(B, C, grid, p, grid, p).mean(axis=(3, 5), keepdims=True)
    return np.broadcast_to(m, (B, C, grid, p, grid, p)).reshape(B, C, S, S).astype(images.dtype)


def _patch_mask(order: np.ndarray, count: int, grid: int, size: int) -> np.ndarray:
    """[g*g] order, the first ``count`` patches -> bool [S, S] pixel mask."""
    keep = np.zeros(grid * grid, bool)
    keep[order[:count]] = True
    p = size // grid
    return np.repeat(np.repeat(keep.reshape(grid, grid), p, 0), p, 1)


def auc(curve: np.ndarray) -> np.ndarray:
    """Area under curves [..., K+1] sampled evenly on x in [0, 1]."""
    c = np.asarray(curve, np.float64)
    return (c[..., 1:] + c[..., :-1]).sum(-1) / (2 * (c.shape[-1] - 1))


def perturbation_curves(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, maps: np.ndarray,
                        *, steps: int = 14, classes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Deletion and insertion curves of each image under its map.

    images [B, 3, S, S] normalised; maps [B, g, g]; ``classes`` [B] the class to follow (default: the
    class predicted on the intact image). Returns {"deletion": [B, steps+1], "insertion": [B, steps+1],
    "classes": [B]}; one ``predict`` call per image of (2 * steps + 1) perturbed copies."""
    images = np.asarray(images, np.float32)
    B, _, S, _ = images.shape
    g = maps.shape[-1]
    n = g * g
    counts = np.round(np.linspace(0, n, steps + 1)).astype(int)
    orders = patch_order(maps)
    blurred = patch_means(images, g)
    deletion = np.zeros((B, steps + 1))
    insertion = np.zeros((B, steps + 1))
    out_classes = np.zeros(B, np.int64)
    for b in range(B):
        masks = np.stack([_patch_mask(orders[b], c, g, S) for c in counts])  # [K+1, S, S]
        deleted = np.where(masks[:, None], np.float32(BLACK), images[b][None])
        inserted = np.where(masks[:, None], images[b][None], blurred[b][None])
        # deleted[0] and inserted[-1] are both the intact image: predicted once.
        probs = predict(np.concatenate([deleted, inserted[:-1]]).astype(np.float32))  # [2K+1, C]
        c = int(probs[0].argmax()) if classes is None else int(classes[b])
        deletion[b] = probs[: steps + 1, c]
        insertion[b] = np.append(probs[steps + 1:, c], probs[0, c])
        out_classes[b] = c
    return {"deletion": deletion, "insertion": insertion, "classes": out_classes}


def summarise_curves(curves: dict[str, np.ndarray]) -> dict:
    """Mean deletion and insertion AUC over the images (None for none)."""
    n = len(curves["deletion"])
    if not n:
        return {"n": 0, "deletion_auc": None, "insertion_auc": None}
    return {"n": n, "deletion_auc": float(auc(curves["deletion"]).mean()),
            "insertion_auc": float(auc(curves["insertion"]).mean())}


def random_maps(n: int, grid: int, seed: int = 0) -> np.ndarray:
    """A seeded random order of the patches: the reference a faithful map must beat."""
    return np.random.default_rng(seed).random((n, grid, grid))


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation of each pair of maps [B, ...] (ties broken by index) -> [B]."""
    ra = np.argsort(np.argsort(np.asarray(a).reshape(len(a), -1), 1, kind="stable"), 1).astype(np.float64)
    rb = np.argsort(np.argsort(np.asarray(b).reshape(len(b), -1), 1, kind="stable"), 1).astype(np.float64)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    return (ra * rb).sum(1) / np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
