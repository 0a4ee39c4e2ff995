"""What brisc-infer reads: inputs expanded into items (one per scan or DICOM frame), decoded ahead of the model.

Every item is named once (``item_key``); rows, resume and output paths all derive from that name.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from brisc.data import canonical_class, parse_brisc_name
from brisc.imageio import (DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageLoadError, decode, dicom_frames, is_dicom,
                           load_keeping_image)
from brisc.inference.heatmap import OVERLAY_MAX, PANEL_MAX, fit
from brisc.inference.session import InferenceError


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


def ground_truth(item: Item) -> str | None:
    """From a BRISC file name, else from the parent folder's name (any class alias)."""
    parsed = parse_brisc_name(item.path.name)
    if parsed:
        return parsed.label
    return canonical_class(item.path.parent.name)


def check_inputs(inputs: tuple[str, ...], out: Path) -> None:
    """Every input exists and none lies inside --out (brisc's outputs are never read as input)."""
    for inp in inputs:
        p = Path(inp)
        if not (p.exists() or p.is_symlink()):
            raise InferenceError(f"{inp}: no such file or folder")
        if out.exists() and p.resolve().is_relative_to(out.resolve()):
            raise InferenceError(f"{inp} is inside --out {out}: brisc-infer never reads its own outputs as input")


@dataclass
class Decoded:
    item: Item
    x: np.ndarray | None = None
    display: object = None  # PIL image of the scan for overlays
    sha256: str | None = None
    error: str | None = None


def decode_item(item: Item, prep, display: str | None = None) -> Decoded:
    """The model input, and with ``display`` the scan to draw on: "overlay" reuses the decode the model input
    came from (no second decode), "panel" decodes the file at full resolution for the larger panels."""
    try:
        data_hash = hashlib.sha256(item.path.read_bytes()).hexdigest()
        frame = item.frame or 0
        x, img = load_keeping_image(item.path, frame=frame, prep=prep)
        if x.min() == x.max():  # a model answers anything, confidently, for an empty frame: refuse it by name
            return Decoded(item, error="blank image (every pixel the same value): nothing to classify")
        disp = None
        if display == "overlay":
            disp = fit(img, OVERLAY_MAX)
        elif display == "panel":
            disp = fit(decode(item.path, frame=frame, size=None), PANEL_MAX)
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


