"""The project's out-of-distribution evaluation set: images that are not contrast-enhanced T1 brain slices.

Built on the fly, never trained on:
- ``photo``: the sample images that installed packages ship (scikit-image, scikit-learn, matplotlib): photographs,
  microscopy, astronomy, text pages, logos;
- ``medical``: pydicom's test files at the top of its test-data folder (CT, MR crops, ultrasound, colour and palette
  test images; its ``dicomdirtests`` are thumbnails of the same kinds and are left out), near-duplicates dropped;
- ``drawn``: procedural pictures of kinds the outlier exposure never makes (``brisc.train.outliers`` makes noise,
  blank frames, gradients, gratings, smooth noise, shuffled and deleted scans): filled shapes, text, plots, Mondrian
  rectangles and scribbles.
Every image goes through the shared loader (``brisc.imageio.load`` or ``to_array``), as a scan would. A package
that is not installed gives no images (``sources`` says which did). ``mni152_slices`` is apart: a real brain without
a tumour, but a T1 average without contrast, reported on its own in docs/results.md.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from brisc.imageio import DEFAULT, ImageLoadError, Preprocessing, load, resize, to_array

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
DRAWN_KINDS = ("shapes", "text", "plot", "mondrian", "scribble")


@dataclass(frozen=True)
class Outlier:
    kind: str  # photo | medical | drawn
    name: str  # the file, or the pattern and its number
    image: np.ndarray  # [3, S, S] in the model's units


def _package_dir(module: str, *sub: str) -> Path | None:
    try:
        mod = __import__(module, fromlist=["__file__"])
    except ImportError:
        return None
    return Path(mod.__file__).parent.joinpath(*sub)


def package_image_files() -> dict[str, list[Path]]:
    """Sample image files of the installed packages, by package."""
    out: dict[str, list[Path]] = {}
    for pkg, sub in (("skimage.data", ()), ("sklearn.datasets", ("images",))):
        d = _package_dir(pkg, *sub)
        if d is not None and d.is_dir():
            out[pkg.split(".")[0]] = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    try:
        import matplotlib

        d = Path(matplotlib.get_data_path()) / "sample_data"
        out["matplotlib"] = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    except ImportError:
        pass
    return out


def dicom_files() -> list[Path]:
    """pydicom's top-level test files (not its dicomdirtests thumbnails)."""
    d = _package_dir("pydicom.data", "test_files")  # read in place: get_testdata_files also tries to download more
    return sorted(d.glob("*.dcm")) if d is not None and d.is_dir() else []


