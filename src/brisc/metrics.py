"""Classification, calibration and explanation metrics (numpy only; same code for train and infer)."""

from __future__ import annotations

import numpy as np

from brisc import CLASSES


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def confusion_matrix(y_true, y_pred, n_classes: int = len(CLASSES)) -> np.ndarray:
    """[true, predicted] counts."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Binary ROC-AUC by the rank (Mann-Whitney) statistic, ties averaged; NaN if one class is absent."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(probs: np.ndarray, y_true, n_bins: int = 15) -> float:
    """ECE over equal-width confidence bins of the top-1 probability."""
    probs = np.asarray(probs, np.float64)
    conf, pred = probs.max(1), probs.argmax(1)
    correct = pred == np.asarray(y_true)
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def nll(probs: np.ndarray, y_true) -> float:
    p = np.asarray(probs, np.float64)[np.arange(len(y_true)), np.asarray(y_true)]
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_temperature(logits: np.ndarray, y_true, lo: float = 0.05, hi: float = 20.0) -> float:
    """Temperature minimising the NLL (golden-section search on log T; NLL is unimodal in T)."""
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        return 1.0
    f = lambda log_t: nll(softmax(logits, float(np.exp(log_t))), y_true)  # noqa: E731
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(60):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = f(d)
    return float(np.exp((a + b) / 2))


def stratified_halves(y_true, *, seed: int = 0) -> np.ndarray:
    """A boolean mask picking half of each class's images (seeded)."""
    y_true = np.asarray(y_true)
    rng = np.random.default_rng(seed)
    half = np.zeros(len(y_true), bool)
    for c in np.unique(y_true):
        idx = rng.permutation(np.flatnonzero(y_true == c))
        half[idx[: len(idx) // 2]] = True
    return half


def cross_fitted_ece(logits: np.ndarray, y_true, *, seed: int = 0) -> float:
    """ECE after temperature scaling, with the temperature fitted on one half of the images and the ECE measured
    on the other (both ways, averaged): an honest figure where fitting and reporting on the same split flatters.
    Halves are stratified by class and seeded."""
    y_true = np.asarray(y_true)
    half = stratified_halves(y_true, seed=seed)
    eces = []
    for fit_on in (half, ~half):
        if fit_on.sum() == 0 or (~fit_on).sum() == 0:
            continue
        t = fit_temperature(logits[fit_on], y_true[fit_on])
        eces.append(expected_calibration_error(softmax(logits[~fit_on], t), y_true[~fit_on]))
    return float(np.mean(eces)) if eces else float("nan")


def ece_sampling_floor(probs: np.ndarray, n_bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these confidences scores on this many images: the mean ECE
    of labels drawn from ``probs`` themselves. ECE is biased upward on small sets (each bin's accuracy is a
    noisy estimate), so an ECE near this floor is as calibrated as the set can show."""
    probs = np.asarray(probs, np.float64)
    rng = np.random.default_rng(seed)
    cum = np.cumsum(probs, 1)
    eces = []
    for _ in range(draws):
        y = np.minimum((rng.random((len(probs), 1)) > cum).sum(1), probs.shape[1] - 1)
        eces.append(expected_calibration_error(probs, y, n_bins))
    return float(np.mean(eces))


def ece_floors(probs: np.ndarray, y_true) -> dict:
    """``ece_sampling_floor`` at the sizes the ECE figures are measured on: all the images (ECE (T)) and the
    stratified halves (cross-fitted); the halves' floor is NaN where a class has one image, like the cross-fit."""
    probs = np.asarray(probs, np.float64)
    half = stratified_halves(y_true)
    halves = [ece_sampling_floor(probs[h]) for h in (half, ~half) if h.any()]
    return {"ece_floor": ece_sampling_floor(probs),
            "ece_floor_half": float(np.mean(halves)) if len(halves) == 2 else float("nan")}


def classification_metrics(logits: np.ndarray, y_true, temperature: float = 1.0) -> dict:
    """Accuracy, macro-F1, per-class sensitivity/specificity/F1/AUC, confusion, ECE and NLL."""
    logits = np.asarray(logits, np.float64)
    y_true = np.asarray(y_true, int)
    n = logits.shape[1]
    probs = softmax(logits, temperature)
    pred = probs.argmax(1)
    cm = confusion_matrix(y_true, pred, n)
    tp = np.diag(cm).astype(np.float64)
    fn = cm.sum(1) - tp
    fp = cm.sum(0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = tp / (tp + fn)
        spec = tn / (tn + fp)
        prec = tp / (tp + fp)
        f1 = np.where(tp > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
    aucs = [roc_auc(probs[:, k], y_true == k) for k in range(n)]
    names = CLASSES if n == len(CLASSES) else tuple(str(i) for i in range(n))
    return {
        "n": int(len(y_true)),
        "accuracy": float((pred == y_true).mean()) if len(y_true) else float("nan"),
        "macro_f1": float(f1.mean()),
        "macro_auc": float(np.nanmean(aucs)) if not all(np.isnan(aucs)) else float("nan"),
        "ece": expected_calibration_error(probs, y_true),
        "nll": nll(probs, y_true),
        "temperature": float(temperature),
        "per_class": {
            names[k]: {"sensitivity": float(sens[k]), "specificity": float(spec[k]), "precision": float(prec[k]),
                       "f1": float(f1[k]), "auc": float(aucs[k]), "support": int(cm[k].sum())}
            for k in range(n)
        },
        "confusion": cm.tolist(),
    }


# ---- explanation quality against tumour masks -------------------------------------------------

def peak_to_mask(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """Distance in pixels from the map's maximum to the nearest mask pixel (0 inside it), both at the mask's
    resolution; None when the mask is empty."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    ys, xs = np.nonzero(mask)
    return float(np.sqrt(((ys - y) ** 2 + (xs - x) ** 2).min()))


def pointing_game(heatmap: np.ndarray, mask: np.ndarray, tolerance: float = 15.0) -> bool | None:
    """TorchRay's pointing game: a hit when the map's maximum lies within ``tolerance`` pixels of the
    mask. Both at the mask's resolution. None when the mask is empty (nothing to point at)."""
    d = peak_to_mask(heatmap, mask)
    return None if d is None else bool(d <= tolerance)


def pointing_chance(mask: np.ndarray, tolerance: float = 15.0, samples: int = 2000, seed: int = 0) -> float | None:
    """The pointing game's chance level: the share of pixels within ``tolerance`` of the mask, i.e. the
    hit rate of a map whose maximum falls anywhere at random (estimated from a fixed pixel sample).

    A sample inside the mask is a hit; one outside is measured against the mask's border pixels only (the
    mask pixel nearest to an outside point always has a 4-neighbour outside the mask), a few hundred
    instead of thousands: this runs once per scan in ``brisc-infer --masks``."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return None
    h, w = mask.shape
    rng = np.random.default_rng(seed)
    py, px = rng.integers(0, h, samples), rng.integers(0, w, samples)
    inside = mask[py, px]
    m = np.pad(mask, 1, constant_values=True)  # beyond the image counts as mask: no border there
    interior = m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    ys, xs = np.nonzero(mask & ~interior)
    step = max(1, len(ys) // 4000)  # a subsample of a very long border keeps this cheap
    ys, xs = ys[::step], xs[::step]
    qy, qx = py[~inside], px[~inside]
    d2 = (qy[:, None] - ys[None]) ** 2 + (qx[:, None] - xs[None]) ** 2
    near = d2.min(1) <= tolerance ** 2 if len(qy) else np.zeros(0, bool)
    return float((inside.sum() + near.sum()) / samples)


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the (non-negative) map's mass inside the mask; a uniform map scores the mask's area fraction."""
    mask = np.asarray(mask, bool)
    h = np.clip(np.asarray(heatmap, np.float64), 0, None)
    total = h.sum()
    if not mask.any() or total <= 0:
        return None
    return float(h[mask].sum() / total)
