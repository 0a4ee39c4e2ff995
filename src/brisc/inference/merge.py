"""``brisc-infer merge SHARD... --out ALL``: the parts of a ``--shard I/N`` run joined into one output folder, as
if one run had classified every file: rows, errors, skipped files, heatmaps, summary and gallery.

Refused in one line, with nothing written: a folder that is not a finished shard, shards of different models,
counts or maps, a part missing or given twice, and a file classified in two parts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from brisc.fsio import atomic_path
from brisc.inference.inputs import item_key
from brisc.inference.options import InferOptions
from brisc.inference.outdir import ERRORS_CSV, SKIPPED_CSV, OutFolder, OutLock, check_out, is_brisc_output, marker
from brisc.inference.outputs import Writer
from brisc.inference.record import publish
from brisc.inference.session import InferenceError
from brisc.inference.summary import summarise
from brisc.sidecar import ModelCard

ROW_FILES = ("heatmap", "panel", "map")  # the row fields that name a file under the folder


def _finished_shard(folder: Path) -> tuple[OutFolder, dict]:
    f = OutFolder(Path(folder))
    if not f.path.is_dir() or not is_brisc_output(f.path):
        raise InferenceError(f"{folder}: not a brisc-infer output folder")
    s = f.summary()
    if not s or s.get("interrupted"):
        raise InferenceError(f"{folder}: the shard did not finish (no complete summary.json): continue it with "
                             "--resume first")
    if "shard" not in s or "model_card" not in s:
        raise InferenceError(f"{folder}: not a shard (made without --shard I/N, or by an older brisc-infer)")
    return f, s


def check_shards(folders: list[Path]) -> list[tuple[OutFolder, dict]]:
    """Every part of one sharded run, once, by the same model with the same maps -> in part order."""
    if not folders:
        raise InferenceError("merge: name the shard folders to join")
    shards = [_finished_shard(p) for p in folders]
    first = shards[0][1]
    count = first["shard"]["count"]
    by_index: dict[int, Path] = {}
    for f, s in shards:
        if s["shard"]["count"] != count:
            raise InferenceError(f"{f.path} is part {s['shard']['index']} of {s['shard']['count']}, "
                                 f"{shards[0][0].path} a part of {count}: these are not one run's shards")
        if s["model_sha256"] != first["model_sha256"]:
            raise InferenceError(f"{f.path} was classified by another model (sha256 {s['model_sha256']}) than "
                                 f"{shards[0][0].path} ({first['model_sha256']})")
        i = s["shard"]["index"]
        if i in by_index:
            raise InferenceError(f"part {i}/{count} is given twice: {by_index[i]} and {f.path}")
        by_index[i] = f.path
    missing = [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]
    if missing:
        raise InferenceError(f"merge: part(s) {', '.join(missing)} missing (given: "
                             f"{', '.join(f'{i}/{count}' for i in sorted(by_index))})")
    return sorted(shards, key=lambda fs: fs[1]["shard"]["index"])


def _copy_into(src: Path, dst: Path) -> None:
    """A heatmap file into the merged folder, published whole (a hard link when the disk allows)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


def merge(folders: list[Path], out: Path, *, overwrite: bool = False) -> dict:
    """Join the shards in ``folders`` into ``out``; -> the merged summary.json (also written)."""
    out = Path(os.path.realpath(out))
    shards = check_shards([Path(p) for p in folders])
    for f, _ in shards:
        if os.path.realpath(f.path) == str(out):
            raise InferenceError(f"{out}: --out is one of the shards; choose a new folder")
    check_out(out, resume=False, overwrite=overwrite)
    rows: dict[str, tuple[dict, OutFolder]] = {}
    for f, _ in shards:
        for r in f.rows():
            key = item_key(r["path"], r["frame"])
            if key in rows:
                raise InferenceError(f"{r['path']} is in two shards: {rows[key][1].path} and {f.path}")
            rows[key] = (r, f)
    card = ModelCard.from_json(shards[0][1]["model_card"])
    first = shards[0][1]
    with OutLock(out, root=marker(shards[0][0].path).get("root", ""), overwrite=overwrite):
        for r, f in rows.values():
            for k in ROW_FILES:
                if r.get(k):
                    _copy_into(f / r[k], out / r[k])
        writer = Writer(out, resume=False)
        errors = [e for f, _ in shards for e in f.table(ERRORS_CSV)]
        skipped = [e for f, _ in shards for e in f.table(SKIPPED_CSV)]
        for rel, reason in errors:
            writer.error(rel, reason)
        writer.skipped(skipped)
        merged = [r for r, _ in rows.values()]
        writer.add(merged)
        writer.close()
        summary = summarise(merged, card=card, model=first["model"], provider=first["provider"],
                            failures=sum(s["failures"] for _, s in shards), skipped=skipped, new=0, elapsed=0.0,
                            model_seconds=0.0, threshold=first["ood"]["threshold"],
                            threshold_source=first["ood"]["threshold_from"],
                            duplicates=max(s.get("duplicates_ignored", 0) for _, s in shards))
        summary["merged_from"] = [{"folder": str(f.path), "shard": s["shard"], "classified": s["classified"],
                                   "failures": s["failures"]} for f, s in shards]
        rule = first.get("volume_rule", {})
        publish(out, merged, card, summary, skipped=skipped, gallery=any(r.get("heatmap") for r in merged),
                rule=(rule.get("slices", InferOptions.volume_slices),
                      rule.get("probability", InferOptions.volume_probability)))
    return summary
