"""Volumes among brisc-infer's inputs: a NIfTI file, or the single-frame DICOM files of one folder that share a
SeriesInstanceUID, become one item per slice (``brisc.volumes`` reads them); slices that are mostly background
are listed as skipped, with the reason; a volume that cannot be read as one is one error row."""

from __future__ import annotations

from pathlib import Path

from brisc.imageio import DICOM_SUFFIXES, is_dicom
from brisc.volumes import FOREGROUND_MIN, VolumeError, VolumeSource, series_header


def add_volume(col, src: VolumeSource, rel: str, volume: str, item_type) -> None:
    """The slices of one volume into ``col`` (items, skipped background slices), or its one error row."""
    try:
        vol = src.load()
    except VolumeError as e:
        col.errors.append((rel, str(e)))
        return
    for k, f in enumerate(vol.foreground(src.plane)):
        it = item_type(src.files[0], rel, k, source=src, volume=volume)
        if f < FOREGROUND_MIN:
            col.skipped.append((it.key, f"mostly background ({f:.0%} of the slice above a tenth of the volume's "
                                        "window)"))
        else:
            col.items.append(it)


def _single_frame_dicom(it) -> bool:
    return it.frame is None and it.source is None and (it.path.suffix.lower() in DICOM_SUFFIXES
                                                       or (it.path.suffix == "" and is_dicom(it.path)))


def group_series(col, *, plane: str, item_type) -> None:
    """Single-frame DICOM files of one folder sharing a SeriesInstanceUID (two or more) -> one volume each,
    named ``<folder>/<SeriesInstanceUID>``; every other item stays as it was."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return  # without pydicom each DICOM file is an error row of its own, naming the extra
    groups: dict[tuple[Path, str], list] = {}
    keep = []
    for it in col.items:
        h = series_header(it.path) if _single_frame_dicom(it) else None
        if h is None:
            keep.append(it)
        else:
            groups.setdefault((it.path.parent, h.uid), []).append(it)
    col.items = keep
    for (_, uid), members in groups.items():
        if len(members) == 1:
            col.items.append(members[0])
            continue
        members.sort(key=lambda it: it.rel)
        folder = members[0].rel.rpartition("/")[0]
        rel = f"{folder}/{uid}" if folder else uid
        add_volume(col, VolumeSource(tuple(it.path for it in members), plane, series_uid=uid), rel, uid, item_type)
