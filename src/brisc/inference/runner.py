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
from brisc.inference.heatmap import occlusion_maps, overlay, panel
from brisc.inference.session import InferenceError, ModelSession
from brisc.maps import cls_map, resize_map
from brisc.metrics import classification_metrics, energy_in_mask, pointing_game

DISPLAY_MAX = 1024  # overlays are drawn on the scan, downscaled to at most this many pixels a side


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


def collect(inputs: list[str | os.PathLike], *, recursive: bool = True) -> Collected:
    """Expand files and folders into items (one per DICOM frame). Non-images are counted and skipped;
    broken links, looping links, unreadable entries and unreadable DICOM headers become error rows."""
    col = Collected()
    seen: set[str] = set()

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

    for inp in inputs:
        root = Path(inp)
        if root.is_dir():
            walker = os.walk(root, onerror=lambda e, r=root: col.errors.append(
                (Path(os.path.relpath(e.filename, r)).as_posix(), f"cannot list folder ({e.strerror})")))
            for dirpath, dirnames, filenames in walker:
                dirnames.sort()
                if not recursive:
                    dirnames.clear()
                for name in sorted(filenames):
                    p = Path(dirpath) / name
                    add(p, p.relative_to(root).as_posix())
        elif root.exists() or root.is_symlink():
            add(root, root.name)
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


