"""Audit BRISC's tumour masks: list the training and validation masks that look wrong, worst first, with thumbnails.

    python scripts/mask_audit.py --run artifacts/runs/oe-half --out artifacts/mask-audit [--model default.onnx]

Every mask of the run's data (train split of BRISC) is checked by ``brisc.mask_audit.findings``: empty, speckled,
mostly outside the head, or far (more than the pointing game's 15 px) from the peak of the shipped model's guided
map when that model is correct at >= 0.95. Writes audit.csv (every mask, its measurements and flags), audit.md
(counts per flag and split, the map's pointing game per class and split, the worst with thumbnails: the scan with the mask's outline in red, and the model's
map with its peak) and flagged.txt (the flagged scans' names, one a line). A flag asks a person to look: the
model's look is itself evidence, not ground truth.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from brisc import CLASSES
from brisc.data import discover, load_mask
from brisc.imageio import load
from brisc.inference.heatmap import fit, outline, overlay
from brisc.inference.session import open_session
from brisc.mask_audit import FAR_PX, findings
from brisc.maps import resize_map
from brisc.runfolder import RunFolder

THUMB = 192


def thumbnail(path: str, mask: np.ndarray, heatmap: np.ndarray) -> Image.Image:
    scan = Image.open(path).convert("L")
    left = scan.convert("RGB")
    left.paste((255, 40, 40), mask=outline(mask, scan.size))
    right = overlay(scan, heatmap)
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    ImageDraw.Draw(right).ellipse((x - 8, y - 8, x + 8, y + 8), outline=(255, 255, 255), width=3)
    sheet = Image.new("RGB", (2 * THUMB, THUMB))
    sheet.paste(fit(left, THUMB), (0, 0))
    sheet.paste(fit(right, THUMB), (THUMB, 0))
    return sheet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a brisc-train run: its split says train or validation")
    ap.add_argument("--model", default=None, help="an exported graph with a heatmap output (default: the shipped one)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--worst", type=int, default=24)
    a = ap.parse_args()

    if a.out.exists():
        raise SystemExit(f"{a.out}: already exists; an audit never writes over another, choose a new --out")
    rf = RunFolder(a.run)
    split = {p: "train" for p in rf.train_paths()} | {p: "val" for p in rf.val_paths()}
    samples = [s for s in discover(rf.data_root("vit")).samples if s.mask and s.path in split]
    sess = open_session(a.model)
    a.out.mkdir(parents=True)
    (a.out / "thumbs").mkdir()
    rows = []
    for i in range(0, len(samples), 32):
        chunk = samples[i:i + 32]
        res = sess.run(np.stack([load(s.path) for s in chunk]), ["probabilities", "heatmap"])
        for s, p, m in zip(chunk, res["probabilities"], res["heatmap"]):
            mask = load_mask(s.mask)
            grey = np.asarray(Image.open(s.path).convert("L"))
            up = resize_map(m, mask.shape)
            pred = CLASSES[int(p.argmax())]
            f = findings(mask, grey, heatmap=up, correct=pred == s.class_name, probability=float(p.max()))
            rows.append({"image": Path(s.path).name, "split": split[s.path], "class": s.class_name, "predicted": pred,
                         "probability": round(float(p.max()), 4), **{k: f.get(k) for k in
                         ("area", "pieces", "largest_share", "outside_head", "peak_distance")},
                         "flags": "; ".join(f["flags"]), "_path": s.path, "_mask": mask, "_map": up})
    order = {"empty": 0, "outside the head": 1, "far from where the model looks": 2, "speckled": 3}
    flagged = sorted((r for r in rows if r["flags"]),
                     key=lambda r: (min(order[x] for x in r["flags"].split("; ")), -(r["peak_distance"] or 0)))
    fields = [k for k in rows[0] if not k.startswith("_")] if rows else []
    with open(a.out / "audit.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (a.out / "flagged.txt").write_text("".join(r["image"] + "\n" for r in flagged))
    lines = [f"# Mask audit: {len(rows)} masks ({sum(r['split'] == 'train' for r in rows)} train, "
             f"{sum(r['split'] == 'val' for r in rows)} validation), model `{sess.name}`\n",
             "| flag | train | validation |", "|---|---:|---:|"]
    for flag in order:
        n = {sp: sum(flag in r["flags"].split("; ") for r in rows if r["split"] == sp) for sp in ("train", "val")}
        lines.append(f"| {flag} | {n['train']} | {n['val']} |")
    lines += [f"| any | {sum(bool(r['flags']) for r in rows if r['split'] == 'train')} | "
              f"{sum(bool(r['flags']) for r in rows if r['split'] == 'val')} |", "",
              f"Pointing game of the model's map per class (its peak within {FAR_PX:g} px of the mask):", "",
              "| class | validation masks | pointing | training masks | pointing |", "|---|---:|---:|---:|---:|"]
    for cls in sorted({r["class"] for r in rows}):
        cells = []
        for sp in ("val", "train"):
            sel = [r for r in rows if r["class"] == cls and r["split"] == sp and r["peak_distance"] is not None]
            hits = sum(r["peak_distance"] <= FAR_PX for r in sel)
            cells += [str(len(sel)), f"{hits / len(sel):.3f}" if sel else "-"]
        lines.append(f"| {cls} | " + " | ".join(cells) + " |")
    summary_end = len(lines)
    lines += ["",
              f"The {min(a.worst, len(flagged))} worst (left: the mask's outline; right: the model's map, its peak "
              "circled):", "", "| image | split | class | predicted | flags | peak to mask (px) | thumbnail |",
              "|---|---|---|---|---|---:|---|"]
    for r in flagged[:a.worst]:
        name = Path(r["image"]).stem + ".png"
        thumbnail(r["_path"], r["_mask"], r["_map"]).save(a.out / "thumbs" / name)
        dist = "" if r["peak_distance"] is None else f"{r['peak_distance']:.0f}"
        lines.append(f"| {r['image']} | {r['split']} | {r['class']} | {r['predicted']} {r['probability']:.2f} | "
                     f"{r['flags']} | {dist} | ![](thumbs/{name}) |")
    (a.out / "audit.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:summary_end]))  # the counts and the pointing table; the worst are in audit.md
    print(json.dumps({"masks": len(rows), "flagged": len(flagged), "out": str(a.out)}))


if __name__ == "__main__":
    main()
