"""Volumes: a NIfTI file or a DICOM series as slices shown the way BRISC shows its slices (numpy; nibabel and
pydicom imported only when a volume is read, from the ``brisc-mri[volumes]`` extra).

One path for both sources: voxels and a voxel-to-RAS affine -> the closest canonical (RAS+) orientation
(``canonical``) -> windowed to 8 bits per volume (``window``: the 1st-99th percentile of the voxels above the
volume's minimum) -> a slice along the plane asked, in radiological display (``display_slice``: anterior or
superior at the top, the patient's right on the viewer's left, as a DICOM viewer shows an axial slice and as
BRISC's axial slices are; tests/test_volumes.py checks it against BRISC's own mean slices), resampled to square
pixels. Slices with under ``FOREGROUND_MIN`` of their pixels above a tenth of the window are "mostly background".
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from brisc.errors import BriscError

PLANES = ("axial", "coronal", "sagittal")
AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}  # the RAS axis a plane's slices are taken along
NIFTI_SUFFIXES = (".nii", ".nii.gz")
FOREGROUND_MIN = 0.15
WINDOW_PERCENTILES = (1.0, 99.0)
EXTRA = "pip install 'brisc-mri[volumes]'"


class VolumeError(BriscError, ValueError):
    """A volume or series that cannot be read as one: the reason, for its error row."""


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def nifti_stem(name: str) -> str:
    """"a/x.nii.gz" -> "a/x" (both suffixes as one extension); any other name unchanged."""
    return re.sub(r"\.nii(\.gz)?$", "", name, flags=re.IGNORECASE) or name


def canonical(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxels and their voxel-to-RAS affine -> the same voxels with axes permuted and flipped so that they run
    along +x (right), +y (anterior), +z (superior), whichever is closest for an oblique volume, and the matching
    affine (nibabel's ``as_closest_canonical``, which the tests compare it with)."""
    rzs = np.asarray(affine, np.float64)[:3, :3]
    zooms = np.sqrt((rzs ** 2).sum(0))
    zooms[zooms == 0] = 1
    u, _, vt = np.linalg.svd(rzs / zooms)
    signed = u @ vt  # the closest rotation: |signed[w, a]| is how far array axis a runs along world axis w
    q = np.abs(signed)
    world_of = np.full(3, -1)
    for _ in range(3):  # greedily, the array axis and world axis that agree most, as nibabel's io_orientation
        w, a = np.unravel_index(np.argmax(q), q.shape)
        world_of[a] = w
        q[w, :], q[:, a] = -1, -1
    order = [int(np.flatnonzero(world_of == w)[0]) for w in range(3)]  # array axis for world x, y, z
    out = np.transpose(data, order + list(range(3, data.ndim)))
    new = np.zeros((4, 4))  # new voxel index -> old voxel index
    new[3, 3] = 1
    for w, a in enumerate(order):
        if signed[w, a] < 0:
            out = np.flip(out, w)
            new[a, w], new[a, 3] = -1, data.shape[a] - 1
        else:
            new[a, w] = 1
    return np.ascontiguousarray(out), np.asarray(affine, np.float64) @ new


def window(vol: np.ndarray) -> tuple[float, float]:
    """The intensity window of a volume: the 1st and 99th percentiles of its voxels above the minimum (the
    background floor)."""
    finite = vol[np.isfinite(vol)]
    if finite.size == 0:
        raise VolumeError("the volume holds no finite value")
    body = finite[finite > finite.min()]
    if body.size == 0:
        return float(finite.min()), float(finite.min()) + 1.0
    lo, hi = np.percentile(body, WINDOW_PERCENTILES)
    return float(lo), float(hi if hi > lo else lo + 1.0)