def _atomic_save(img, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", **kw)


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
    cmap: str = "viridis"
    alpha: float = 0.4
    workers: int = 2  # decode threads (Pillow releases the GIL while decoding)


ROW_FIELDS = ["path", "frame", "predicted", "probability", *(f"p_{c}" for c in ("glioma", "meningioma", "no_tumor", "pituitary")),
              "true_label", "correct", "explain", "pointing_hit", "energy_in_mask", "mask_area", "heatmap",
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
    """predictions.csv / predictions.jsonl / errors.csv, appended and flushed per batch."""

    def __init__(self, out: Path, *, resume: bool):
        self.out = out
        self.done: dict[str, dict] = {}
        jl = out / "predictions.jsonl"
        if resume and jl.exists():
            for line in jl.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the torn last line of a killed run
                self.done[item_key(row["path"], row["frame"])] = row
        # Rewrite both tables from the valid rows (drops a torn line), then append.
        rows = list(self.done.values())
        self.jsonl = open(jl, "w", encoding="utf-8")
        self.csv_file = open(out / "predictions.csv", "w", newline="", encoding="utf-8")
        self.csv = csv.DictWriter(self.csv_file, fieldnames=ROW_FIELDS)
        self.csv.writeheader()
        self.err_file = open(out / "errors.csv", "w", newline="", encoding="utf-8")
        self.err = csv.writer(self.err_file)
        self.err.writerow(["path", "reason"])
        self.add(rows)

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.jsonl.write(json.dumps(r, ensure_ascii=False) + "\n")
            self.csv.writerow({k: r.get(k) for k in ROW_FIELDS} | {f"p_{c}": r["probabilities"][c] for c in r["probabilities"]})
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
        for f in (self.jsonl, self.csv_file, self.err_file):
            f.close()


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
            disp.thumbnail((DISPLAY_MAX, DISPLAY_MAX))
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


def _render(out: Path, it: Item, display, m: np.ndarray, row: dict, method: str, opts: "InferOptions"):
    """Write the overlay, panel and raw map of one scan; sets row['heatmap']. -> None or (path, error)."""
    suffix = "" if it.frame is None else f".frame{it.frame:04d}"
    try:
        png = output_path(out, "heatmaps", it.rel, suffix + ".png")
        ov = overlay(display, m, cmap=opts.cmap, alpha=opts.alpha)
        _atomic_save(ov, png, compress_level=1)
        _atomic_save(panel(display, ov, label=row["predicted"], probability=row["probability"], method=method,
                           cmap=opts.cmap), output_path(out, "heatmaps", it.rel, suffix + ".panel.png"), compress_level=1)
        _atomic_npy(np.asarray(m, np.float32), output_path(out, "heatmaps", it.rel, suffix + ".npy"))
        row["heatmap"] = png.relative_to(out).as_posix()
        return None
    except (OSError, ValueError) as e:
        row["heatmap"] = None
        return (it.key, f"heatmap not written ({e})")


def run_inference(opts: InferOptions, sess: ModelSession, *, progress: bool = True, log=print) -> dict:
    """Classify every item; returns summary.json's content (also written)."""
    out = opts.out
    if out.exists() and (out / "predictions.jsonl").exists() and not (opts.resume or opts.overwrite):
        raise InferenceError(f"{out} already holds predictions: pass --resume to continue them or --overwrite to start over")
    method = explain_method(opts, sess)
    out.mkdir(parents=True, exist_ok=True)
    col = collect(list(opts.inputs), recursive=opts.recursive)
    writer = Writer(out, resume=opts.resume and not opts.overwrite)
    for rel, reason in col.errors:
        writer.error(rel, reason)
    todo = [it for it in col.items if it.key not in writer.done]
    classes = sess.classes
    sha = sess.meta["model_sha256"]
    prep = sess.prep
    failures = len(col.errors)
    t0 = time.perf_counter()
    model_seconds = 0.0
    n_new = 0

    from tqdm import tqdm

    bar = tqdm(total=len(todo), disable=not progress, unit="img", desc="brisc-infer")
    batch: list[Decoded] = []
    # Heatmaps are drawn and PNG-encoded on their own threads (zlib releases the GIL) while the next batch
    # runs; a batch's rows are written once its heatmaps are on disk.
    render_pool = ThreadPoolExecutor(max_workers=max(1, opts.workers))
    pending: list[tuple[list[dict], list]] = []

    def finish_pending() -> None:
        while pending:
            rows, renders = pending.pop(0)
            for f in renders:
                error = f.result()
                if error:
                    writer.error(*error)
            writer.add(rows)

    def flush_batch() -> None:
        nonlocal model_seconds, n_new
        if not batch:
            return
        x = np.stack([d.x for d in batch])
        t = time.perf_counter()
        res = sess.run(x)
        model_seconds += time.perf_counter() - t
        probs = res["probabilities"]
        pred = probs.argmax(1)
        maps = None
        if opts.explain == "auto":
            maps = res["heatmap"]  # the graph's recommended map
        elif method == "rollout":
            maps = res["rollout"]
        elif method == "cls":
            maps = cls_map(res["attentions"]).astype(np.float32)  # last layer, mean over heads
        elif method == "occlusion":
            maps = occlusion_maps(lambda b: sess.run(b, ["probabilities"])["probabilities"], x, pred, probs,
                                  batch_size=opts.batch_size)
        rows, renders = [], []
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for k, d in enumerate(batch):
            it = d.item
            truth = ground_truth(it)
            row = {"path": it.rel, "frame": it.frame, "predicted": classes[pred[k]], "probability": float(probs[k, pred[k]]),
                   "probabilities": {c: float(probs[k, j]) for j, c in enumerate(classes)},
                   "true_label": truth, "correct": (truth == classes[pred[k]]) if truth else None,
                   "explain": method,
                   "pointing_hit": None, "energy_in_mask": None, "mask_area": None, "heatmap": None,
                   "model": sess.name, "model_sha256": sha, "provider": sess.provider, "input_sha256": d.sha256, "time": now}
            if maps is not None and opts.masks is not None:
                mp = opts.masks / (Path(it.rel).stem + ".png")
                if mp.is_file():
                    mask = load_mask(mp)
                    up = resize_map(maps[k], mask.shape)
                    row["pointing_hit"] = pointing_game(up, mask)
                    row["energy_in_mask"] = energy_in_mask(up, mask)
                    row["mask_area"] = float(mask.mean())
            if maps is not None and opts.heatmaps:
                row["heatmap"] = "pending"
                renders.append(render_pool.submit(_render, out, it, d.display, maps[k], row, method, opts))
            rows.append(row)
        finish_pending()  # the previous batch's heatmaps were drawn while this batch decoded and ran
        pending.append((rows, renders))
        n_new += len(rows)
        bar.update(len(batch))
        batch.clear()

    want_display = opts.heatmaps and method is not None
    try:
        for d in prefetch(todo, lambda i: _decode(i, prep, want_display), workers=opts.workers, depth=2 * opts.batch_size):
            if d.error:
                failures += 1
                writer.error(d.item.key, d.error)
                bar.update(1)
                continue
            batch.append(d)
            if len(batch) >= opts.batch_size:
                flush_batch()
        flush_batch()
        finish_pending()
    finally:
        render_pool.shutdown(wait=True)
        bar.close()
        writer.close()
    elapsed = time.perf_counter() - t0
    rows = list(writer.done.values())
    summary = summarise(rows, sess=sess, failures=failures, skipped=col.skipped_non_images, new=n_new,
                        elapsed=elapsed, model_seconds=model_seconds)
    write_json_atomic(out / "summary.json", summary)
    if opts.heatmaps:
        from brisc.inference.gallery import write_gallery

        write_gallery(out, rows, sess.meta)
    return summary


def summarise(rows: list[dict], *, sess: ModelSession, failures: int, skipped: int, new: int,
              elapsed: float, model_seconds: float) -> dict:
    classes = sess.classes
    counts = Counter(r["predicted"] for r in rows)
    s = {
        "model": sess.name, "model_sha256": sess.meta["model_sha256"], "model_kind": sess.meta.get("model_kind"),
        "provider": sess.provider, "classified": len(rows), "classified_this_run": new, "failures": failures,
        "skipped_non_images": skipped, "per_class": {c: counts.get(c, 0) for c in classes},
        "seconds": round(elapsed, 3), "img_per_s": round(new / elapsed, 2) if elapsed > 0 and new else None,
        "model_img_per_s": round(new / model_seconds, 2) if model_seconds > 0 else None,
        "note": "research use only: not a medical device",
    }
    labelled = [r for r in rows if r["true_label"] in classes]
    if labelled:
        y = np.array([classes.index(r["true_label"]) for r in labelled])
        p = np.array([[r["probabilities"][c] for c in classes] for r in labelled])
        m = classification_metrics(np.log(np.clip(p, 1e-12, 1)), y)  # log-probabilities: same argmax and ranks
        s["ground_truth"] = {"n": len(labelled), "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                             "confusion": m["confusion"], "classes": classes}
    scored = [r for r in rows if r.get("pointing_hit") is not None]
    if scored:
        en = [r["energy_in_mask"] for r in scored if r["energy_in_mask"] is not None]
        s["masks"] = {"n": len(scored), "pointing_game": float(np.mean([r["pointing_hit"] for r in scored])),
                      "energy_in_mask": float(np.mean(en)) if en else None,
                      "mask_area_fraction": float(np.mean([r["mask_area"] for r in scored]))}
    return s
