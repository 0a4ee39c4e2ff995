"""Batch classification of folders of scans: inputs -> decode pool -> one session -> rows, heatmaps, gallery.

Data flows one way: file -> shared loader -> session -> probabilities + map -> files under --out.
Rows are appended and flushed after every batch, so a crash loses at most the batch in flight;
``resume`` skips every item already in predictions.jsonl, keyed by ``item_key`` (the writer's own
naming function), so a killed run rerun ends with every item exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from brisc.data import canonical_class, load_mask, parse_brisc_name
from brisc.fsio import atomic_path, write_json_atomic
from brisc.imageio import DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageLoadError, decode, dicom_frames, is_dicom, load
from brisc.inference.heatmap import JPEG_QUALITY, OVERLAY_MAX, THUMB_MAX, fit, occlusion_maps, overlay, panel
from brisc.inference.session import InferenceError, ModelSession
from brisc.faithfulness import auc, perturbation_curves
from brisc.maps import cls_map, resize_map
from brisc.metrics import classification_metrics, energy_in_mask, pointing_chance, pointing_game



@dataclass(frozen=True)
class Item:
    path: Path  # the file on disk
    rel: str  # relative to the input root given on the command line (posix separators)
    frame: int | None = None  # DICOM frame, for multi-frame files

    @property
    def key(self) -> str:
        return item_key(self.rel, self.frame)


def item_key(rel: str, frame: int | None) -> str:
    """The one naming function: rows, resume and output paths all derive from it."""
    return rel if frame is None else f"{rel}#frame{frame:04d}"


@dataclass
class Collected:
    items: list[Item] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)
    skipped_non_images: int = 0


def _looks_like_image(p: Path) -> bool:
    suf = p.suffix.lower()
    return suf in IMAGE_SUFFIXES or suf in DICOM_SUFFIXES or (suf == "" and is_dicom(p))


def common_root(inputs: list[str | os.PathLike]) -> str:
    """The deepest folder holding every input (a folder input counts as itself, a file as its folder)."""
    bases = [os.path.abspath(p) if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in inputs]
    return os.path.commonpath(bases) if bases else os.getcwd()


def collect(inputs: list[str | os.PathLike], *, recursive: bool = True, skip: Path | None = None) -> Collected:
    """Expand files and folders into items (one per DICOM frame). Non-images are counted and skipped;
    broken links, looping links, unreadable entries and unreadable DICOM headers become error rows.

    Paths are relative to the deepest folder that holds every input (the input itself for one folder), so
    the same file name under two inputs stays two names ("a/x.jpg", "b/x.jpg"). ``skip`` (the --out folder)
    and any other brisc-infer output folder are never read as input."""
    from brisc.inference.outdir import is_brisc_output

    col = Collected()
    seen: set[str] = set()
    skip_resolved = skip.resolve() if skip is not None else None

    def skipped(d: Path) -> bool:
        return (skip_resolved is not None and d.resolve() == skip_resolved) or is_brisc_output(d)

    def add(path: Path, rel: str) -> None:
        if rel in seen:  # the same relative name under two inputs: keep both, distinguishable
            n = 2
            while f"{rel}~{n}" in seen:
                n += 1
            rel = f"{rel}~{n}"
        seen.add(rel)
        try:
            st = path.stat()
        except OSError as e:
            col.errors.append((rel, f"cannot stat ({'symlink loop or broken link' if path.is_symlink() else e.strerror})"))
            return
        if not stat.S_ISREG(st.st_mode):
            if _looks_like_image(path):
                col.errors.append((rel, "not a regular file"))
            else:
                col.skipped_non_images += 1
            return
        if not os.access(path, os.R_OK):
            col.errors.append((rel, "permission denied"))
            return
        if not _looks_like_image(path):
            col.skipped_non_images += 1
            return
        if path.suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
            try:
                n = dicom_frames(path)
            except ImageLoadError as e:
                col.errors.append((rel, e.reason))
                return
            if n > 1:
                col.items.extend(Item(path, rel, k) for k in range(n))
                return
        col.items.append(Item(path, rel))

    base = common_root(list(inputs))

    def rel(p: str | os.PathLike) -> str:
        return Path(os.path.relpath(os.path.abspath(p), base)).as_posix()

    for inp in inputs:
        root = Path(inp)
        if root.is_dir():
            if skipped(root):
                continue
            walker = os.walk(root, onerror=lambda e: col.errors.append((rel(e.filename), f"cannot list folder ({e.strerror})")))
            for dirpath, dirnames, filenames in walker:
                dirnames[:] = [] if not recursive else sorted(d for d in dirnames if not skipped(Path(dirpath) / d))
                for name in sorted(filenames):
                    add(Path(dirpath) / name, rel(Path(dirpath) / name))
        elif root.exists() or root.is_symlink():
            add(root, rel(root))
        else:
            col.errors.append((str(inp), "no such file or folder"))
    return col


def output_path(out: Path, sub: str, rel: str, suffix: str) -> Path:
    """``out/sub/<rel><suffix>``, guaranteed to stay inside ``out``."""
    parts = [p for p in Path(rel).parts if p not in ("", ".", "..", "/")]
    p = out.joinpath(sub, *parts[:-1], (parts[-1] if parts else "_") + suffix)
    if not p.resolve().is_relative_to(out.resolve()):
        raise ValueError(f"{rel}: output path would leave --out")
    return p


def _atomic_save(img, path: Path, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt, **kw)


def _atomic_npy(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr)


def ground_truth(item: Item) -> str | None:
    """From a BRISC file name, else from the parent folder's name (any class alias)."""
    parsed = parse_brisc_name(item.path.name)
    if parsed:
        return parsed.label
    return canonical_class(item.path.parent.name)


