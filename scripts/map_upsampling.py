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

from brisc.data import load_mask
from brisc.imageio import load
from brisc.inference.session import open_session
from brisc.maps import guided_upsample, resize_map
from brisc.metrics import energy_in_mask, pointing_game
from brisc.runfolder import RunFolder
from map_study import choose_and_report, masked_samples

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
    tr, va = masked_samples(RunFolder(a.run), a.train)
    sess = open_session(a.model)
    out = choose_and_report(lambda samples, settings: scores(samples, sess, settings), tr, va, GRID, slack=a.slack,
                            name=lambda k: k if k == "bilinear" else f"guided radius={k[0]} power={k[1]:g}")
    if out is not None:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
