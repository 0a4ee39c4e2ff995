"""Out-of-distribution scores: is a scan like the ones the model was trained on? Numpy only.

Every score is "higher = less like the training data". Candidates, measured in docs/results.md:
- ``mahalanobis``: the smallest squared Mahalanobis distance of the model's penultimate feature to the class
  means, with one covariance shared by the classes, fitted on the training split (Lee et al. 2018; for ViTs'
  [CLS] features, Fort et al. 2021);
- ``relative_mahalanobis``: the same minus the distance to one Gaussian of all training features (Ren et al. 2021),
  which discounts directions every scan varies in;
- ``energy``: -logsumexp(logits) (Liu et al. 2020);
- ``max_logit``: -max(logits); ``max_probability``: -max(softmax) (the baseline of Hendrycks & Gimpel 2017).

The exported graph computes the chosen one (``brisc.export.ood``) from ``GaussianStats``, stored in the graph as
initializers; the threshold is a quantile of the validation scores (``threshold_for``), so that at most
``flag_rate`` of in-distribution validation scans are flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from brisc.metrics import roc_auc, softmax

SCORES = ("mahalanobis", "relative_mahalanobis", "energy", "max_logit", "max_probability")
# The exported graphs' default, chosen on the measurements in docs/results.md ("Out-of-distribution scans").
DEFAULT_SCORE = "mahalanobis"
FEATURE_SCORES = ("mahalanobis", "relative_mahalanobis")  # the ones that need GaussianStats
FLAG_RATE = 0.05  # the share of in-distribution validation scans the threshold may flag
RIDGE = 1e-3  # shrinkage added to the covariance's diagonal, relative to its mean variance: bounds the condition number


@dataclass(frozen=True)
class GaussianStats:
    """Class-conditional Gaussians with a shared covariance, as whitening maps: d_k(f) = |f W - c_k|^2.

    whiten [D, D] with W W^T = inverse covariance; centres [K, D] the class means times W; the background
    Gaussian of all features (relative Mahalanobis) as bg_whiten [D, D] and bg_centre [D]."""

    whiten: np.ndarray
    centres: np.ndarray
    bg_whiten: np.ndarray
    bg_centre: np.ndarray

    @property
    def dim(self) -> int:
        return self.whiten.shape[0]


def _whitening(cov: np.ndarray) -> np.ndarray:
    """W with W W^T = (cov + ridge)^-1, from the eigendecomposition (symmetric, stable for near-singular cov)."""
    d = cov.shape[0]
    cov = cov + RIDGE * max(float(np.trace(cov)) / d, 1e-12) * np.eye(d)
    vals, vecs = np.linalg.eigh(cov)
    return vecs / np.sqrt(np.clip(vals, 1e-12, None))


def fit_gaussians(features: np.ndarray, labels: np.ndarray, n_classes: int) -> GaussianStats:
    """Fit on training features [N, D] with labels [N] (every class present)."""
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    missing = [k for k in range(n_classes) if not (y == k).any()]
    if missing:
        raise ValueError(f"no training features of class(es) {missing}: cannot fit class-conditional Gaussians")
    means = np.stack([f[y == k].mean(0) for k in range(n_classes)])
    centred = f - means[y]
    w = _whitening(centred.T @ centred / len(f))
    bg_mean = f.mean(0)
    bg = _whitening(np.cov(f, rowvar=False, bias=True).reshape(f.shape[1], f.shape[1]))
    return GaussianStats(whiten=w.astype(np.float32), centres=(means @ w).astype(np.float32),
                         bg_whiten=bg.astype(np.float32), bg_centre=(bg_mean @ bg).astype(np.float32))


def class_distances(features: np.ndarray, stats: GaussianStats) -> np.ndarray:
    """[N, D] -> squared Mahalanobis distance to each class mean [N, K]."""
    z = np.asarray(features, np.float64) @ stats.whiten.astype(np.float64)
    return ((z[:, None, :] - stats.centres.astype(np.float64)[None]) ** 2).sum(-1)


def background_distance(features: np.ndarray, stats: GaussianStats) -> np.ndarray:
    z = np.asarray(features, np.float64) @ stats.bg_whiten.astype(np.float64)
    return ((z - stats.bg_centre.astype(np.float64)) ** 2).sum(-1)


def _logsumexp(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    m = z.max(-1)
    return m + np.log(np.exp(z - m[:, None]).sum(-1))


def score(name: str, *, logits: np.ndarray, features: np.ndarray | None = None,
          stats: GaussianStats | None = None, temperature: float = 1.0) -> np.ndarray:
    """The OOD score ``name`` (one of SCORES) of each row: higher = less like the training data."""
    if name in FEATURE_SCORES:
        if features is None or stats is None:
            raise ValueError(f"the {name} score needs features and fitted GaussianStats")
        d = class_distances(features, stats).min(-1)
        return d - background_distance(features, stats) if name == "relative_mahalanobis" else d
    z = np.asarray(logits, np.float64)
    if name == "energy":
        return -_logsumexp(z)
    if name == "max_logit":
        return -z.max(-1)
    if name == "max_probability":
        return -softmax(z, temperature).max(-1)
    raise ValueError(f"unknown OOD score '{name}' (one of: {', '.join(SCORES)})")


def threshold_for(id_scores: np.ndarray, flag_rate: float = FLAG_RATE) -> float:
    """The smallest order statistic t of the in-distribution scores with at most ``flag_rate`` of them above t
    (a scan is flagged when its score is strictly greater)."""
    s = np.sort(np.asarray(id_scores, np.float64))
    if not len(s):
        raise ValueError("no in-distribution scores to set a threshold on")
    k = min(len(s) - 1, max(0, int(np.ceil((1 - flag_rate) * len(s))) - 1))
    return float(s[k])


# Inputs flagged whatever their score. BRISC's scans are grey (no BRISC training scan has a coloured pixel by this
# test): a picture with over 1% of its pixels' channels more than 24 of 255 apart is not an MRI slice as BRISC holds
# them (a colour Doppler ultrasound, a photograph), and a blank frame (one value everywhere) shows nothing.
COLOUR_SPREAD, COLOUR_SHARE = 24.0, 0.01
IMAGE_RULE = ("blank frames and coloured pictures (over 1% of the pixels with channels more than 24 of 255 apart; "
              "BRISC's scans are grey) are flagged whatever their score")


def image_rule(x: np.ndarray, mean, std) -> np.ndarray:
    """[B] True for the inputs (model units [B, 3, H, W], normalised with ``mean``, ``std``) that are flagged out of
    distribution whatever their ood_score: blank or coloured (``IMAGE_RULE``)."""
    x = np.asarray(x, np.float32)
    flat = x.reshape(len(x), -1)
    blank = flat.max(1) == flat.min(1)
    sub = x[:, :, ::4, ::4]  # every 16th pixel estimates the coloured share well enough for a 1% rule, 16x cheaper
    px = (sub * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]) * 255
    coloured = ((px.max(1) - px.min(1)) > COLOUR_SPREAD).mean((1, 2)) > COLOUR_SHARE
    return blank | coloured


def flagged(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Out of distribution: the score strictly above the threshold (NaN, from a broken input, is flagged too)."""
    s = np.asarray(scores, np.float64)
    return ~(s <= threshold)


def auroc(id_scores: np.ndarray, ood_scores: np.ndarray) -> float:
    """Probability that an outlier scores above an in-distribution scan (ties count half)."""
    a, b = np.asarray(id_scores, np.float64), np.asarray(ood_scores, np.float64)
    return roc_auc(np.concatenate([a, b]), np.concatenate([np.zeros(len(a), bool), np.ones(len(b), bool)]))


def evaluate(id_scores: np.ndarray, ood_scores: np.ndarray, threshold: float) -> dict:
    """AUROC and flag rates of one score at one threshold."""
    return {"auroc": auroc(id_scores, ood_scores), "id_flag_rate": float(flagged(id_scores, threshold).mean()),
            "ood_flag_rate": float(flagged(ood_scores, threshold).mean()) if len(ood_scores) else None,
            "id_n": int(len(id_scores)), "ood_n": int(len(ood_scores))}