def to_uint8(vol: np.ndarray, lo: float, hi: float) -> np.ndarray:
    v = np.nan_to_num(np.asarray(vol, np.float32), nan=lo, posinf=hi, neginf=lo)  # a NaN voxel shows as background
    return np.round(np.clip((v - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def display_slice(vol: np.ndarray, plane: str, k: int) -> np.ndarray:
    """Slice ``k`` of a canonical (RAS+) volume along ``plane`` as an image [rows, cols]: the first array axis left
    in the slice runs to the patient's right (on the viewer's left once flipped), the second forward or up (to the
    top once flipped)."""
    sl = np.take(vol, k, axis=AXIS[plane])  # [x, y], [x, z] or [y, z]
    return sl.T[::-1, ::-1]


@dataclass(frozen=True)
class Volume:
    data: np.ndarray  # uint8 [x, y, z], canonical (RAS+), windowed
    zooms: tuple[float, float, float]  # mm per voxel along x, y, z
    sha256: str  # of the file, or of a series' files in order

    def count(self, plane: str) -> int:
        return self.data.shape[AXIS[plane]]

    def image(self, plane: str, k: int) -> Image.Image:
        """Slice ``k`` as an 8-bit 'L' image with square pixels (the finer spacing kept)."""
        a = display_slice(self.data, plane, k)
        zx, zy = (z for i, z in enumerate(self.zooms) if i != AXIS[plane])  # along the slice's columns, rows
        img = Image.fromarray(np.ascontiguousarray(a), "L")
        fine = min(zx, zy)
        w, h = round(a.shape[1] * zx / fine), round(a.shape[0] * zy / fine)
        return img if (w, h) == img.size else img.resize((w, h), Image.Resampling.BILINEAR)

    def foreground(self, plane: str) -> np.ndarray:
        """Per slice, the fraction of its pixels above a tenth of the window."""
        axes = tuple(i for i in range(3) if i != AXIS[plane])
        return (self.data > 25).mean(axis=axes)


def from_voxels(data: np.ndarray, affine: np.ndarray, sha256: str) -> Volume:
    vol, aff = canonical(np.asarray(data), affine)
    lo, hi = window(vol)
    zooms = tuple(float(z) for z in np.sqrt((aff[:3, :3] ** 2).sum(0)))
    return Volume(to_uint8(vol, lo, hi), zooms, sha256)


def _sha256(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_nifti(path: str | os.PathLike, volume_index: int | None = None) -> Volume:
    """A .nii or .nii.gz: 3D, or one volume of a 4D file picked by ``volume_index``."""
    try:
        import nibabel as nib
    except ImportError:
        raise VolumeError(f"a NIfTI volume, but nibabel is not installed: {EXTRA}") from None
    try:
        img = nib.load(str(path))
        shape = img.shape
        if len(shape) == 4 and shape[3] == 1:
            shape = shape[:3]
        if len(shape) == 4:
            if volume_index is None:
                raise VolumeError(f"a 4D volume ({shape[3]} volumes of {shape[0]}x{shape[1]}x{shape[2]}): pick one "
                                  "with --volume-index")
            if not 0 <= volume_index < shape[3]:
                raise VolumeError(f"--volume-index {volume_index} out of range (the file has {shape[3]} volumes)")
            data = np.asarray(img.dataobj[..., volume_index])
        elif len(shape) == 3:
            data = np.asarray(img.dataobj).reshape(shape)
        else:
            raise VolumeError(f"a {len(shape)}D image ({'x'.join(map(str, shape))}), not a volume of slices")
        affine = img.affine
    except VolumeError:
        raise
    except (OSError, EOFError, ValueError, Exception) as e:  # noqa: BLE001 - nibabel and gzip raise many kinds
        raise VolumeError(f"unreadable NIfTI file ({type(e).__name__}: {e})") from None
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError("the NIfTI affine is degenerate: the orientation cannot be known")
    return from_voxels(data, affine, _sha256([Path(path)]))


# DICOM series -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SliceHeader:
    path: Path
    uid: str
    position: tuple[float, float, float] | None  # ImagePositionPatient (LPS, mm)
    orientation: tuple[float, ...] | None  # ImageOrientationPatient: row direction, then column direction
    spacing: tuple[float, float] | None  # PixelSpacing: between rows, between columns
    shape: tuple[int, int]
    instance: int | None


def series_header(path: Path) -> SliceHeader | None:
    """The series fields of a single-frame DICOM file; None for one that cannot belong to a series."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - the file is then decoded alone, which reports what is wrong
        return None
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid or int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
        return None

    def floats(name, n):
        v = ds.get(name)
        try:
            return tuple(float(x) for x in v) if v is not None and len(v) == n else None
        except (TypeError, ValueError):
            return None

    inst = ds.get("InstanceNumber")
    return SliceHeader(path, uid, floats("ImagePositionPatient", 3), floats("ImageOrientationPatient", 6),
                       floats("PixelSpacing", 2), (int(ds.get("Rows", 0)), int(ds.get("Columns", 0))),
                       int(inst) if inst not in (None, "") else None)


def order_series(headers: list[SliceHeader]) -> tuple[list[SliceHeader], np.ndarray]:
    """A series' slices sorted along the slice normal, with their voxel-to-RAS affine; VolumeError names what
    makes the geometry mixed or incomplete. Without positions, InstanceNumber orders the slices (1 mm apart)."""
    shapes = {h.shape for h in headers}
    if len(shapes) > 1:
        raise VolumeError(f"mixed geometry: slices of {len(shapes)} sizes ({', '.join(f'{c}x{r}' for r, c in sorted(shapes))})")
    orients = {h.orientation for h in headers}
    if len(orients) > 1 or None in orients:
        raise VolumeError("mixed geometry: the slices do not share one ImageOrientationPatient"
                          if len(orients) > 1 else "incomplete geometry: a slice has no ImageOrientationPatient")
    o = np.array(headers[0].orientation)
    row_dir, col_dir = o[:3], o[3:]
    normal = np.cross(row_dir, col_dir)
    dr, dc = headers[0].spacing or (1.0, 1.0)
    if all(h.position is not None for h in headers):
        along = np.array([np.dot(h.position, normal) for h in headers])
        idx = np.argsort(along, kind="stable")
        ordered = [headers[i] for i in idx]
        gaps = np.diff(along[idx])
        if (gaps < 1e-3).any():
            raise VolumeError("mixed geometry: two slices at the same position")
        step = float(np.median(gaps))
        if (gaps > 1.5 * step).any():
            k = int(np.argmax(gaps > 1.5 * step))
            raise VolumeError(f"incomplete series: a slice is missing between positions {along[idx][k]:.1f} and "
                              f"{along[idx][k + 1]:.1f} mm (slices {step:.1f} mm apart)")
        origin = np.array(ordered[0].position)
        slice_vec = (np.array(ordered[-1].position) - origin) / max(1, len(ordered) - 1)
    elif all(h.instance is not None for h in headers):
        ordered = sorted(headers, key=lambda h: h.instance)
        origin, slice_vec = np.zeros(3), normal
    else:
        raise VolumeError("incomplete geometry: neither ImagePositionPatient nor InstanceNumber orders the slices")
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = row_dir * dc, col_dir * dr, slice_vec, origin
    return ordered, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM's LPS -> RAS


def read_series(headers: list[SliceHeader]) -> Volume:
    from brisc.imageio import dicom_pixels

    ordered, affine = order_series(headers)
    planes = []
    for h in ordered:
        try:
            planes.append(dicom_pixels(h.path))  # [rows, cols], modality LUT applied
        except Exception as e:  # noqa: BLE001 - one bad slice makes the series unreadable as a volume
            raise VolumeError(f"slice {h.path.name} is unreadable ({e})") from None
    data = np.stack(planes, axis=-1).transpose(1, 0, 2)  # [cols, rows, slices]: along the row direction first
    return from_voxels(data, affine, _sha256([h.path for h in ordered]))


# One cache for the decode threads: the slices of a volume are decoded one after another. ---------------------

_CACHE: OrderedDict = OrderedDict()
_LOCK = threading.Lock()
CACHED_VOLUMES = 2


def cached(key, load) -> Volume:
    """``load()`` once per key while it is among the last ``CACHED_VOLUMES`` used. One load at a time: a thread that
    asks for the volume being loaded waits for it rather than loading it again."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
            while len(_CACHE) > CACHED_VOLUMES:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
        return _CACHE[key]


@dataclass(frozen=True)
class VolumeSource:
    """Where a volume's slices come from, and how they are cut: the cache key of its decoded voxels."""

    files: tuple[Path, ...]  # the NIfTI file, or a DICOM series' files
    plane: str = "axial"
    volume_index: int | None = None  # the volume of a 4D NIfTI file
    series_uid: str | None = None  # set for a DICOM series

    def load(self) -> Volume:
        if self.series_uid is None:
            return cached((self.files, self.volume_index), lambda: read_nifti(self.files[0], self.volume_index))
        return cached((self.files, None), lambda: read_series([h for h in map(series_header, self.files) if h]))
