"""A graph plus another run's model, epoch by epoch: the ensemble's validation figures, with the second member's epoch
chosen honestly.

    python scripts/ensemble_epochs.py --run artifacts/runs/oe-seed1 [--model default.onnx]

The first member is an exported graph (default the shipped one) at its calibrated logits; the second is every epoch of
``--run``'s ViT from its ``val_logits.npy`` (the trainer's validation logits, bf16 where it trained in bf16), over
the run's temperature. Their mean, as ``brisc.export.ensemble`` forms it, is scored at every epoch, and the second
member's epoch is chosen on one half of validation (whole look-alike groups) and scored on the other
(``brisc.selection.cross_selection``). The first member's own epoch was chosen on all of validation: the figure
still flatters by that much.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from brisc.data import label_from_path
from brisc.imageio import load
from brisc.inference.session import open_session
from brisc.runfolder import RunFolder
from brisc.selection import cross_selection, validation_halves
from brisc import CLASSES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the second member's brisc-train run (its ViT)")
    ap.add_argument("--model", default=None, help="the first member, an exported graph (default: the shipped one)")
    a = ap.parse_args()
    rf = RunFolder(a.run)
    paths = rf.val_paths()
    y = np.array([CLASSES.index(label_from_path(p)) for p in paths])
    sess = open_session(a.model)
    if sess.card.training_data.get("val_images") != len(paths):
        raise SystemExit(f"{a.run}: its validation split has {len(paths)} scans, {sess.name}'s "
                         f"{sess.card.training_data.get('val_images')}: not the same split")
    first = np.concatenate([sess.run(np.stack([load(p) for p in paths[i:i + 64]]), ["logits"])["logits"]
                            for i in range(0, len(paths), 64)]) / sess.card.temperature
    epochs = np.load(rf.val_logits("vit")) / json.loads(rf.config_path("vit").read_text())["temperature"]
    ens = (first[None] + epochs) / 2  # [E, N, C]
    half = validation_halves(paths, y)
    if half is None:
        print("validation cannot be halved by look-alike groups: epochs chosen on all of it, nothing held apart")
    alone, both = cross_selection(epochs, y, half), cross_selection(ens, y, half)
    first_acc = float((first.argmax(1) == y).mean())
    print(f"{sess.name} + {a.run.name} (epochs 1..{len(epochs)}), {len(y)} validation scans\n")
    print("| | first alone | second alone | ensemble |\n|---|---:|---:|---:|")
    print(f"| second member's best epoch, chosen on all | {first_acc:.3f} | {alone['best_accuracy']:.3f} "
          f"(epoch {alone['best_epoch']}) | {both['best_accuracy']:.3f} (epoch {both['best_epoch']}) |")
    if alone["accuracy"] is not None:
        print(f"| chosen on one half, scored on the other | | {alone['accuracy']:.3f} | {both['accuracy']:.3f} |")
    print(f"| second member's last epoch | | {alone['last_accuracy']:.3f} | {both['last_accuracy']:.3f} |")
    print("\nensemble accuracy by epoch: " + " ".join(f"{(e.argmax(1) == y).mean():.3f}" for e in ens))
    print(json.dumps({"first": first_acc, "second": alone, "ensemble": both}))


if __name__ == "__main__":
    main()
