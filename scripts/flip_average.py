"""Does averaging a graph over the scan and its left-right mirror help? Accuracy, and the map against the masks.

    python scripts/flip_average.py [--model default.onnx] [--data ../shared/data/brisc2025]

On the validation split of the group split (seed 0, 10%: the shipped model's), through the exported graph: the scan
alone, its mirror alone, and the mean of the two softmax vectors of the logits (and of the two maps, the mirror's
flipped back). Nothing is chosen here, so the figures need no held-apart half; the ECE is cross-fitted (the
temperature fitted on one half of validation, measured on the other, ``brisc.metrics.cross_fitted_ece``). A graph
that averages over the mirror itself (``brisc.export.ensemble --mirror``) is scored on the scan alone.
"""

from __future__ import annotations

import json

import numpy as np

from brisc.data import load_mask
from brisc.imageio import load
from brisc.maps import resize_map
from brisc.metrics import classification_metrics, cross_fitted_ece, energy_in_mask, pointing_game, softmax
from graph_study import graph_and_split, study_parser


def main() -> None:
    sess, splits = graph_and_split(study_parser(__doc__).parse_args())
    val = splits.val
    mirrored = bool((sess.card.self_check or {}).get("mirror"))  # the graph's own scan is already the mean
    views = ("scan",) if mirrored else ("scan", "mirror")
    probs, maps = {v: [] for v in views}, {v: [] for v in views}
    for i in range(0, len(val), 32):
        x = np.stack([load(s.path) for s in val[i:i + 32]])
        for view, xv in zip(views, (x, x[..., ::-1])):
            o = sess.run(xv, ["logits", "heatmap"])
            probs[view].append(softmax(o["logits"]))
            maps[view].append(o["heatmap"] if view == "scan" else o["heatmap"][..., ::-1])
    p = {k: np.concatenate(v) for k, v in probs.items()}
    m = {k: np.concatenate(v) for k, v in maps.items()}
    if not mirrored:
        p["mean"], m["mean"] = (p["scan"] + p["mirror"]) / 2, (m["scan"] + m["mirror"]) / 2
    y = np.array([s.label for s in val])
    masked = [i for i, s in enumerate(val) if s.mask]
    masks = {i: load_mask(val[i].mask) for i in masked}
    classes = np.array([val[i].class_name for i in masked])
    print(f"{sess.name}, {len(val)} validation scans, {len(masked)} masks\n\n| view | accuracy | macro-F1 | errors | "
          "ECE (T, cross-fitted) | pointing (glioma) | energy |\n|---|---:|---:|---:|---:|---:|---:|")
    out = {}
    for view in p:
        log_p = np.log(np.clip(p[view], 1e-12, None))  # as logits: softmax(log p) = p
        c = classification_metrics(log_p, y)
        hits = np.array([pointing_game(resize_map(m[view][i], masks[i].shape), masks[i]) for i in masked], float)
        energy = np.array([energy_in_mask(resize_map(m[view][i], masks[i].shape), masks[i]) for i in masked])
        r = out[view] = {"accuracy": c["accuracy"], "macro_f1": c["macro_f1"],
                         "errors": int((p[view].argmax(1) != y).sum()), "ece_cross_fitted": cross_fitted_ece(log_p, y),
                         "pointing": hits.mean(), "pointing_glioma": hits[classes == "glioma"].mean(),
                         "energy": energy.mean()}
        print(f"| {view} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {r['errors']} | {r['ece_cross_fitted']:.3f} | "
              f"{r['pointing']:.3f} ({r['pointing_glioma']:.3f}) | {r['energy']:.3f} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
