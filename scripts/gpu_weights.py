"""A run trained on the GPU machine, brought back: its weights in fp16 pieces small enough to return, then a local run
folder on this machine's data and split.

    python3 scripts/gpu_weights.py pack $R/vits-s0 $OUT                          # there: vits-s0.fp16.part00, ...
    python scripts/gpu_weights.py unpack --run RESULTS/vits-s0 --weights FILES/vits-s0.fp16 \
        --like artifacts/runs/oe-seed2 --out artifacts/runs/vits-h200            # here

The device tool returns at most 16 MiB a file, so the ViT-S's 87 MB of fp32 weights travel as fp16 pieces. The run
there trained on a 224-px copy whose split was carried from ``--like`` (``scripts/carry_split.py``): ``unpack`` gives
the run ``--like``'s split.json and data fields, and puts the rows of its validation logits (the trainer's, every
epoch) in ``--like``'s order of the same scans, matched by file name, so that ``brisc-export`` and
``scripts/ensemble_epochs.py`` read it like a run trained here.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

KIND = "vit"
PIECE = 15 * 2**20  # bytes: under the device tool's 16 MiB a file
# The run's data, as config.json records it: taken from --like, the same scans at full size on this machine.
DATA_FIELDS = ("data", "layout", "split_seed", "val_fraction", "split_method", "split_groups", "train_images",
               "val_images", "test_images", "dropped_duplicates")


def pack(run: Path, out: Path) -> list[Path]:
    """``run``'s best weights as fp16 safetensors, cut into pieces ``out/<run name>.fp16.partNN``."""
    from safetensors.torch import load_file, save_file

    weights = {k: v.half() if v.is_floating_point() else v
               for k, v in load_file(str(run / KIND / "model.safetensors")).items()}
    with tempfile.TemporaryDirectory() as tmp:
        save_file(weights, f"{tmp}/w")
        data = Path(f"{tmp}/w").read_bytes()
    out.mkdir(parents=True, exist_ok=True)
    pieces = [out / f"{run.name}.fp16.part{i:02d}" for i in range(-(-len(data) // PIECE))]
    for i, p in enumerate(pieces):
        p.write_bytes(data[i * PIECE:(i + 1) * PIECE])
    return pieces


def unpack(run: Path, weights: str, like: Path, out: Path) -> Path:
    """A run folder ``out`` from ``run`` (as trained on the copy), its fp16 pieces ``weights.partNN`` and ``like``'s
    split; refuses an ``out`` that exists and validation scans that are not ``like``'s."""
    from safetensors.torch import load, save_file

    if out.exists():
        raise SystemExit(f"gpu_weights: {out} exists; choose another --out")
    split, like_split = (json.loads((d / "split.json").read_text()) for d in (run, like))
    names = [Path(p).name for p in split["val"]]
    where = {n: i for i, n in enumerate(names)}
    wanted = [Path(p).name for p in like_split["val"]]
    if sorted(names) != sorted(wanted):
        raise SystemExit(f"gpu_weights: {run}'s {len(names)} validation scans are not {like}'s {len(wanted)}; "
                         "carry the split with scripts/carry_split.py before training")
    order = np.array([where[n] for n in wanted])
    pieces = sorted(Path(weights).parent.glob(Path(weights).name + ".part*"))
    if not pieces:
        raise SystemExit(f"gpu_weights: no {weights}.partNN pieces")
    state = {k: v.float() if v.is_floating_point() else v
             for k, v in load(b"".join(p.read_bytes() for p in pieces)).items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # written whole, then moved into place
        new = Path(tmp) / out.name
        shutil.copytree(run, new, ignore=shutil.ignore_patterns("*.safetensors", "*.pt"))
        shutil.copy(like / "split.json", new / "split.json")
        config = json.loads((run / KIND / "config.json").read_text())
        like_config = json.loads((like / KIND / "config.json").read_text())
        config |= {k: like_config[k] for k in DATA_FIELDS if k in like_config} | {"name": out.name}
        (new / KIND / "config.json").write_text(json.dumps(config, indent=2))
        for name in ("val_logits.npy", "val_logits_mirror.npy"):
            if (run / KIND / name).is_file():
                np.save(new / KIND / name, np.load(run / KIND / name)[:, order])  # [E, N, C] in like's order
        save_file(state, str(new / KIND / "model.safetensors"))
        new.rename(out)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("pack", help="there: the run's weights as fp16 pieces")
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    u = sub.add_parser("unpack", help="here: a local run folder")
    u.add_argument("--run", type=Path, required=True, help="the run folder as trained there (from results.tgz)")
    u.add_argument("--weights", required=True, help="the pieces' common prefix, e.g. FILES/vits-s0.fp16")
    u.add_argument("--like", type=Path, required=True, help="a local run of the same split (the one carried there)")
    u.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    if a.verb == "pack":
        print("\n".join(map(str, pack(a.run, a.out))))
    else:
        print(unpack(a.run, a.weights, a.like, a.out), file=sys.stderr)
