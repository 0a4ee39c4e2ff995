"""Honest figures for a checkpoint chosen on validation (pure numpy): select on one half, report on the other.

Picking the best of 40 epochs by validation macro-F1 and quoting that same validation figure flatters it (the
maximum of noisy scores). ``cross_selection`` splits validation into two halves by whole groups of look-alike
slices, chooses the epoch on each half and scores it on the other, and pools the two scored halves: every scan is
judged by an epoch chosen without it. That is the figure to quote for "the best epoch by validation".
"""

from __future__ import annotations

import numpy as np

from brisc.metrics import classification_metrics


def best_epoch(logits: np.ndarray, y: np.ndarray) -> int:
    """Index of the epoch with the highest macro-F1 on these scans (``logits`` [E, N, C]); the earliest of a tie,
    as the trainer keeps the first epoch that reaches a score. Epochs with no logits (NaN) are never chosen."""
    scores = [classification_metrics(e, y)["macro_f1"] if np.isfinite(e).all() else -np.inf for e in logits]
    return int(np.argmax(scores))


def cross_selection(logits: np.ndarray, y, half: np.ndarray | None) -> dict:
    """``logits`` [E, N, C] of every epoch on the N validation scans, ``y`` [N], ``half`` [N] bool (one of two
    disjoint halves) -> the epoch chosen on each half, and accuracy / macro-F1 of the pooled predictions where each
    half is predicted by the epoch chosen on the other; beside it the flattering figure (chosen and scored on all)
    and the last epoch's. With ``half`` None (validation that cannot be halved) nothing is held apart: the held-apart
    figures are None."""
    logits, y = np.asarray(logits, np.float64), np.asarray(y, int)
    if logits.ndim != 3 or logits.shape[1] != len(y) or (half is not None and len(half) != len(y)):
        raise ValueError(f"logits {logits.shape} do not match {len(y)} labels and a half mask of "
                         f"{len(y) if half is None else len(half)}")
    e_all = best_epoch(logits, y)
    best = classification_metrics(logits[e_all], y)
    last = classification_metrics(logits[-1], y)
    out = {"n": int(len(y)), "best_epoch": e_all + 1, "best_accuracy": best["accuracy"],
           "best_macro_f1": best["macro_f1"], "last_accuracy": last["accuracy"], "last_macro_f1": last["macro_f1"]}
    if half is None:
        return {"epochs_chosen": {}, "accuracy": None, "macro_f1": None, **out, "halves": [int(len(y)), 0]}
    half = np.asarray(half, bool)
    if half.all() or not half.any():
        raise ValueError("both halves need scans")
    pooled = np.empty(logits.shape[1:])
    chosen = {}
    for name, part in (("a", half), ("b", ~half)):
        e = best_epoch(logits[:, ~part], y[~part])  # chosen on the other half
        pooled[part] = logits[e, part]
        chosen[name] = e + 1
    m = classification_metrics(pooled, y)
    return {"epochs_chosen": chosen, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], **out,
            "halves": [int(half.sum()), int((~half).sum())]}


def group_halves(labels, groups, *, seed: int = 0) -> np.ndarray:
    """Half of each class's scans by whole look-alike groups (``brisc.grouping.group_split`` at 0.5): the two
    halves share no near-duplicate slice, so choosing on one says nothing about the other's look-alikes."""
    from brisc.grouping import group_split

    return np.asarray(group_split(list(labels), list(groups), 0.5, seed), bool)


def validation_halves(paths, labels) -> np.ndarray | None:
    """``group_halves`` of a validation split by its look-alike groups (``brisc.grouping.similarity_groups``); None
    when it cannot be halved (a class with one scan, or every group on one side)."""
    from brisc.grouping import similarity_groups

    from brisc import CLASSES

    labels = list(labels)
    if min(np.bincount(labels, minlength=len(CLASSES))) < 2:
        return None
    half = group_halves(labels, similarity_groups(list(paths), labels))
    return None if half.all() or not half.any() else half
