"""The shared loader: a scan file -> float32 [3, size, size] in [-1, 1].

Training (``brisc.train``) and inference (``brisc.inference``) both call this module, so the
two cannot drift apart. Torch-free on purpose.

Pipeline, one direction: ``decode`` (file -> 8-bit PIL image, 'L' or 'RGB') ->
``resize`` (-> RGB size x size) -> ``to_array`` (-> normalised float32 CHW).

Choices worth knowing:
- Non-square scans are stretched to size x size, exactly like the seed's ``Resize((224, 224))``:
  the whole field of view is kept and training and inference see the same geometry.
- JPEGs at least twice the target size are decoded with Pillow's draft mode (DCT scaling),
  which is several times faster. Training uses the same loader, so train and inference agree.
- 16-bit and float images (and DICOM after its LUTs) are scaled by their own min..max range to
  8 bits, never clamped to a fixed window.
- Transparent images are composited on black (MRI background).
"""

from __future__ import annotations

from brisc.errors import BriscError

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Bump whenever the tensor produced for a given file changes: exported models record it and
# inference refuses a model whose version differs.
PREPROCESSING_VERSION = 1
IMAGE_SIZE = 224
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
# Pillow's own warning threshold (~89.5 Mpx); we refuse above it instead of warning.
MAX_PIXELS = 89_478_485

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
PAGED_FORMATS = frozenset({"TIFF", "GIF", "WEBP", "MPO"})  # Pillow formats with several pages or frames
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


class ImageLoadError(BriscError, ValueError):
    """A file that cannot be turned into a model input. ``str()`` names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True, kw_only=True)
class Preprocessing:
    """What a model expects; stored in checkpoints and ONNX sidecars."""

    size: int = IMAGE_SIZE
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD
    version: int = PREPROCESSING_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(size=int(d["size"]), mean=tuple(d["mean"]), std=tuple(d["std"]), version=int(d["version"]))


DEFAULT = Preprocessing()


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a DICOM Part 10 file (the 'DICM' magic at byte 128), whatever its extension."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any numeric array by its own range to uint8 (a flat image becomes black)."""
    a = np.asarray(arr, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ValueError("image holds NaN or infinite values")
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _to_8bit(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'L' or 'RGB'."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I, F: scale by range
        return Image.fromarray(scale_to_uint8(np.asarray(img)), "L")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        out = Image.alpha_composite(black, rgba).convert("RGB")
        return out.convert("L") if mode in ("LA", "La") else out
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...


def _decode_pil(path: str | os.PathLike, size: int | None, frame: int = 0) -> Image.Image:
    try:
        img = Image.open(path)
        if frame:
            img.seek(frame)  # a page of a multi-page TIFF, a frame of an animated GIF or WebP
    except UnidentifiedImageError:
        raise ImageLoadError(path, "not an image file that Pillow can read") from None
    except Image.DecompressionBombError as e:
        raise ImageLoadError(path, f"refused as a possible decompression bomb ({e})") from None
    except EOFError:
        raise ImageLoadError(path, f"has no frame {frame}") from None
    except OSError as e:
        raise ImageLoadError(path, f"cannot open: {e.strerror or e}") from None
    with img:
        w, h = img.size
        if w < 1 or h < 1:
            raise ImageLoadError(path, f"empty image ({w}x{h})")
        if w * h > MAX_PIXELS:
            raise ImageLoadError(path, f"{w}x{h} = {w * h} pixels is over the {MAX_PIXELS} limit "
                                       "(refused as a possible decompression bomb)")
        if size and img.format == "JPEG" and min(w, h) >= 2 * size:
            # DCT scaling by 1/2, 1/4 or 1/8 while staying >= size on both sides.
            img.draft(img.mode if img.mode in ("L", "RGB") else None, (size, size))
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_8bit(img)
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageLoadError(path, f"corrupt or truncated image data ({e})") from None


def image_frames(path: str | os.PathLike) -> int:
    """Frames of a file: a DICOM's NumberOfFrames, a multi-page TIFF's pages, an animated GIF's or WebP's frames;
    1 for anything else (and for a file Pillow cannot open: decoding it then says why)."""
    if Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
        return dicom_frames(path)
    try:
        with Image.open(path) as img:
            return max(1, int(getattr(img, "n_frames", 1))) if img.format in PAGED_FORMATS else 1
    except (OSError, ValueError, Image.DecompressionBombError):
        return 1


def image_size(path: str | os.PathLike, frame: int = 0) -> tuple[int, int] | None:
    """(width, height) of a file's image (or frame) as stored, from its header; None where it cannot be read."""
    try:
        if Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
            pydicom = _import_pydicom(path)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        with Image.open(path) as img:
            if frame:
                img.seek(frame)
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)  # EXIF orientations 5-8 turn the image by 90 degrees
            return (h, w) if orientation in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001 - the size only checks masks; the decode reports what is wrong with the file
        return None


def dicom_frames(path: str | os.PathLike) -> int:
    """Number of frames in a DICOM file (1 for single-frame); 1 for anything else."""
    if not is_dicom(path):
        return 1
    pydicom = _import_pydicom(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as e:  # pydicom raises many types for broken headers
        raise ImageLoadError(path, f"unreadable DICOM header ({e})") from None
    return max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))


