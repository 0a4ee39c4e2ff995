"""Give a copy of the data the validation split of an existing run, as `val/` folders.

A resized copy (``../shared/tools/gpu-pack.py``) groups look-alike slices slightly differently from the originals, so
its own group split would differ from the run's. Moving that run's validation images (and their masks) into
``classification_task/val/<class>/`` and ``segmentation_task/val/masks/`` makes the copy bring its split: brisc-data,
brisc-train and brisc-pretrain then use exactly the run's train and validation images (brisc.data.make_splits).

    python3 ../shared/tools/gpu-pack.py .gpu/data
    python scripts/carry_split.py --run artifacts/runs/group-v3 .gpu/data
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from brisc.kinds import MODEL_KINDS
from brisc.runfolder import RunFolder


def carry_split(run: Path, copy: Path) -> int:
    """Move ``run``'s validation images of ``copy`` (matched by path below the run's data root) into val/ folders.
    Returns how many moved; refuses a copy that lacks one of them, before moving anything."""
    rf = RunFolder(run)
    kinds = [k for k in MODEL_KINDS if rf.config_path(k).is_file()]
    if not kinds:
        raise SystemExit(f"carry_split: {run}: no trained model's config.json, so no data root to match paths against")
    root = Path(rf.data_root(kinds[0]))
    rel = [Path(os.path.relpath(p, root)) for p in rf.val_paths()]
    moves = []
    for r in rel:
        parts = r.parts  # classification_task/train/<class>/<name>
        if parts[:2] != ("classification_task", "train") or not (copy / r).is_file():
            raise SystemExit(f"carry_split: {copy / r}: not there (split carried already, or not a release-layout copy of {root}?)")
        moves.append((copy / r, copy / "classification_task" / "val" / Path(*parts[2:])))
        mask = copy / "segmentation_task" / "train" / "masks" / (r.stem + ".png")
        if mask.is_file():
            moves.append((mask, copy / "segmentation_task" / "val" / "masks" / mask.name))
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
    return len(rel)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True, help="a brisc-train run folder (its split.json)")
    ap.add_argument("copy", type=Path, help="a release-layout copy of the run's data")
    a = ap.parse_args()
    print(f"{carry_split(a.run, a.copy)} validation images moved to {a.copy}/classification_task/val", file=sys.stderr)
