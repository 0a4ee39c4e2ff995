"""Does letting the scan place the 14x14 map's mass within each region put more of it inside the tumour?

    python scripts/map_upsampling.py --run artifacts/runs/oe-half [--model default.onnx] [--train 600]

Pointing game and energy in mask of the shipped graph's map, upsampled bilinearly (what brisc-infer scores) and by
``brisc.maps.guided_upsample`` over a grid of radius and power. The setting is chosen on training masks (by energy,
pointing at most ``--slack`` below bilinear's) and reported on the validation masks, per class: validation never chooses.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from PIL import Image

from brisc.data import discover, load_mask
from brisc.imageio import load
from brisc.inference.session import open_session
from brisc.maps import guided_upsample, resize_map
from brisc.metrics import energy_in_mask, pointing_game
from brisc.runfolder import RunFolder

GRID = [(r, k) for r in (8, 16, 32) for k in (1.0, 2.0, 4.0)]


def scores(samples, sess, settings) -> dict:
    """{setting: (pointing hits [N], energies [N])} with "bilinear" beside the guided settings."""
    out = {k: ([], []) for k in ["bilinear", *settings]}
    for i in range(0, len(samples), 32):
        chunk = samples[i:i + 32]
        maps = sess.run(np.stack([load(s.path) for s in chunk]), ["heatmap"])["heatmap"]
        for s, m in zip(chunk, maps):
            mask = load_mask(s.mask)
            grey = np.asarray(Image.open(s.path).convert("L"))
            for k in out:
                up = resize_map(m, mask.shape) if k == "bilinear" else guided_upsample(m, grey, radius=k[0], power=k[1])
                out[k][0].append(pointing_game(up, mask))
                out[k][1].append(energy_in_mask(up, mask))
    return {k: (np.asarray(p, float), np.asarray(e, float)) for k, (p, e) in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--model", default=None, help="an exported graph with a heatmap output (default: the shipped one)")
    ap.add_argument("--train", type=int, default=600, help="training masks to choose the setting on (every k-th)")
    ap.add_argument("--slack", type=float, default=0.01, help="how much training pointing the chosen setting may lose")
    a = ap.parse_args()
    rf = RunFolder(a.run)
    train, val = set(rf.train_paths()), set(rf.val_paths())
    masked = [s for s in discover(rf.data_root("vit")).samples if s.mask]
    tr = [s for s in masked if s.path in train]
    tr = tr[:: max(1, len(tr) // a.train)][: a.train]
    va = [s for s in masked if s.path in val]
    sess = open_session(a.model)
    t = scores(tr, sess, GRID)
    base_p = t["bilinear"][0].mean()
    ok = [k for k in GRID if t[k][0].mean() >= base_p - a.slack]
    chosen = max(ok, key=lambda k: t[k][1].mean()) if ok else None
    print("| setting | training pointing | training energy |\n|---|---:|---:|")
    for k in ["bilinear", *GRID]:
        print(f"| {k if k == 'bilinear' else f'guided radius={k[0]} power={k[1]:g}'} | {t[k][0].mean():.3f} | {t[k][1].mean():.3f} |")
    if chosen is None:
        print(f"no guided setting keeps the training pointing game within {a.slack}: nothing to report on validation")
        return
    v = scores(va, sess, [chosen])
    classes = np.array([s.class_name for s in va])
    print(f"\nchosen on {len(tr)} training masks: radius {chosen[0]}, power {chosen[1]:g}; "
          f"validation ({len(va)} masks):\n\n| class | masks | pointing: bilinear / guided | energy: bilinear / guided |"
          "\n|---|---:|---:|---:|")
    rows = {}
    for c in [*sorted(set(classes)), "all"]:
        sel = np.ones(len(va), bool) if c == "all" else classes == c
        b, g = v["bilinear"], v[chosen]
        rows[c] = {"n": int(sel.sum()), "pointing": [b[0][sel].mean(), g[0][sel].mean()],
                   "energy": [b[1][sel].mean(), g[1][sel].mean()]}
        print(f"| {c} | {sel.sum()} | {b[0][sel].mean():.3f} / {g[0][sel].mean():.3f} | "
              f"{b[1][sel].mean():.3f} / {g[1][sel].mean():.3f} |")
    print(json.dumps({"chosen": chosen, "validation": rows}))


if __name__ == "__main__":
    main()
