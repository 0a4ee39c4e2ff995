"""Do a graph's maps of the scan shifted by part of a patch, stitched back, point better and hold more mass in the masks?

    python scripts/shift_maps.py [--model default.onnx] [--data ../shared/data/brisc2025]

On the validation split of the group split, through the exported graph: the scan alone as brisc-infer shows it (the
14x14 map, bilinear), and the maps of the scan shifted by every multiple of 8 px (4 views) or 4 px (16 views) below
a patch, each spread over its patches and moved back (``brisc.maps.stitch_shifted``), with the mean of the views'
softmax for accuracy. Nothing is chosen here: every setting is reported, per class.
"""

from __future__ import annotations

import json

import numpy as np

from brisc.data import load_mask
from brisc.imageio import load
from brisc.maps import resize_map, shift_scans, stitch_shifted
from brisc.metrics import energy_in_mask, pointing_game, softmax
from graph_study import graph_and_split, study_parser

STEPS = {"one view": 16, "4 views (8 px)": 8, "16 views (4 px)": 4}


def main() -> None:
    sess, splits = graph_and_split(study_parser(__doc__).parse_args())
    val = splits.val
    shifts = {k: [(dy, dx) for dy in range(0, 16, s) for dx in range(0, 16, s)] for k, s in STEPS.items()}
    every = sorted({d for v in shifts.values() for d in v})
    y = np.array([s.label for s in val])
    probs = {k: [] for k in STEPS}
    hits, energy = {k: [] for k in STEPS}, {k: [] for k in STEPS}
    for i in range(0, len(val), 32):
        chunk = val[i:i + 32]
        x = np.stack([load(s.path) for s in chunk])
        outs = {d: sess.run(np.ascontiguousarray(shift_scans(x, *d)), ["logits", "heatmap"]) for d in every}
        for k, ds in shifts.items():
            probs[k].append(np.mean([softmax(outs[d]["logits"]) for d in ds], 0))
        for j, s in enumerate(chunk):
            if not s.mask:
                continue
            mask = load_mask(s.mask)
            for k, ds in shifts.items():
                m = outs[(0, 0)]["heatmap"][j] if k == "one view" else \
                    stitch_shifted(np.stack([outs[d]["heatmap"][j] for d in ds]), ds)
                up = resize_map(m, mask.shape)
                hits[k].append((s.class_name, pointing_game(up, mask)))
                energy[k].append(energy_in_mask(up, mask))
    print(f"{sess.name}, {len(val)} validation scans, {len(hits['one view'])} masks\n\n| views | accuracy | pointing | "
          "glioma | meningioma | pituitary | energy |\n|---|---:|---:|---:|---:|---:|---:|")
    out = {}
    for k in STEPS:
        cls, h = np.array([c for c, _ in hits[k]]), np.array([h for _, h in hits[k]], float)
        r = out[k] = {"accuracy": float((np.concatenate(probs[k]).argmax(1) == y).mean()), "pointing": h.mean(),
                      **{c: h[cls == c].mean() for c in ("glioma", "meningioma", "pituitary")},
                      "energy": float(np.mean(energy[k]))}
        print(f"| {k} | {r['accuracy']:.3f} | {r['pointing']:.3f} | {r['glioma']:.3f} | {r['meningioma']:.3f} | "
              f"{r['pituitary']:.3f} | {r['energy']:.3f} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
