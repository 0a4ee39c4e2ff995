"""Where does the map go when it misses the tumour? Per class and per plane, on the validation masks.

    python scripts/pointing_misses.py [--model default.onnx] [--data ../shared/data/brisc2025]

Through the exported graph's own ``heatmap`` (as brisc-infer scores it: bilinear to the mask, pointing within
15 px), on the group split's validation masks (seed 0, 10%): pointing per class and plane, and for the misses how
far the peak lies from the mask, how many look-alike groups (patients, roughly) they come from, whether one of the
map's top 3 patches is on the tumour, and the map's mass inside the mask beside the hits'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brisc.data import load_mask, parse_brisc_name
from brisc.grouping import similarity_groups
from brisc.imageio import load
from brisc.maps import resize_map
from brisc.metrics import energy_in_mask, peak_to_mask, pointing_game
from graph_study import graph_and_split, study_parser


def top_k_hit(m: np.ndarray, mask: np.ndarray, k: int = 3) -> bool:
    """Is one of the map's k highest patches, alone, a pointing-game hit?"""
    for i in np.argsort(m.ravel())[::-1][:k]:
        one = np.zeros_like(m)
        one.flat[i] = 1.0
        if pointing_game(resize_map(one, mask.shape), mask):
            return True
    return False


def main() -> None:
    sess, splits = graph_and_split(study_parser(__doc__).parse_args())
    va = [s for s in splits.val if s.mask]
    maps = np.concatenate([sess.run(np.stack([load(s.path) for s in va[i:i + 32]]), ["heatmap"])["heatmap"]
                           for i in range(0, len(va), 32)])
    rows = []
    for s, m in zip(va, maps):
        mask = load_mask(s.mask)
        up = resize_map(m, mask.shape)
        rows.append({"cls": s.class_name, "plane": parse_brisc_name(Path(s.path).name).plane, "path": s.path,
                     "hit": bool(pointing_game(up, mask)), "px": peak_to_mask(up, mask), "top3": top_k_hit(m, mask),
                     "energy": energy_in_mask(up, mask)})
    print(f"{sess.name} ({sess.card.heatmap}), {len(rows)} validation masks\n\n| class | masks | pointing | axial | "
          "coronal | sagittal | misses | their groups | peak to mask (median px) | top-3 patch on it | energy | "
          "energy: hits / misses |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in sorted({r["cls"] for r in rows}):
        rc = [r for r in rows if r["cls"] == c]
        miss = [r for r in rc if not r["hit"]]
        planes = []
        for p in ("axial", "coronal", "sagittal"):
            rp = [r for r in rc if r["plane"] == p]
            planes.append(f"{np.mean([r['hit'] for r in rp]):.3f} ({len(rp)})" if rp else "-")
        groups = len(set(similarity_groups([r["path"] for r in miss], [0] * len(miss)))) if miss else 0
        hit_e = np.mean([r["energy"] for r in rc if r["hit"]])
        miss_e = f"{np.mean([r['energy'] for r in miss]):.3f}" if miss else "-"
        px = f"{np.median([r['px'] for r in miss]):.0f}" if miss else "-"
        top3 = f"{sum(r['top3'] for r in miss)} of {len(miss)}" if miss else "-"
        print(f"| {c} | {len(rc)} | {np.mean([r['hit'] for r in rc]):.3f} | {' | '.join(planes)} | {len(miss)} | "
              f"{groups} | {px} | {top3} | {np.mean([r['energy'] for r in rc]):.3f} | {hit_e:.3f} / {miss_e} |")


if __name__ == "__main__":
    main()