@dataclass(frozen=True, kw_only=True)
class InferOptions:
    inputs: tuple[str, ...]
    out: Path = Path("brisc-out")
    heatmaps: bool = False
    explain: str = "auto"  # auto | rollout | cls | occlusion
    masks: Path | None = None
    batch_size: int = 32
    recursive: bool = True
    resume: bool = False
    overwrite: bool = False
    panels: bool = False  # with heatmaps: also the side-by-side panel PNG (~150 KB a scan)
    save_maps: bool = False  # with heatmaps: also the raw 14x14 map as .npy
    cmap: str = "viridis"
    alpha: float = 0.6  # the overlay's opacity at the map's peak (it fades to clear where the map is low)
    workers: int = 2  # decode threads (Pillow releases the GIL while decoding)
    faithfulness: int = 100  # with masks: deletion/insertion curves for at most this many scans (29 passes each)


ROW_FIELDS = ["path", "frame", "predicted", "probability", *(f"p_{c}" for c in ("glioma", "meningioma", "no_tumor", "pituitary")),
              "true_label", "correct", "explain", "pointing_hit", "pointing_chance", "energy_in_mask", "mask_area", "deletion_auc",
              "insertion_auc", "heatmap", "thumbnail", "panel", "map",
              "model", "model_sha256", "provider", "input_sha256", "time"]


def explain_method(opts: InferOptions, sess: ModelSession) -> str | None:
    """Which map to make (rollout | saliency | cls | occlusion); None when neither --heatmaps nor --masks asks."""
    if not opts.heatmaps and opts.masks is None:
        return None
    m = opts.explain
    if m == "auto":  # the graph's recommended map, as its sidecar names it (e.g. rollout, cls:layer=2, saliency)
        return sess.meta.get("heatmap") or ("rollout" if "rollout" in sess.output_names else "saliency")
    need = {"rollout": "rollout", "cls": "attentions"}.get(m)
    if need and need not in sess.output_names:
        raise InferenceError(f"--explain {m} needs the '{need}' output, which {sess.name} "
                             f"({sess.meta.get('model_kind')}) does not have; use --explain auto or occlusion")
    return m


