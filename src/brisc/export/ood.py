"""The out-of-distribution score inside the exported graph, and the threshold its model card carries.

- ``run_features``: the model's penultimate features and logits on images (no augmentation);
- ``fit_run``: those features on the run's training split -> ``brisc.ood.GaussianStats``;
- ``OODHead``: ``brisc.ood.score`` written as graph operations, the statistics as buffers (graph initializers,
  no side file); the export's self-check compares its output with PyTorch, a test with the numpy score;
- ``calibrate``: the written graph's own ``ood_score`` on the validation split sets the threshold (at most 5%
  flagged), and on the project's OOD evaluation set (``brisc.ood_eval``) gives the AUROC and flag rate the card
  records. An INT8 graph is calibrated on its own scores.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from brisc import CLASSES
from brisc.data import label_from_path
from brisc.imageio import DEFAULT, ImageLoadError, load
from brisc.ood import (FEATURE_SCORES, FLAG_RATE, IMAGE_RULE, SCORES, GaussianStats, evaluate, fit_gaussians,
                       image_rule, threshold_for)
from brisc.runfolder import RunFolder

FEATURE = {"vit": "the final-norm [CLS] token (the head's input)", "hf_vit": "the final-norm [CLS] token",
           "sae": "the top encoder's code (the head's input)"}


def load_images(paths: list[str], workers: int = 4) -> tuple[np.ndarray, list[int]]:
    """The shared loader over ``paths`` -> (images [n, 3, S, S], the indices that decoded)."""
    def one(p):
        try:
            return load(p)
        except ImageLoadError:
            return None

    with ThreadPoolExecutor(max_workers=workers) as pool:
        arrays = list(pool.map(one, paths))
    keep = [i for i, a in enumerate(arrays) if a is not None]
    return (np.stack([arrays[i] for i in keep]) if keep else np.zeros((0, 3, 224, 224), np.float32)), keep


@torch.no_grad()
def run_features(model: nn.Module, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """images [n, 3, S, S] -> (features [n, D], logits [n, C]), in fp32, eval mode."""
    model.eval()
    feats, logits = [], []
    for i in range(0, len(images), batch):
        out = model(torch.from_numpy(np.ascontiguousarray(images[i:i + batch])))
        feats.append(out.features.float().numpy())
        logits.append(out.logits.float().numpy())
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0, len(CLASSES)), np.float32)
    return np.concatenate(feats), np.concatenate(logits)


def fit_run(model: nn.Module, run: Path, chunk: int = 512) -> GaussianStats:
    """Class-conditional Gaussians of the model's features on the run's training split (labels from the paths)."""
    paths = [p for p in RunFolder(run).train_paths() if label_from_path(p) in CLASSES]
    feats, labels = [], []
    for i in range(0, len(paths), chunk):  # a chunk at a time: 4,500 decoded scans would hold 2.7 GB
        images, keep = load_images(paths[i:i + chunk])
        feats.append(run_features(model, images)[0])
        labels += [CLASSES.index(label_from_path(paths[i + k])) for k in keep]
    return fit_gaussians(np.concatenate(feats), np.array(labels), len(CLASSES))


class OODHead(nn.Module):
    """(logits [B, C], features [B, D]) -> ood_score [B]: ``brisc.ood.score`` as graph operations."""

    def __init__(self, method: str, stats: GaussianStats | None, temperature: float = 1.0):
        super().__init__()
        if method not in SCORES:
            raise ValueError(f"unknown OOD score '{method}' (one of: {', '.join(SCORES)})")
        if method in FEATURE_SCORES and stats is None:
            raise ValueError(f"the {method} score needs statistics fitted on the training split")
        self.method, self.temperature = method, float(temperature)
        if stats is not None and method in FEATURE_SCORES:
            for name in ("whiten", "centres", "bg_whiten", "bg_centre"):
                self.register_buffer(name, torch.from_numpy(np.asarray(getattr(stats, name), np.float32)))

    def forward(self, logits: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        if self.method in FEATURE_SCORES:
            # float64, as brisc.ood: whitening magnifies float32 rounding far from the training data (a D x D product
            # per scan, nothing next to the encoder).
            f = features.double()
            d = ((f @ self.whiten.double()).unsqueeze(1) - self.centres.double()).pow(2).sum(-1).amin(-1)  # [B, K] -> [B]
            if self.method == "relative_mahalanobis":
                d = d - (f @ self.bg_whiten.double() - self.bg_centre.double()).pow(2).sum(-1)
            return d.float()
        z = logits.float()
        if self.method == "energy":
            return -torch.logsumexp(z, -1)
        if self.method == "max_logit":
            return -z.amax(-1)
        return -torch.softmax(z / self.temperature, -1).amax(-1)


def graph_scores(run_fn, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """``ood_score`` of a graph (``run_fn(x) -> {name: array}``) on images, in batches."""
    out = [run_fn(np.ascontiguousarray(images[i:i + batch]))["ood_score"] for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def calibrate(run_fn, method: str, kind: str, val_images: np.ndarray, eval_set: list | None,
              flag_rate: float = FLAG_RATE) -> dict:
    """The card's ``ood`` entry from the graph's own scores: threshold on validation, AUROC on the evaluation set
    (``eval_set``: brisc.ood_eval.Outlier items; None or empty leaves that part out)."""
    val = graph_scores(run_fn, val_images)
    t = threshold_for(val, flag_rate)
    mean, std = DEFAULT.mean, DEFAULT.std  # the images were loaded with the default preprocessing
    card = {"score": method, "feature": FEATURE.get(kind, "") if method in FEATURE_SCORES else "logits",
            "threshold": t, "higher_means": "less like the training scans",
            "rule": f"flagged when ood_score > threshold; the threshold is the smallest validation score with at most "
                    f"{flag_rate:.0%} of the validation scans above it; " + IMAGE_RULE,
            "validation": {"n": int(len(val)),
                           "flag_rate": float(((val > t) | image_rule(val_images, mean, std)).mean())}}
    if eval_set:
        images = np.stack([o.image for o in eval_set])
        scores = graph_scores(run_fn, images)
        ev = evaluate(val, scores, t)
        flags = (scores > t) | image_rule(images, mean, std)  # as brisc-infer flags them
        per_kind = {}
        for k in sorted({o.kind for o in eval_set}):
            sel = np.array([o.kind == k for o in eval_set])
            per_kind[k] = {"n": int(sel.sum()), "flag_rate": float(flags[sel].mean())}
        card["evaluation_set"] = {"n": ev["ood_n"], "auroc": ev["auroc"], "flag_rate": float(flags.mean()),
                                  "score_flag_rate": ev["ood_flag_rate"], "per_kind": per_kind}
    return card


@lru_cache(maxsize=1)
def cached_evaluation_set() -> tuple:
    """brisc.ood_eval.evaluation_set, built once a process (it decodes ~70 files)."""
    from brisc.ood_eval import evaluation_set

    return tuple(evaluation_set()[0])
