"""What brisc-infer writes: the prediction tables (appended, never truncated) and each scan's heatmap files.

Every file appears under its final name only when complete (``brisc.fsio.atomic_path``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from brisc.fsio import atomic_path, write_npy_atomic
from brisc.inference.heatmap import JPEG_QUALITY, OVERLAY_MAX, fit, overlay, panel
from brisc.inference.inputs import Item, item_key
from brisc.inference.options import InferOptions
from brisc.inference.outdir import (ERRORS_CSV, HEATMAPS, PREDICTIONS_CSV, PREDICTIONS_JSONL, ROW_FIELDS, SKIPPED_CSV,
                                    read_rows)


def output_path(out: Path, sub: str, rel: str, suffix: str) -> Path:
    """``out/sub/<rel><suffix>``, guaranteed to stay inside ``out``."""
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/")]
    p = out.joinpath(sub, *parts[:-1], (parts[-1] if parts else "_") + suffix)
    if not p.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"{rel}: output path would leave --out")
    return p


def _atomic_save(img, path: Path, fmt: str, **kw) -> None:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)  # encoded in memory, written in one call: a third less time than Pillow's writes
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


class Writer:
    """predictions.jsonl (the record), predictions.csv (the same rows as a table) and errors.csv, appended
    and flushed per batch. A kill at any moment loses at most the batch in flight: resuming reads the
    valid rows, cuts only a torn last line, and appends; the tables are rewritten whole (atomically) at
    start and at close, never truncated in place."""

    def __init__(self, out: Path, *, resume: bool):
        self.out = out
        self.done: dict[str, dict] = {}
        jl = out / PREDICTIONS_JSONL
        if resume and jl.exists():
            self._read(jl)
        else:
            with atomic_path(jl) as tmp:
                tmp.write_bytes(b"")
        self._rewrite(record=False)
        with atomic_path(out / ERRORS_CSV) as tmp:  # this run's errors: failed files are retried
            tmp.write_text("path,reason\n", encoding="utf-8")
        self.jsonl = open(jl, "a", encoding="utf-8")
        self.csv_file = open(out / PREDICTIONS_CSV, "a", newline="", encoding="utf-8")
        self.err_file = open(out / ERRORS_CSV, "a", newline="", encoding="utf-8")
        self.err = csv.writer(self.err_file)

    def _read(self, jl: Path) -> None:
        rows, end = read_rows(jl)
        for row in rows:
            self.done[item_key(row["path"], row["frame"])] = row
        if end < jl.stat().st_size:
            os.truncate(jl, end)  # the torn last line of a killed run

    @staticmethod
    def _csv_row(r: dict) -> dict:
        flag = r.get("in_distribution")
        return ({k: r.get(k) for k in ROW_FIELDS} | {f"p_{c}": r["probabilities"][c] for c in r["probabilities"]}
                | {"in_distribution": "" if flag is None else str(bool(flag)).lower(), "path": spreadsheet_safe(r["path"]),
                   "mask": spreadsheet_safe(r.get("mask"))})

    def _rewrite(self, *, record: bool) -> None:
        """predictions.csv (and, with ``record``, predictions.jsonl) written whole from the rows kept."""
        if record:
            with atomic_path(self.out / PREDICTIONS_JSONL) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.done.values())
        with atomic_path(self.out / PREDICTIONS_CSV) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
            w.writeheader()
            w.writerows(self._csv_row(r) for r in self.done.values())

    def add(self, rows: list[dict]) -> None:
        """Append one batch's rows to both tables as one write each; if the disk fills part-way, both files are cut
        back to where the batch began (ftruncate needs no space), so no row is ever torn, and the error goes up."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=ROW_FIELDS).writerows(self._csv_row(r) for r in rows)
        ends = [f.tell() for f in (self.jsonl, self.csv_file)]
        try:
            for f, t in ((self.jsonl, text), (self.csv_file, buf.getvalue())):
                f.write(t)
            self.flush()
        except OSError:
            for f, end in zip((self.jsonl, self.csv_file), ends):
                _cut(f, end)
            raise
        for r in rows:
            self.done[item_key(r["path"], r["frame"])] = r

    def skipped(self, skipped: list[tuple[str, str]]) -> None:
        """skipped.csv: this run's files that are not images (or not regular files, or links into --out), by name."""
        with atomic_path(self.out / SKIPPED_CSV) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["path", "reason"])
            w.writerows([spreadsheet_safe(p), r] for p, r in skipped)

    def error(self, rel: str, reason: str) -> None:
        self.err.writerow([spreadsheet_safe(rel), reason])
        self.err_file.flush()

    def flush(self) -> None:
        for f in (self.jsonl, self.csv_file):
            f.flush()
            os.fsync(f.fileno())

    def close(self, rewrite: bool = True) -> None:
        """Close, then rewrite the tables with one row per item (a redone item keeps its newest row); a run that
        filled the disk keeps the appended tables as they are (whole rows only)."""
        for f in (self.jsonl, self.csv_file, self.err_file):
            try:
                f.close()
            except OSError:  # a full disk fails the final flush of a file already cut back to whole rows
                pass
        if rewrite:
            self._rewrite(record=True)


