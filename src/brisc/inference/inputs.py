"""What brisc-infer reads: inputs expanded into items (one per scan or DICOM frame), decoded ahead of the model.

Every item is named once (``item_key``); rows, resume and output paths all derive from that name.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from brisc.data import label_from_path
from brisc.fsio import walk_files
from brisc.imageio import (DICOM_SUFFIXES, IMAGE_SUFFIXES, ImageLoadError, decode, image_frames, is_dicom,
                           load_keeping_image, resize, to_array)
from brisc.inference.heatmap import OVERLAY_MAX, PANEL_MAX, fit
from brisc.ood import image_rule
from brisc.inference.session import InferenceError
from brisc.inference.volume_inputs import add_volume, group_series
from brisc.volumes import VolumeError, VolumeSource, is_nifti, nifti_stem


@dataclass(frozen=True)
class Item:
    path: Path  # the file on disk
    rel: str  # relative to the input root given on the command line (posix separators)
    frame: int | None = None  # DICOM frame, TIFF page, GIF/WebP frame or a volume's slice, for files with several
    out_name: str = ""  # what its output files are named after: rel without its extension, unless that collides
    source: VolumeSource | None = None  # a slice of a NIfTI volume or DICOM series (brisc.volumes)
    volume: str | None = None  # the row's volume: the NIfTI file's path, or the series' SeriesInstanceUID

    @property
    def key(self) -> str:
        return item_key(self.rel, self.frame)

    @property
    def stem(self) -> str:
        return self.out_name or self.rel


def item_key(rel: str, frame: int | None) -> str:
    """The one naming function: rows, resume and output paths all derive from it."""
    return rel if frame is None else f"{rel}#frame{frame:04d}"


@dataclass
class Collected:
    items: list[Item] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason): not images, links into --out...
    duplicates: int = 0  # inputs that named a file already listed (by resolved path)
    root: str = ""  # the folder the relative paths start from

    @property
    def skipped_non_images(self) -> int:
        return len(self.skipped)


def text_name(name: str) -> str:
    """A file name as text that any UTF-8 writer takes: bytes that are not UTF-8 (os.fsdecode's surrogates) are
    written as \\xNN, the same for the same file every time."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _suffix_says_image(p: Path) -> bool:
    suf = p.suffix.lower()
    return suf in IMAGE_SUFFIXES or suf in DICOM_SUFFIXES or is_nifti(p)


def common_root(inputs: list[str | os.PathLike]) -> str:
    """The deepest folder holding every input (a folder input counts as itself, a file as its folder)."""
    bases = [os.path.abspath(p) if os.path.isdir(p) else os.path.dirname(os.path.abspath(p)) for p in inputs]
    return os.path.commonpath(bases) if bases else os.getcwd()


def collect(inputs: list[str | os.PathLike], *, recursive: bool = True, skip: Path | None = None,
            root: str | None = None, plane: str = "axial", volume_index: int | None = None) -> Collected:
    """Expand files and folders into items (one per DICOM frame, TIFF page, GIF/WebP frame, or slice of a NIfTI
    volume or DICOM series along ``plane``; brisc.inference.volume_inputs).

    Only regular files are read (links followed); anything else, and every non-image, is listed in ``skipped``
    with its reason. Broken or looping links, unreadable files and folders and unreadable DICOM headers become
    error rows. A file named twice (two inputs, or a folder and a file inside it) is listed once, by resolved
    path. Symlinked folders are followed, each real folder once. ``skip`` (the --out folder), anything that
    resolves into it, and any other brisc-infer output folder are never read as input.

    Paths are relative to ``root`` (default: the deepest folder that holds every input), so the same file name
    under two inputs stays two names ("a/x.jpg", "b/x.jpg"); a resumed run passes the root it started from, so
    every file keeps its name."""
    from brisc.inference.outdir import is_brisc_output

    col = Collected(root=root or common_root(list(inputs)))
    seen_rel: set[str] = set()
    seen_real: set[str] = set()
    skip_real = os.path.realpath(skip) if skip is not None else None

    def inside_out(real: str) -> bool:
        return skip_real is not None and (real == skip_real or real.startswith(skip_real + os.sep))

    def rel(p: str | os.PathLike) -> str:
        return text_name(Path(os.path.relpath(os.path.abspath(p), col.root)).as_posix())

    def add(path: Path) -> None:
        name = rel(path)
        try:
            st = path.stat()
        except PermissionError:
            col.errors.append((name, "permission denied"))
            return
        except OSError as e:
            col.errors.append((name, f"cannot stat ({'symlink loop or broken link' if path.is_symlink() else e.strerror})"))
            return
        real = os.path.realpath(path)
        if inside_out(real):
            col.skipped.append((name, "inside --out (brisc-infer never reads its own outputs)"))
            return
        if real in seen_real:
            col.duplicates += 1
            return
        seen_real.add(real)
        if not stat.S_ISREG(st.st_mode):  # a FIFO would block the reader, a device never ends: never opened
            (col.errors if _suffix_says_image(path) else col.skipped).append((name, "not a regular file"))
            return
        if not os.access(path, os.R_OK):
            col.errors.append((name, "permission denied"))
            return
        if not (_suffix_says_image(path) or (path.suffix == "" and is_dicom(path))):
            col.skipped.append((name, f"not an image ({path.suffix or 'no extension'})"))
            return
        if name in seen_rel:  # the same relative name under two inputs: keep both, distinguishable
            n = 2
            while f"{name}~{n}" in seen_rel:
                n += 1
            name = f"{name}~{n}"
        seen_rel.add(name)
        if is_nifti(path):
            add_volume(col, VolumeSource((path,), plane, volume_index), name, name, Item)
            return
        try:
            n = image_frames(path)
        except ImageLoadError as e:
            col.errors.append((name, e.reason))
            return
        col.items.extend(Item(path, name, k) for k in range(n)) if n > 1 else col.items.append(Item(path, name))

    def prune(folder: Path) -> bool:
        return inside_out(os.path.realpath(folder)) or is_brisc_output(folder)

    def cannot_list(folder: Path, e: OSError) -> None:
        col.errors.append((rel(folder), f"cannot list folder ({e.strerror})"))

    for inp in inputs:
        p = Path(inp)
        try:
            is_dir = p.is_dir()
        except OSError:
            is_dir = False
        if is_dir:
            for f in walk_files(p, recursive=recursive, prune=prune, onerror=cannot_list):
                add(f)
        elif p.exists() or p.is_symlink():
            add(p)
        else:
            col.errors.append((text_name(str(inp)), "no such file or folder"))
    group_series(col, plane=plane, item_type=Item)
    col.items = output_names(col.items)
    return col


def output_names(items: list[Item]) -> list[Item]:
    """Each item's ``out_name``: ``a/x.jpg`` -> ``a/x`` (heatmaps/a/x.png, not x.jpg.png), except where two files
    would share it (``x.jpg`` beside ``x.png``): those keep their full names."""
    import posixpath

    def bare_name(it: Item) -> str:
        if it.source is not None and it.source.series_uid:  # <folder>/<UID>: the UID's dots are no extension
            return it.rel
        if is_nifti(it.rel):
            return nifti_stem(it.rel)  # x.nii.gz -> x
        return posixpath.splitext(it.rel)[0] or it.rel

    bare = {it.rel: bare_name(it) for it in items}
    owners: dict[str, set[str]] = {}
    for rel, name in bare.items():
        owners.setdefault(name, set()).add(rel)
    return [replace(it, out_name=bare[it.rel] if len(owners[bare[it.rel]]) == 1 else it.rel) for it in items]


def mask_for(masks: Path, item: Item) -> Path:
    """The tumour mask that would go with ``item`` in a --masks folder: <scan name without extension>.png."""
    return masks / (Path(item.rel).stem + ".png")


def ground_truth(item: Item) -> str | None:
    """From a BRISC file name, else from the parent folder's name (any class alias)."""
    return label_from_path(item.path)


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
    always_flagged: bool = False  # blank or coloured (brisc.ood.image_rule): classified, and flagged out of distribution


def _image_rule(x: np.ndarray, prep) -> bool:
    return bool(image_rule(x[None], prep.mean, prep.std)[0])


def decode_item(item: Item, prep, display: str | None = None) -> Decoded:
    """The model input, and with ``display`` the scan to draw on: "overlay" reuses the decode the model input
    came from (no second decode), "panel" decodes the file at full resolution for the larger panels."""
    try:
        if item.source is not None:  # a volume's slice: the volume decoded once, for all its slices
            vol = item.source.load()
            img, data_hash = vol.image(item.source.plane, item.frame), vol.sha256
            x = to_array(resize(img, prep.size), mean=prep.mean, std=prep.std)
            disp = None if display is None else fit(img, OVERLAY_MAX if display == "overlay" else PANEL_MAX)
            return Decoded(item, x, disp, data_hash, always_flagged=_image_rule(x, prep))
        data_hash = hashlib.sha256(item.path.read_bytes()).hexdigest()
        frame = item.frame or 0
        x, img = load_keeping_image(item.path, frame=frame, prep=prep)
        disp = None
        if display == "overlay":
            disp = fit(img, OVERLAY_MAX)
        elif display == "panel":
            disp = fit(decode(item.path, frame=frame, size=None), PANEL_MAX)
        return Decoded(item, x, disp, data_hash, always_flagged=_image_rule(x, prep))
    except ImageLoadError as e:
        return Decoded(item, error=e.reason)
    except VolumeError as e:
        return Decoded(item, error=str(e))
    except OSError as e:
        return Decoded(item, error=f"cannot read ({e.strerror or e})")
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not end the run
        return Decoded(item, error=f"unexpected decode failure ({type(e).__name__}: {e})")


def input_sha256(item: Item) -> str | None:
    """What a row's input_sha256 holds: the file's (a volume's slices: the volume's file or files)."""
    try:
        if item.source is not None:
            return item.source.load().sha256
        return hashlib.sha256(item.path.read_bytes()).hexdigest()
    except (OSError, VolumeError):
        return None


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


