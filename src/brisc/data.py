"""BRISC discovery, file-name parsing, masks, the validation split and the duplicate audit.

Torch-free. Long on purpose (~350 lines): discovery, naming and splitting share the Sample type and are read
together; the grouping of look-alike slices lives apart in ``brisc.grouping``. Layouts understood (``discover``):
- ``release``: the BRISC 2025 release root (``classification_task/{train,test}/<class>/*.jpg`` and
  ``segmentation_task/{train,test}/{images,masks}/``);
- ``classification_task``: that folder alone (masks are still joined from a sibling ``segmentation_task``);
- ``split-folders``: a folder with ``train/`` and ``test/`` class subfolders (Kaggle's ``Training/``/``Testing/``);
- ``class-folders``: a plain ``<class>/`` tree, taken as the train split.
"""

from __future__ import annotations

from brisc.errors import BriscError

import hashlib
import io
import os
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from brisc import CLASSES
from brisc.kinds import SPLIT_METHODS
from brisc.fsio import walk_files
from brisc.imageio import IMAGE_SUFFIXES, MAX_PIXELS

TUMOUR_CLASSES = ("glioma", "meningioma", "pituitary")

CLASS_ALIASES: dict[str, str] = {
    **{c: c for c in CLASSES},
    "glioma_tumor": "glioma", "glioma-tumor": "glioma", "gl": "glioma",
    "meningioma_tumor": "meningioma", "meningioma-tumor": "meningioma", "me": "meningioma",
    "pituitary_tumor": "pituitary", "pituitary-tumor": "pituitary", "pi": "pituitary",
    "notumor": "no_tumor", "no-tumor": "no_tumor", "no tumor": "no_tumor", "no_tumour": "no_tumor",
    "notumour": "no_tumor", "no": "no_tumor", "nt": "no_tumor", "healthy": "no_tumor", "normal": "no_tumor",
}
SPLIT_ALIASES = {"train": "train", "training": "train", "test": "test", "testing": "test",
                 "val": "val", "valid": "val", "validation": "val"}
PLANES = {"ax": "axial", "co": "coronal", "sa": "sagittal"}
# The release writes `no` for no_tumor although its README says `nt`: accept both.
_NAME = re.compile(r"^brisc2025_(train|test)_(\d+)_(gl|me|pi|no|nt)_(ax|co|sa)_([a-z0-9]+)$", re.IGNORECASE)


class DataError(BriscError):
    """A dataset that cannot be used; the message is one line naming the path and what to do."""