def _cut(f, end: int) -> None:
    """Drop what a failed write left after ``end`` (the buffer too: closing must not write it again)."""
    try:
        f.flush()
    except OSError:
        pass
    os.ftruncate(f.fileno(), end)
    f.seek(end)


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # OWASP CSV injection: what a spreadsheet may run as a formula


def spreadsheet_safe(text: str | None) -> str | None:
    """A name for a CSV cell: one a spreadsheet would run as a formula gets a leading apostrophe (predictions.jsonl
    keeps the exact name)."""
    return "'" + text if isinstance(text, str) and text.startswith(FORMULA_START) else text


HEATMAP_FORMATS = ("png", "jpg")  # png: a palette PNG, the attention PNG; jpg: the smaller JPEG


def heatmap_paths(out: Path, it: Item, fmt: str = "png") -> dict[str, Path]:
    """Where one scan's heatmap files go: overlay (PNG or JPEG; the gallery shows it scaled down), panel (PNG) and
    raw map."""
    suffix = "" if it.frame is None else f".frame{it.frame:04d}"
    return {"overlay": output_path(out, HEATMAPS, it.stem, f"{suffix}.{fmt}"),
            "panel": output_path(out, HEATMAPS, it.stem, suffix + ".panel.png"),
            "map": output_path(out, HEATMAPS, it.stem, suffix + ".npy")}


def save_overlay(img: Image.Image, path: Path, fmt: str) -> None:
    if fmt == "png":  # 256 colours keep the look of an overlay at a quarter of an RGB PNG's bytes. zlib level 1
        # with run-length matching (Z_RLE): a palette overlay is long runs of one index, so this is the fastest
        # setting measured and 6% smaller than the default matching (the cores are shared with the model).
        _atomic_save(img.quantize(256, method=Image.Quantize.FASTOCTREE), path, "PNG", compress_level=1,
                     compress_type=zlib.Z_RLE)
    else:
        _atomic_save(img, path, "JPEG", quality=JPEG_QUALITY)


def render(out: Path, it: Item, display, m: np.ndarray, row: dict, method: str, opts: InferOptions,
            mask: np.ndarray | None = None):
    """Write one scan's overlay (and panel, raw map when asked): one file a scan by default, since on 2 cores
    creating files costs the model as much as encoding them (docs/benchmarks.md); sets row['heatmap'].
    -> None or (key, error)."""
    try:
        paths = heatmap_paths(out, it, opts.heatmap_format)
        ov = overlay(display, m, cmap=opts.cmap, alpha=opts.alpha)  # full resolution with --panels
        save_overlay(fit(ov, OVERLAY_MAX), paths["overlay"], opts.heatmap_format)
        if opts.panels:
            probs = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])
            pn = panel(display, ov, label=row["predicted"], probability=row["probability"], method=method,
                       truth=row["true_label"], mask=mask, cmap=opts.cmap, in_distribution=row.get("in_distribution"),
                       name=row["path"] + ("" if row["frame"] is None else f" (frame {row['frame']})"),
                       runner_up=probs[1] if len(probs) > 1 else None, pointing_hit=row.get("pointing_hit"),
                       alpha=opts.alpha)
            _atomic_save(pn, paths["panel"], "PNG", compress_level=1)
        if opts.save_maps:
            paths["map"].parent.mkdir(parents=True, exist_ok=True)
            write_npy_atomic(paths["map"], np.asarray(m, np.float32))
        rel = {k: p.relative_to(out).as_posix() for k, p in paths.items()}
        row.update(heatmap=rel["overlay"], panel=rel["panel"] if opts.panels else None,
                   map=rel["map"] if opts.save_maps else None)
        return None
    except (OSError, ValueError) as e:
        row.update(heatmap=None, panel=None, map=None)
        return (it.key, f"heatmap not written ({e})")


