"""The mask-guidance ablation as one table: accuracy, calibration, where the maps point, and whether they are faithful.

    python experiments/guidance_table.py artifacts/runs/ablation/* [--methods cls:layer=3,cls] [--faithfulness 100]
        [--sanity 16] [--json out.json]

For each run (its home-made ViT): validation accuracy, macro-F1 and ECE after temperature (metrics.json); for each
map method, pointing game and energy in mask on every validation tumour mask (metrics.json, computed at the end of
training) and deletion/insertion AUC (RISE) of the PyTorch model on N validation tumour images, the classes in turn,
beside a random patch order. With --sanity K, the cascading model-randomisation check on K of those images.
The validation masks are never used by the guidance loss (only training images are).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from brisc.runfolder import RunFolder
from brisc.data import classes_in_turn, discover
from brisc.imageio import load


def run_row(run: Path, methods: list[str], n_faith: int, n_sanity: int) -> dict:
    from brisc.export.loading import load_trained
    from brisc.train.explain import faithfulness, randomisation_check

    rf = RunFolder(run)
    metrics, cfg, val = rf.metrics("vit"), rf.config("vit"), set(rf.val_paths())
    samples = classes_in_turn([s for s in discover(cfg["data"]).samples if s.path in val and s.mask])
    row = {"run": run.name, "epochs": cfg["train"]["epochs"], "guide_weight": cfg["train"].get("guide_weight", 0.0),
           "guide_layers": cfg["train"].get("guide_layers"), "registers": cfg["model"].get("registers", 0),
           "accuracy": metrics["val"]["accuracy"], "macro_f1": metrics["val"]["macro_f1"], "ece": metrics["val"]["ece"],
           "maps": {m: dict(metrics["explanations"][m]) for m in methods}}
    model = load_trained(run, "vit").model.eval()
    if n_faith:
        images = np.stack([load(s.path) for s in samples[:n_faith]])
        for m, f in faithfulness(model, images, methods).items():
            row["maps"].setdefault(m, {}).update(f)
    if n_sanity:
        images = np.stack([load(s.path) for s in samples[:n_sanity]])
        row["sanity"] = {m: randomisation_check(model, images, m) for m in methods}
    return row


def markdown(rows: list[dict]) -> str:
    out = ["| run | epochs | guide weight / layers | registers | val acc | macro-F1 | ECE (T) | map | pointing | energy "
           "| deletion AUC (random) | insertion AUC (random) |", "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        rand = r["maps"].get("random order", {})
        for m, e in r["maps"].items():
            if m == "random order":
                continue
            guide = f"{r['guide_weight']:g} / {','.join(map(str, r['guide_layers'] or []))}" if r["guide_weight"] else "off"
            dele = f"{e['deletion_auc']:.3f} ({rand['deletion_auc']:.3f})" if "deletion_auc" in e else "-"
            ins = f"{e['insertion_auc']:.3f} ({rand['insertion_auc']:.3f})" if "insertion_auc" in e else "-"
            out.append(f"| {r['run']} | {r['epochs']} | {guide} | {r['registers']} | {r['accuracy']:.3f} | "
                       f"{r['macro_f1']:.3f} | {r['ece']:.3f} | {m} | {e['pointing_game']:.3f} | "
                       f"{e['energy_in_mask']:.3f} | {dele} | {ins} |")
    for r in rows:
        for m, checks in r.get("sanity", {}).items():
            out.append(f"\nRandomisation check, {r['run']}, {m}: " + "; ".join(
                f"{c['randomised']}: {c['rank_correlation']:.2f}" for c in checks))
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--methods", default="cls:layer=3,cls")
    ap.add_argument("--faithfulness", type=int, default=100, help="validation tumour images for deletion/insertion")
    ap.add_argument("--sanity", type=int, default=0, help="images for the randomisation check (0: skip)")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rows = [run_row(r, a.methods.split(","), a.faithfulness, a.sanity) for r in a.runs
            if RunFolder(r).metrics_path("vit").is_file()]
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    print(markdown(rows))


if __name__ == "__main__":
    main()