def default_data_root() -> Path:
    """``$BRISC_DATA``, else ``../shared/data/brisc2025`` beside the repository."""
    env = os.environ.get("BRISC_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "brisc2025"


def canonical_class(name: str) -> str | None:
    return CLASS_ALIASES.get(name.strip().lower())


@dataclass(frozen=True)
class BriscName:
    split: str
    index: int
    label: str
    plane: str
    sequence: str


def parse_brisc_name(name: str) -> BriscName | None:
    """``brisc2025_<split>_<index>_<gl|me|pi|no|nt>_<ax|co|sa>_<sequence>.jpg`` -> fields; None if not BRISC."""
    m = _NAME.match(Path(name).stem)
    if not m:
        return None
    split, index, code, plane, seq = m.groups()
    return BriscName(split.lower(), int(index), CLASS_ALIASES[code.lower()], PLANES[plane.lower()], seq.lower())


def label_from_path(path: str | os.PathLike) -> str | None:
    """The class a file's name (BRISC naming) or else its parent folder's name (any class alias) gives; None."""
    p = Path(path)
    parsed = parse_brisc_name(p.name)
    return parsed.label if parsed else canonical_class(p.parent.name)


@dataclass(frozen=True)
class Sample:
    path: str
    label: int  # index into CLASSES
    split: str  # train | val | test
    sha1: str
    plane: str | None = None
    sequence: str | None = None
    mask: str | None = None  # path of the tumour mask, when one was joined

    @property
    def class_name(self) -> str:
        return CLASSES[self.label]


@dataclass
class Discovery:
    root: str
    layout: str
    samples: list[Sample]
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    name_mismatches: list[tuple[str, str, str]] = field(default_factory=list)  # path, folder, name
    ignored_files: int = 0
    masks_found: dict[str, int] = field(default_factory=dict)


def _is_split(name: str) -> bool:
    return name.lower() in SPLIT_ALIASES


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_layout(root: Path) -> tuple[str, dict[str, Path], Path | None]:
    """-> (layout name, {split: folder of class folders}, segmentation_task folder or None)."""
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist (name the folder, or set BRISC_DATA)")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if (root / "classification_task").is_dir():
        layout, base, seg = "release", root / "classification_task", root / "segmentation_task"
    elif root.name == "classification_task":
        layout, base, seg = "classification_task", root, root.parent / "segmentation_task"
    else:
        base, seg = root, root / "segmentation_task"
        layout = "split-folders" if any(_is_split(d.name) for d in _subdirs(root)) else "class-folders"
    splits = {SPLIT_ALIASES[d.name.lower()]: d for d in _subdirs(base) if _is_split(d.name)}
    if layout == "class-folders":
        splits = {"train": base}
    if not splits:
        raise DataError(f"{base}: no train/ or test/ folders with class subfolders")
    return layout, splits, seg if seg.is_dir() else None


def _check_image(path: Path) -> tuple[str | None, str | None]:
    """-> (sha1 of the bytes, None) or (None, reason). Reads the header, not the pixels."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"
    if not data:
        return None, "empty file"
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return None, f"not a readable image ({type(e).__name__})"
    if w * h > MAX_PIXELS:
        return None, f"{w}x{h} pixels is over the {MAX_PIXELS} limit (possible decompression bomb)"
    return hashlib.sha1(data).hexdigest(), None


def discover(root: str | os.PathLike) -> Discovery:
    """Find every labelled image under ``root``; see the module docstring for layouts."""
    root = Path(root)
    layout, splits, seg = find_layout(root)
    disc = Discovery(root=str(root), layout=layout, samples=[])
    for split, split_dir in sorted(splits.items()):
        class_dirs = _subdirs(split_dir)
        if not class_dirs:
            raise DataError(f"{split_dir}: no class folders (expected {', '.join(CLASSES)})")
        masks: dict[str, str] = {}
        if seg is not None and (seg / split / "masks").is_dir():
            mdir = seg / split / "masks"
            masks = {Path(n).stem: str(mdir / n) for n in os.listdir(mdir) if n.lower().endswith(".png")}
        disc.masks_found[split] = len(masks)
        for cdir in class_dirs:
            cls = canonical_class(cdir.name)
            if cls is None:
                raise DataError(f"{cdir}: unknown class folder '{cdir.name}' "
                                f"(expected one of {', '.join(CLASSES)} or an alias such as notumor)")
            files = [p for p in walk_files(cdir) if p.is_file() and not p.name.startswith(".")]
            images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
            disc.ignored_files += len(files) - len(images)
            if not images:
                raise DataError(f"{cdir}: empty class folder (no .jpg/.png/.tif/.bmp images)")
            for p in images:
                sha1, reason = _check_image(p)
                if reason:
                    disc.unreadable.append((str(p), reason))
                    continue
                parsed = parse_brisc_name(p.name)
                if parsed and parsed.label != cls:
                    disc.name_mismatches.append((str(p), cls, parsed.label))
                disc.samples.append(Sample(
                    path=str(p), label=CLASSES.index(cls), split=split, sha1=sha1,
                    plane=parsed.plane if parsed else None, sequence=parsed.sequence if parsed else None,
                    mask=masks.get(p.stem)))
    if not disc.samples:
        raise DataError(f"{root}: no readable images found ({len(disc.unreadable)} unreadable)")
    return disc




@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    seed: int
    val_fraction: float
    duplicates: dict
    method: str = "random"
    groups: dict | None = None  # brisc.grouping.group_summary of the train split, for method "group"


def stratified_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded, per-class split -> (train, val). Independent of input order."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    train, val = [], []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda s: s.path)
        order = rng.permutation(len(group))
        n_val = int(round(len(group) * val_fraction))
        if val_fraction > 0 and len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        for rank, i in enumerate(order):
            s = group[i]
            if rank < n_val:
                val.append(Sample(**{**asdict(s), "split": "val"}))
            else:
                train.append(s)
    return sorted(train, key=lambda s: s.path), sorted(val, key=lambda s: s.path)


def grouped_split(samples: list[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample], dict]:
    """Seeded, per-class split by whole groups of look-alike slices -> (train, val, group summary)."""
    from brisc.grouping import group_split, group_summary, similarity_groups

    samples = sorted(samples, key=lambda s: s.path)
    groups = similarity_groups([s.path for s in samples], [s.label for s in samples])
    is_val = group_split([s.label for s in samples], groups, val_fraction, seed)
    train = [s for s, v in zip(samples, is_val) if not v]
    val = [Sample(**{**asdict(s), "split": "val"}) for s, v in zip(samples, is_val) if v]
    return train, val, group_summary(groups)


def make_splits(disc: Discovery, *, val_fraction: float = 0.1, seed: int = 0, method: str = "group") -> Splits:
    """Train/val/test. Val is carved from train (stratified, seeded; ``method`` "group" keeps groups of look-alike
    slices together, "random" draws images) unless the data brings one; test is never used for model selection.
    Exact duplicates of val or test images leave train."""
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method '{method}' (choose from {', '.join(SPLIT_METHODS)})")
    by_split: dict[str, list[Sample]] = defaultdict(list)
    for s in disc.samples:
        by_split[s.split].append(s)
    test = sorted(by_split["test"], key=lambda s: s.path)
    summary = None
    if by_split["val"]:
        train, val = sorted(by_split["train"], key=lambda s: s.path), sorted(by_split["val"], key=lambda s: s.path)
    elif method == "group":
        train, val, summary = grouped_split(by_split["train"], val_fraction, seed)
    else:
        train, val = stratified_split(by_split["train"], val_fraction, seed)
    held = {s.sha1 for s in val} | {s.sha1 for s in test}
    kept = [s for s in train if s.sha1 not in held]
    audit = duplicate_audit(kept + val + test)
    audit["dropped_from_train"] = len(train) - len(kept)
    return Splits(train=kept, val=val, test=test, seed=seed, val_fraction=val_fraction, duplicates=audit,
                  method=method, groups=summary)


def classes_in_turn(samples: list, *, label=lambda s: s.label, path=lambda s: s.path) -> list:
    """Samples ordered by path within each class, the classes taken in turn (one of each, then the next of each...):
    any prefix, such as the first 100 scans of a costly check, then spans every class, not the first class's files.
    ``label`` and ``path`` read any other item (a label of None sorts last in each turn)."""
    by_path = sorted(samples, key=path)
    rank: dict[str, int] = {}
    seen: dict = defaultdict(int)
    for s in by_path:
        rank[path(s)], seen[label(s)] = seen[label(s)], seen[label(s)] + 1
    return sorted(by_path, key=lambda s: (rank[path(s)], label(s) is None, str(label(s))))


def duplicate_audit(samples: list[Sample]) -> dict:
    """Exact (byte-identical) duplicates by content hash."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[s.sha1].append(s)
    dup = [g for g in groups.values() if len(g) > 1]
    return {
        "groups": len(dup),
        "extra_copies": sum(len(g) - 1 for g in dup),
        "cross_split_groups": sum(1 for g in dup if len({s.split for s in g}) > 1),
        "conflicting_label_groups": sum(1 for g in dup if len({s.label for s in g}) > 1),
        "examples": [[s.path for s in g] for g in dup[:5]],
    }


def _counts(samples: list[Sample]) -> dict[str, int]:
    c = Counter(s.class_name for s in samples)
    return {k: c.get(k, 0) for k in CLASSES}


def report(disc: Discovery, splits: Splits) -> dict:
    """Everything ``brisc-data`` prints, as plain JSON types."""
    from brisc.grouping import look_alike_share

    found: dict[str, list[Sample]] = defaultdict(list)
    for s in disc.samples:
        found[s.split].append(s)
    return {
        "root": disc.root,
        "layout": disc.layout,
        "classes": list(CLASSES),
        "found": {
            sp: {
                "images": len(ss),
                "per_class": _counts(ss),
                "planes": dict(sorted(Counter(s.plane or "unknown" for s in ss).items())),
                "masks_found": disc.masks_found.get(sp, 0),
                "masks_joined": sum(s.mask is not None for s in ss),
                "tumour_images_without_mask": sum(s.mask is None and s.class_name in TUMOUR_CLASSES for s in ss),
            }
            for sp, ss in sorted(found.items())
        },
        "split": {
            "method": splits.method,
            "groups": splits.groups,
            "seed": splits.seed,
            "val_fraction": splits.val_fraction,
            **{name: {"images": len(ss), "per_class": _counts(ss)}
               for name, ss in (("train", splits.train), ("val", splits.val), ("test", splits.test))},
        },
        "look_alike_val_share": look_alike_share([(s.path, s.label) for s in splits.val],
                                                 [(s.path, s.label) for s in splits.train]),
        "duplicates": splits.duplicates,
        "unreadable": [{"path": p, "reason": r} for p, r in disc.unreadable],
        "name_mismatches": [{"path": p, "folder": f, "name": n} for p, f, n in disc.name_mismatches],
        "ignored_files": disc.ignored_files,
    }


def load_mask(path: str | os.PathLike) -> np.ndarray:
    """BRISC mask PNG -> bool [H, W] (anti-aliased 0/255: binarised at > 127)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127