def _import_pydicom(path):
    try:
        import pydicom
    except ImportError:
        raise ImageLoadError(path, "DICOM file, but pydicom is not installed: pip install 'brisc-mri[dicom]'") from None
    return pydicom


def _dicom_luts():
    try:
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi_lut
    return apply_modality_lut, apply_voi_lut


def _dicom_frame(path: str | os.PathLike, frame: int):
    """(dataset, the frame's stored pixels), with one ImageLoadError for each way a file can fail."""
    pydicom = _import_pydicom(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:
        raise ImageLoadError(path, f"unreadable DICOM file ({e})") from None
    if "PixelData" not in ds:
        raise ImageLoadError(path, "DICOM file has no pixel data")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageLoadError(path, f"{cols}x{rows} DICOM frame is over the {MAX_PIXELS}-pixel limit")
    try:
        arr = ds.pixel_array
    except Exception as e:
        raise ImageLoadError(path, f"cannot decode DICOM pixel data ({e})") from None
    n = max(1, int(getattr(ds, "NumberOfFrames", 1) or 1))
    if not 0 <= frame < n:
        raise ImageLoadError(path, f"frame {frame} out of range (file has {n})")
    return ds, (arr[frame] if n > 1 else arr)


def dicom_pixels(path: str | os.PathLike) -> np.ndarray:
    """A single-frame grey DICOM's pixels in its modality's units (rescale applied, MONOCHROME1 inverted), float64
    [rows, cols]: a series' slice, windowed later with the whole volume (brisc.volumes)."""
    ds, arr = _dicom_frame(path, 0)
    if arr.ndim != 2:
        raise ImageLoadError(path, "a colour DICOM, not a grey MR slice")
    arr = np.asarray(_dicom_luts()[0](arr, ds), dtype=np.float64)
    return arr.max() + arr.min() - arr if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1" else arr


def _decode_dicom(path: str | os.PathLike, frame: int) -> Image.Image:
    """Modality LUT (rescale), then VOI LUT or window, then MONOCHROME1 inversion, then range scaling."""
    ds, arr = _dicom_frame(path, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    if arr.ndim == 3:  # colour DICOM (RGB / YBR already converted by pydicom)
        return Image.fromarray(scale_to_uint8(arr), "RGB")
    apply_modality_lut, apply_voi_lut = _dicom_luts()
    arr = apply_modality_lut(arr, ds)
    arr = apply_voi_lut(arr, ds)
    arr = np.asarray(arr, dtype=np.float64)
    if photometric == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr
    return Image.fromarray(scale_to_uint8(arr), "L")


def decode(path: str | os.PathLike, *, frame: int = 0, size: int | None = IMAGE_SIZE) -> Image.Image:
    """File -> 8-bit PIL image ('L' or 'RGB'). ``size`` enables JPEG draft mode; None decodes in full."""
    if not os.path.isfile(path):
        raise ImageLoadError(path, "no such file" if not os.path.exists(path) else "not a regular file")
    if Path(path).suffix.lower() in DICOM_SUFFIXES or is_dicom(path):
        return _decode_dicom(path, frame)
    return _decode_pil(path, size, frame)


def resize(img: Image.Image, size: int = IMAGE_SIZE) -> Image.Image:
    """8-bit PIL image -> RGB size x size (bilinear, as torchvision's Resize on PIL images)."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img if img.mode == "RGB" else img.convert("RGB")


def to_array(img: Image.Image, *, mean=MEAN, std=STD) -> np.ndarray:
    """RGB PIL image -> float32 [3, H, W], (x / 255 - mean) / std (ToTensor + Normalize)."""
    a = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # [H, W, 3]
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def decode_resized(path: str | os.PathLike, *, frame: int = 0, size: int = IMAGE_SIZE) -> Image.Image:
    """Decode and resize: the PIL image that training augments and inference normalises."""
    return resize(decode(path, frame=frame, size=size), size)


def load(path: str | os.PathLike, *, frame: int = 0, prep: Preprocessing = DEFAULT) -> np.ndarray:
    """The model input for one file (or one DICOM frame): float32 [3, size, size] in [-1, 1]."""
    return load_keeping_image(path, frame=frame, prep=prep)[0]


def load_keeping_image(path: str | os.PathLike, *, frame: int = 0,
                       prep: Preprocessing = DEFAULT) -> tuple[np.ndarray, Image.Image]:
    """``load``, and the decoded image it was made from, before the square resize: the scan at its own aspect
    ratio, at least ``prep.size`` a side (large JPEGs are decoded at a reduced DCT scale). One decode for both."""
    img = decode(path, frame=frame, size=prep.size)
    return to_array(resize(img, prep.size), mean=prep.mean, std=prep.std), img
