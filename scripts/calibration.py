"""Calibration of a run's trained models on its validation split, with the ECE a perfectly calibrated model
would score on as many images (the floor: ECE is biased upward on small sets).

    python scripts/calibration.py --run artifacts/runs/group-v3 [--models vit,sae,hf_vit]

Recomputes the validation logits in PyTorch (for runs whose metrics.json predates ``ece_floor``) and prints one
markdown row per model: accuracy, ECE, ECE after the temperature fitted on validation, cross-fitted ECE, floors.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from brisc.data import discover
from brisc.imageio import load
from brisc.metrics import cross_fitted_ece, ece_floors, expected_calibration_error, fit_temperature, softmax
from brisc.runfolder import RunFolder
from brisc.train.checkpoint import load_model


def val_logits(run: Path, kind: str, batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rf = RunFolder(run)
    labels = {s.path: s.label for s in discover(rf.data_root(kind)).samples}
    paths = rf.val_paths()
    model = load_model(run, kind)
    out = []
    with torch.no_grad():
        for i in range(0, len(paths), batch):
            x = torch.from_numpy(np.stack([load(p) for p in paths[i:i + batch]]))
            out.append(model(x).logits.float().numpy())
    return np.concatenate(out), np.array([labels[p] for p in paths])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--models", default="vit,sae,hf_vit")
    a = ap.parse_args()
    print("| run | model | images | accuracy | ECE | ECE (T) | ECE (T, cross-fitted) | floor (all / half) | T |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for kind in a.models.split(","):
        if not RunFolder(a.run).has_model(kind):
            continue
        logits, y = val_logits(a.run, kind)
        t = fit_temperature(logits, y)
        cal = softmax(logits, t)
        f = ece_floors(cal, y)
        print(f"| `{a.run}` | {kind} | {len(y)} | {(logits.argmax(1) == y).mean():.3f} "
              f"| {expected_calibration_error(softmax(logits), y):.3f} | {expected_calibration_error(cal, y):.3f} "
              f"| {cross_fitted_ece(logits, y):.3f} | {f['ece_floor']:.3f} / {f['ece_floor_half']:.3f} | {t:.2f} |")


if __name__ == "__main__":
    main()