def _fingerprint(x: np.ndarray) -> bytes:
    """A coarse 16x16 thumbnail: pydicom ships one picture in many encodings."""
    g = ((x.mean(0) + 1) * 127.5).clip(0, 255).astype(np.uint8)
    return (np.asarray(Image.fromarray(g).resize((16, 16), Image.Resampling.BILINEAR)) // 32).tobytes()


def _array(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    return to_array(resize(img, prep.size), mean=prep.mean, std=prep.std)


def _rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def drawn(kind: str, seed: int, size: int = 256) -> Image.Image:
    """One procedural picture: shapes | text | plot | mondrian | scribble."""
    rng = np.random.default_rng([seed, DRAWN_KINDS.index(kind)])  # str hash() changes per process
    img = Image.new("RGB", (size, size), _rgb(rng) if kind != "text" else (250, 250, 245))
    d = ImageDraw.Draw(img)
    if kind == "shapes":
        for _ in range(int(rng.integers(3, 12))):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(10, size // 2, 2)
            box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
            (d.ellipse if rng.random() < 0.5 else d.rectangle)(box, fill=_rgb(rng))
    elif kind == "text":
        words = ["patient", "report", "the", "scan", "of", "brain", "normal", "finding", "date", "signed", "and"]
        for row in range(8, size - 12, 14):
            d.text((8, row), " ".join(rng.choice(words, int(rng.integers(3, 8)))), fill=(20, 20, 20))
    elif kind == "plot":
        d.line([(20, size - 20), (size - 10, size - 20)], fill=(0, 0, 0), width=2)
        d.line([(20, size - 20), (20, 10)], fill=(0, 0, 0), width=2)
        ys = np.cumsum(rng.normal(0, 8, 40))
        ys = (ys - ys.min()) / max(np.ptp(ys), 1e-6) * (size - 60) + 20
        pts = [(int(20 + i * (size - 40) / 39), int(size - ys[i])) for i in range(40)]
        d.line(pts, fill=_rgb(rng), width=3)
        for x in range(40, size - 20, 40):
            hgt = int(rng.integers(10, size // 3))
            d.rectangle([x, size - 20 - hgt, x + 12, size - 20], fill=_rgb(rng))
    elif kind == "mondrian":
        for _ in range(int(rng.integers(5, 15))):
            x0, y0 = (int(v) for v in rng.integers(0, size, 2))
            d.rectangle([x0, y0, x0 + int(rng.integers(20, 120)), y0 + int(rng.integers(20, 120))],
                        fill=_rgb(rng), outline=(0, 0, 0), width=4)
    elif kind == "scribble":
        pos = rng.integers(0, size, 2).astype(float)
        pts = []
        for _ in range(300):
            pos = np.clip(pos + rng.normal(0, 10, 2), 0, size - 1)
            pts.append((int(pos[0]), int(pos[1])))
        d.line(pts, fill=_rgb(rng), width=int(rng.integers(1, 6)))
    else:
        raise ValueError(f"unknown drawn kind '{kind}'")
    return img


def evaluation_set(prep: Preprocessing = DEFAULT, *, drawn_per_kind: int = 4) -> tuple[list[Outlier], dict]:
    """-> (the outliers, {source: count}). Deterministic for the same installed packages."""
    out: list[Outlier] = []
    sources: dict[str, int] = {}
    for pkg, files in package_image_files().items():
        for f in files:
            try:
                out.append(Outlier("photo", f"{pkg}/{f.name}", load(f, prep=prep)))
                sources[pkg] = sources.get(pkg, 0) + 1
            except ImageLoadError:
                continue
    seen: set[bytes] = set()
    for f in dicom_files():
        try:
            with warnings.catch_warnings():  # its test files are odd on purpose, and pydicom says so for each
                warnings.simplefilter("ignore")
                x = load(f, prep=prep)
        except Exception:  # noqa: BLE001 - pydicom ships deliberately broken files among its tests
            continue
        fp = _fingerprint(x)
        if fp in seen:
            continue
        seen.add(fp)
        out.append(Outlier("medical", f"pydicom/{f.name}", x))
        sources["pydicom"] = sources.get("pydicom", 0) + 1
    for kind in DRAWN_KINDS:
        for i in range(drawn_per_kind):
            out.append(Outlier("drawn", f"{kind}-{i}", _array(drawn(kind, i), prep)))
    sources["drawn"] = len(DRAWN_KINDS) * drawn_per_kind
    return out, sources


def mni152_slices(prep: Preprocessing = DEFAULT, *, every: int = 8) -> list[Outlier]:
    """Axial slices of nilearn's MNI152 T1 template (shipped in its wheel), every ``every``-th through the brain,
    windowed per volume (1st-99th percentile), in radiological display. [] without nilearn."""
    try:
        from nilearn.datasets import load_mni152_template
    except ImportError:
        return []
    from brisc.volumes import FOREGROUND_MIN, from_voxels

    img = load_mni152_template()
    vol = from_voxels(np.asarray(img.dataobj), img.affine, "mni152")  # RAS+, windowed, as brisc-infer reads it
    fg = vol.foreground("axial")
    out = []
    for z in range(0, vol.count("axial"), every):
        if fg[z] < FOREGROUND_MIN:  # mostly background: below or above the brain
            continue
        pil = vol.image("axial", z).convert("RGB")  # radiological display, as BRISC's axial slices are shown
        out.append(Outlier("mni152", f"mni152/z{z:03d}", _array(pil, prep)))
    return out
