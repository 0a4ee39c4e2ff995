"""Exported graphs plus another run's model, epoch by epoch: the ensemble's validation figures, with the last
member's epoch chosen honestly.

    python scripts/ensemble_epochs.py --run artifacts/runs/oe-seed1 [--model default.onnx [--model B.onnx ...]] [--mirror]

The first members are exported graphs (default the shipped one) at their calibrated logits; the last is every epoch
of ``--run``'s ViT from its ``val_logits.npy`` (the trainer's validation logits, bf16 where it trained in bf16), over
the run's temperature. Their mean, as ``brisc.export.ensemble`` forms it, is scored at every epoch, and the last
member's epoch is chosen on one half of validation (whole look-alike groups) and scored on the other
(``brisc.selection.cross_selection``). The graphs' own epochs were chosen on all of validation: the figure still
flatters by that much. ``--mirror`` scores ``brisc.export.ensemble --mirror``: every member also on the scans' mirrors
(the run's from its ``val_logits_mirror.npy``; a graph that mirrors itself already, as it is).
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


def graph_logits(sess, paths: list[str], flip: bool) -> np.ndarray:
    """A graph's calibrated logits [N, C] on the validation scans (``flip``: on their mirrors)."""
    out = []
    for i in range(0, len(paths), 64):
        x = np.stack([load(p) for p in paths[i:i + 64]])
        out.append(sess.run(np.ascontiguousarray(x[..., ::-1]) if flip else x, ["logits"])["logits"])
    return np.concatenate(out) / sess.card.temperature


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="the last member's brisc-train run (its ViT)")
    ap.add_argument("--model", action="append", help="a first member, an exported graph (default: the shipped one; "
                    "repeat for more)")
    ap.add_argument("--mirror", action="store_true", help="every member on the scan and its mirror, averaged")
    a = ap.parse_args()
    rf = RunFolder(a.run)
    paths = rf.val_paths()
    y = np.array([CLASSES.index(label_from_path(p)) for p in paths])
    firsts = []
    for model in a.model or [None]:
        sess = open_session(model)
        if sess.card.training_data.get("val_images") != len(paths):
            raise SystemExit(f"{a.run}: its validation split has {len(paths)} scans, {sess.name}'s "
                             f"{sess.card.training_data.get('val_images')}: not the same split")
        flips = (False, True) if a.mirror and not (sess.card.self_check or {}).get("mirror") else (False,)
        firsts.append(np.mean([graph_logits(sess, paths, f) for f in flips], 0))
    first = np.mean(firsts, 0)
    views = [np.load(rf.val_logits("vit", mirror=m)) for m in ((False, True) if a.mirror else (False,))]
    epochs = np.mean(views, 0) / json.loads(rf.config_path("vit").read_text())["temperature"]  # [E, N, C]
    ens = (len(firsts) * first[None] + epochs) / (len(firsts) + 1)  # [E, N, C]: every member weighs the same
    half = validation_halves(paths, y)
    if half is None:
        print("validation cannot be halved by look-alike groups: epochs chosen on all of it, nothing held apart")
    alone, both = cross_selection(epochs, y, half), cross_selection(ens, y, half)
    first_acc = float((first.argmax(1) == y).mean())
    print(f"{len(firsts)} graph(s) + {a.run.name} (epochs 1..{len(epochs)}), {len(y)} validation scans\n")
    print("| | graphs alone | last member alone | ensemble |\n|---|---:|---:|---:|")
    print(f"| last member's best epoch, chosen on all | {first_acc:.3f} | {alone['best_accuracy']:.3f} "
          f"(epoch {alone['best_epoch']}) | {both['best_accuracy']:.3f} (epoch {both['best_epoch']}) |")
    if alone["accuracy"] is not None:
        print(f"| chosen on one half, scored on the other | | {alone['accuracy']:.3f} | {both['accuracy']:.3f} |")
    print(f"| last member's last epoch | | {alone['last_accuracy']:.3f} | {both['last_accuracy']:.3f} |")
    print("\nensemble accuracy by epoch: " + " ".join(f"{(e.argmax(1) == y).mean():.3f}" for e in ens))
    print(json.dumps({"first": first_acc, "second": alone, "ensemble": both}))


if __name__ == "__main__":
    main()