class Writer:
    """predictions.jsonl (the record), predictions.csv (the same rows as a table) and errors.csv, appended
    and flushed per batch. A kill at any moment loses at most the batch in flight: resuming reads the
    valid rows, cuts only a torn last line, and appends; the tables are rewritten whole (atomically) at
    start and at close, never truncated in place."""

    def __init__(self, out: Path, *, resume: bool):
        self.out = out
        self.done: dict[str, dict] = {}
        jl = out / "predictions.jsonl"
        if resume and jl.exists():
            self._read(jl)
        else:
            with atomic_path(jl) as tmp:
                tmp.write_bytes(b"")
        self._rewrite(record=False)
        with atomic_path(out / "errors.csv") as tmp:  # this run's errors: failed files are retried
            tmp.write_text("path,reason\n", encoding="utf-8")
        self.jsonl = open(jl, "a", encoding="utf-8")
        self.csv_file = open(out / "predictions.csv", "a", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=ROW_FIELDS)
        self.err_file = open(out / "errors.csv", "a", newline="", encoding="utf-8")
        self.err = csv.writer(self.err_file)

    def _read(self, jl: Path) -> None:
        data = jl.read_bytes()
        end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # the torn last line of a killed run
            end += len(line)
            try:
                row = json.loads(line)
                self.done[item_key(row["path"], row["frame"])] = row
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
        if end < len(data):
            os.truncate(jl, end)

    def _csv_row(self, r: dict) -> dict:
        return {k: r.get(k) for k in ROW_FIELDS} | {f"p_{c}": r["probabilities"][c] for c in r["probabilities"]}

    def _rewrite(self, *, record: bool) -> None:
        """predictions.csv (and, with ``record``, predictions.jsonl) written whole from the rows kept."""
        if record:
            with atomic_path(self.out / "predictions.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.done.values())
        with atomic_path(self.out / "predictions.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=ROW_FIELDS)
            w.writeheader()
            w.writerows(self._csv_row(r) for r in self.done.values())

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.jsonl.write(json.dumps(r, ensure_ascii=False) + "\n")
            self.csv.writerow(self._csv_row(r))
            self.done[item_key(r["path"], r["frame"])] = r
        self.flush()

    def error(self, rel: str, reason: str) -> None:
        self.err.writerow([rel, reason])
        self.err_file.flush()

    def flush(self) -> None:
        for f in (self.jsonl, self.csv_file):
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        """Close, then rewrite the tables with one row per item (a redone item keeps its newest row)."""
        for f in (self.jsonl, self.csv_file, self.err_file):
            f.close()
        self._rewrite(record=True)


@dataclass
class Decoded:
    item: Item
    x: np.ndarray | None = None
    display: object = None  # PIL image of the scan for overlays
    sha256: str | None = None
    error: str | None = None


def _decode(item: Item, prep, want_display: bool) -> Decoded:
    try:
        data_hash = hashlib.sha256(item.path.read_bytes()).hexdigest()
        frame = item.frame or 0
        x = load(item.path, frame=frame, prep=prep)
        disp = None
        if want_display:
            disp = decode(item.path, frame=frame, size=None)
            disp = fit(disp, OVERLAY_MAX)
        return Decoded(item, x, disp, data_hash)
    except ImageLoadError as e:
        return Decoded(item, error=e.reason)
    except OSError as e:
        return Decoded(item, error=f"cannot read ({e.strerror or e})")
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not end the run
        return Decoded(item, error=f"unexpected decode failure ({type(e).__name__}: {e})")


def prefetch(items: list[Item], fn, *, workers: int, depth: int):
    """Yield fn(item) in order, with at most ``depth`` decodes in flight (memory stays flat)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        queue: deque = deque()
        it = iter(items)
        for item in it:
            queue.append(pool.submit(fn, item))
            if len(queue) >= depth:
                break
        while queue:
            yield queue.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                queue.append(pool.submit(fn, nxt))


def heatmap_paths(out: Path, it: Item) -> dict[str, Path]:
    """Where one scan's heatmap files go: overlay (JPEG), thumbnail, panel and raw map."""
    suffix = "" if it.frame is None else f".frame{it.frame:04d}"
    return {"overlay": output_path(out, "heatmaps", it.rel, suffix + ".jpg"),
            "thumbnail": output_path(out, "thumbnails", it.rel, suffix + ".jpg"),
            "panel": output_path(out, "heatmaps", it.rel, suffix + ".panel.png"),
            "map": output_path(out, "heatmaps", it.rel, suffix + ".npy")}


def _render(out: Path, it: Item, display, m: np.ndarray, row: dict, method: str, opts: "InferOptions",
            mask: np.ndarray | None = None):
    """Write one scan's overlay and thumbnail (and panel, raw map when asked); sets row['heatmap'] and
    row['thumbnail']. -> None or (key, error)."""
    try:
        paths = heatmap_paths(out, it)
        ov = overlay(display, m, cmap=opts.cmap, alpha=opts.alpha)
        _atomic_save(ov, paths["overlay"], "JPEG", quality=JPEG_QUALITY)
        _atomic_save(fit(ov, THUMB_MAX), paths["thumbnail"], "JPEG", quality=80)
        if opts.panels:
            pn = panel(display, ov, label=row["predicted"], probability=row["probability"], method=method,
                       truth=row["true_label"], mask=mask, cmap=opts.cmap)
            _atomic_save(pn, paths["panel"], "PNG", compress_level=1)
        if opts.save_maps:
            _atomic_npy(np.asarray(m, np.float32), paths["map"])
        rel = {k: p.relative_to(out).as_posix() for k, p in paths.items()}
        row.update(heatmap=rel["overlay"], thumbnail=rel["thumbnail"], panel=rel["panel"] if opts.panels else None,
                   map=rel["map"] if opts.save_maps else None)
        return None
    except (OSError, ValueError) as e:
        row.update(heatmap=None, thumbnail=None, panel=None, map=None)
        return (it.key, f"heatmap not written ({e})")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: the batches already computed are written, then the run stops (exit 128 + signum)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def check_inputs(inputs: tuple[str, ...], out: Path) -> None:
    """Every input exists and none lies inside --out (brisc's outputs are never read as input)."""
    for inp in inputs:
        p = Path(inp)
        if not (p.exists() or p.is_symlink()):
            raise InferenceError(f"{inp}: no such file or folder")
        if out.exists() and p.resolve().is_relative_to(out.resolve()):
            raise InferenceError(f"{inp} is inside --out {out}: brisc-infer never reads its own outputs as input")


def run_inference(opts: InferOptions, sess: ModelSession, *, progress: bool = True, log=print) -> dict:
    """Classify every item; returns summary.json's content (also written). Refusals (InferenceError) touch nothing."""
    from brisc.inference.outdir import OutLock, check_out

    check_out(opts.out, resume=opts.resume, overwrite=opts.overwrite)
    check_inputs(opts.inputs, opts.out)
    method = explain_method(opts, sess)
    col = collect(list(opts.inputs), recursive=opts.recursive, skip=opts.out)
    if not col.items and not col.errors:
        raise InferenceError(f"no images found under {', '.join(opts.inputs)}"
                             + (f" ({col.skipped_non_images} other files skipped)" if col.skipped_non_images else ""))
    with OutLock(opts.out):
        return BatchRun(opts, sess, method, col).run(progress=progress)


class BatchRun:
    """One brisc-infer run in a claimed --out: decode -> session -> rows and heatmaps, batch by batch.

    Heatmaps are drawn and PNG-encoded on their own threads (zlib releases the GIL) while the next batch
    runs; a batch's rows are written once its heatmaps are on disk, so a row never names a missing file
    and a heatmap never lacks its row."""

    def __init__(self, opts: InferOptions, sess: ModelSession, method: str | None, col: Collected):
        self.opts, self.sess, self.method, self.col = opts, sess, method, col
        self.out = opts.out
        self.writer = Writer(opts.out, resume=opts.resume)
        for rel, reason in col.errors:
            self.writer.error(rel, reason)
        self.failures = len(col.errors)
        self.todo = [it for it in col.items if self._needs_work(self.writer.done.get(it.key))]
        self.pending: list[tuple[list[dict], list]] = []
        self.model_seconds, self.new = 0.0, 0
        self.faithfulness_left = opts.faithfulness if opts.masks is not None else 0
        self.render_pool = ThreadPoolExecutor(max_workers=max(1, opts.workers))

    def _needs_work(self, row: dict | None) -> bool:
        """Not classified yet, or classified without the heatmap this run asks for (resume with --heatmaps added)."""
        return row is None or (self.opts.heatmaps and self.method is not None and not row.get("heatmap"))

    def run(self, *, progress: bool) -> dict:
        from tqdm import tqdm

        t0 = time.perf_counter()
        bar = tqdm(total=len(self.todo), disable=not progress, unit="img", desc="brisc-infer")
        want_display = self.opts.heatmaps and self.method is not None
        batch: list[Decoded] = []
        interrupted = None
        try:
            for d in prefetch(self.todo, lambda i: _decode(i, self.sess.prep, want_display), workers=self.opts.workers,
                              depth=2 * self.opts.batch_size):
                if d.error:
                    self.failures += 1
                    self.writer.error(d.item.key, d.error)
                    bar.update(1)
                    continue
                batch.append(d)
                if len(batch) >= self.opts.batch_size:
                    self._run_batch(batch)
                    bar.update(len(batch))
                    batch = []
            self._run_batch(batch)
        except KeyboardInterrupt as e:  # the batch being decoded is dropped; computed ones are written below
            interrupted = e
        finally:
            try:
                self._finish(keep=0)
            finally:
                self.render_pool.shutdown(wait=True)
                bar.close()
                self.writer.close()
        summary = self._summary(time.perf_counter() - t0, interrupted)
        if interrupted is not None:
            raise interrupted
        return summary

    def _run_batch(self, batch: list[Decoded]) -> None:
        if not batch:
            return
        x = np.stack([d.x for d in batch])
        t = time.perf_counter()
        res = self.sess.run(x)
        self.model_seconds += time.perf_counter() - t
        probs = res["probabilities"]
        pred = probs.argmax(1)
        maps = self._maps(res, x, pred, probs)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows, renders = [], []
        for k, d in enumerate(batch):
            row = self._row(d, probs[k], now)
            mask = None
            if maps is not None and self.opts.masks is not None:
                mask = self._score(row, d.item, x[k], maps[k], int(pred[k]))
            if maps is not None and self.opts.heatmaps:
                row["heatmap"] = "pending"
                renders.append(self.render_pool.submit(_render, self.out, d.item, d.display, maps[k], row, self.method,
                                                       self.opts, mask))
            rows.append(row)
        self.pending.append((rows, renders))
        self.new += len(rows)
        self._finish(keep=1)  # the previous batch's heatmaps were drawn while this batch decoded and ran

    def _maps(self, res: dict, x: np.ndarray, pred: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
        m = self.method
        if m is None:
            return None
        if self.opts.explain == "auto":
            return res["heatmap"]  # the graph's recommended map
        if m == "rollout":
            return res["rollout"]
        if m == "cls":
            return cls_map(res["attentions"]).astype(np.float32)  # last layer, mean over heads
        return occlusion_maps(self._predict, x, pred, probs, batch_size=self.opts.batch_size)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.sess.run(images, ["probabilities"])["probabilities"]

    def _row(self, d: Decoded, p: np.ndarray, now: str) -> dict:
        classes, it = self.sess.classes, d.item
        k = int(p.argmax())
        truth = ground_truth(it)
        return {"path": it.rel, "frame": it.frame, "predicted": classes[k], "probability": float(p[k]),
                "probabilities": {c: float(p[j]) for j, c in enumerate(classes)},
                "true_label": truth, "correct": (truth == classes[k]) if truth else None, "explain": self.method,
                "pointing_hit": None, "pointing_chance": None, "energy_in_mask": None, "mask_area": None, "deletion_auc": None,
                "insertion_auc": None, "heatmap": None, "thumbnail": None, "panel": None, "map": None,
                "model": self.sess.name,
                "model_sha256": self.sess.meta["model_sha256"], "provider": self.sess.provider,
                "input_sha256": d.sha256, "time": now}

    def _score(self, row: dict, it: Item, x: np.ndarray, m: np.ndarray, pred: int) -> np.ndarray | None:
        """Pointing game and energy against the scan's mask; deletion/insertion AUC for the first
        ``--faithfulness`` scans with a mask (29 extra passes each). Returns the mask (None without one)."""
        mp = self.opts.masks / (Path(it.rel).stem + ".png")
        if not mp.is_file():
            return None
        mask = load_mask(mp)
        up = resize_map(m, mask.shape)
        row["pointing_hit"] = pointing_game(up, mask)
        row["energy_in_mask"] = energy_in_mask(up, mask)
        row["mask_area"] = float(mask.mean())
        row["pointing_chance"] = pointing_chance(mask)
        if row["pointing_hit"] is not None and self.faithfulness_left > 0:
            self.faithfulness_left -= 1
            c = perturbation_curves(self._predict, x[None], m[None], classes=np.array([pred]))
            row["deletion_auc"] = float(auc(c["deletion"])[0])
            row["insertion_auc"] = float(auc(c["insertion"])[0])
        return mask

    def _finish(self, keep: int) -> None:
        """Write the rows of every pending batch but the last ``keep``, once their heatmaps are on disk.
        A batch leaves ``pending`` only after its rows are written, so an interruption cannot lose it."""
        while len(self.pending) > keep:
            rows, renders = self.pending[0]
            for f in renders:
                error = f.result()
                if error:
                    self.failures += 1
                    self.writer.error(*error)
            self.writer.add(rows)
            self.pending.pop(0)

    def _summary(self, elapsed: float, interrupted: KeyboardInterrupt | None) -> dict:
        rows = list(self.writer.done.values())
        summary = summarise(rows, sess=self.sess, failures=self.failures, skipped=self.col.skipped_non_images,
                            new=self.new, elapsed=elapsed, model_seconds=self.model_seconds)
        if interrupted is not None:
            summary["interrupted"] = True
        write_json_atomic(self.out / "summary.json", summary)
        if self.opts.heatmaps:
            from brisc.inference.gallery import write_gallery

            write_gallery(self.out, rows, self.sess.meta, summary)
        return summary


def summarise(rows: list[dict], *, sess: ModelSession, failures: int, skipped: int, new: int,
              elapsed: float, model_seconds: float) -> dict:
    classes = sess.classes
    counts = Counter(r["predicted"] for r in rows)
    s = {
        "model": sess.name, "model_sha256": sess.meta["model_sha256"], "model_kind": sess.meta.get("model_kind"),
        "provider": sess.provider, "classified": len(rows), "classified_this_run": new, "failures": failures,
        "skipped_non_images": skipped, "predicted_per_class": {c: counts.get(c, 0) for c in classes},
        "seconds": round(elapsed, 3), "img_per_s": round(new / elapsed, 2) if elapsed > 0 and new else None,
        "model_img_per_s": round(new / model_seconds, 2) if model_seconds > 0 else None,
        "note": "research use only: not a medical device",
    }
    labelled = [r for r in rows if r["true_label"] in classes]
    if labelled:
        s["ground_truth"] = ground_truth_summary(labelled, classes)
    scored = [r for r in rows if r.get("pointing_hit") is not None]
    if scored:
        s["masks"] = mask_summary(scored)
    return s


def ground_truth_summary(labelled: list[dict], classes: list[str]) -> dict:
    """Accuracy, macro-F1 over the classes that occur in the ground truth (a class with no scans has no
    meaningful F1), and the confusion matrix with its axes named."""
    y = np.array([classes.index(r["true_label"]) for r in labelled])
    p = np.array([[r["probabilities"][c] for c in classes] for r in labelled])
    m = classification_metrics(np.log(np.clip(p, 1e-12, 1)), y)  # log-probabilities: same argmax and ranks
    present = [c for c in classes if m["per_class"][c]["support"] > 0]
    return {"n": len(labelled), "accuracy": m["accuracy"],
            "macro_f1": float(np.mean([m["per_class"][c]["f1"] for c in present])), "macro_f1_classes": present,
            "classes": classes, "confusion": m["confusion"],
            "confusion_axes": "rows: true class, columns: predicted class, both in the order of 'classes'"}


def mask_summary(scored: list[dict]) -> dict:
    """The maps against the tumour masks, with the pointing game's chance level and what it means."""
    en = [r["energy_in_mask"] for r in scored if r["energy_in_mask"] is not None]
    chance = [r["pointing_chance"] for r in scored if r.get("pointing_chance") is not None]
    faithful = [r for r in scored if r.get("deletion_auc") is not None]
    m = {"n": len(scored), "pointing_game": float(np.mean([r["pointing_hit"] for r in scored])),
         "pointing_chance": float(np.mean(chance)) if chance else None,
         "energy_in_mask": float(np.mean(en)) if en else None,
         "mask_area_fraction": float(np.mean([r["mask_area"] for r in scored])),
         "faithfulness_n": len(faithful),
         "deletion_auc": float(np.mean([r["deletion_auc"] for r in faithful])) if faithful else None,
         "insertion_auc": float(np.mean([r["insertion_auc"] for r in faithful])) if faithful else None}
    m["explanation"] = (
        f"The map's brightest point fell on the tumour (within 15 px of its mask) in {m['pointing_game']:.0%} of "
        f"{m['n']} scans with a mask; a point picked at random would land there in "
        f"{m['pointing_chance'] or 0:.0%}. {m['energy_in_mask'] or 0:.0%} of the map's mass lay inside the mask, "
        f"which covers {m['mask_area_fraction']:.1%} of a scan. This says where the model looked, not that it "
        f"looked for the right reason.")
    return m
