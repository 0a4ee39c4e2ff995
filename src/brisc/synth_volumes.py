"""Synthetic volumes for brisc-infer's volume path (``brisc-synth --volumes N``): stacks of one phantom's axial
slices with a lesion in a known slab and blank slices at both ends, written as a NIfTI file whose voxels are
stored permuted and flipped (a non-trivial affine) and as a DICOM series (LPS positions, files not in slice
order). Needs nibabel and pydicom (``brisc-mri[volumes]``).

Each slice image is the phantom as BRISC shows a slice (radiological display), so the volume read back by
``brisc.volumes`` must give the same pictures: what the tests check.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from brisc.synth import CLASSES, render

SPACING = (0.9, 0.9, 4.0)  # mm along x, y, z
STORED_AXES, STORED_FLIPS = (2, 0, 1), (True, False, True)  # the NIfTI stores (z, x, y), z and y reversed


def volume_slices(label: str, seed: int, *, size: int = 96, depth: int = 20, blank: int = 3,
                  slab: tuple[int, int] = (8, 13)) -> tuple[np.ndarray, tuple[int, int]]:
    """[depth, size, size] uint8 display images: one anatomy, the lesion (``label``) only in ``slab`` (for
    no_tumor, none), ``blank`` empty slices at each end. -> (slices, slab)."""
    out = np.zeros((depth, size, size), np.uint8)
    for z in range(blank, depth - blank):
        inside = slab[0] <= z < slab[1]
        rng = np.random.default_rng([seed, 1])  # the same seed each slice: the same head, with or without lesion
        out[z] = render(label if inside else "no_tumor", "ax", rng, size).image
    return out, (slab if label != "no_tumor" else (0, 0))


def ras_volume(slices: np.ndarray) -> np.ndarray:
    """Display images -> the RAS+ voxels they show (the inverse of brisc.volumes.display_slice)."""
    return np.stack([s[::-1, ::-1].T for s in slices], axis=-1)


def ras_affine(size: int) -> np.ndarray:
    a = np.diag([*SPACING, 1.0])
    a[:3, 3] = (-60.0, -50.0, -20.0)
    return a


def stored(ras: np.ndarray, affine: np.ndarray, axes=STORED_AXES, flips=STORED_FLIPS) -> tuple[np.ndarray, np.ndarray]:
    """The same voxels stored with axes permuted (stored axis a is RAS axis ``axes[a]``) and flipped, and the
    affine that keeps every voxel where it was."""
    data = np.transpose(ras, axes)
    m = np.zeros((4, 4))
    m[3, 3] = 1
    for a, (w, f) in enumerate(zip(axes, flips)):
        if f:
            data = np.flip(data, a)
        m[w, a] = -1 if f else 1
        m[w, 3] = data.shape[a] - 1 if f else 0
    return np.ascontiguousarray(data), affine @ m


def write_nifti(path: Path, slices: np.ndarray, **stored_kw) -> Path:
    import nibabel as nib

    data, affine = stored(ras_volume(slices), ras_affine(slices.shape[1]), **stored_kw)
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), str(path))
    return path


def new_dataset(sop_class: str):
    """An empty DICOM dataset of ``sop_class`` with its file meta (explicit VR little endian), an MR of a phantom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = "MR", "Synthetic^Phantom"
    return ds


def write_series(folder: Path, slices: np.ndarray, *, uid: str | None = None) -> list[Path]:
    """One DICOM file per slice, axial (ImageOrientationPatient 1,0,0,0,1,0), positioned in LPS; the files are
    named in reverse slice order, so only their positions order them."""
    from pydicom.uid import MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    dx, dy, dz = SPACING
    o = ras_affine(slices.shape[1])[:3, 3]
    n, size = slices.shape[0], slices.shape[1]
    paths = []
    for z in range(n):
        ds = new_dataset(MRImageStorage)
        ds.SeriesInstanceUID = uid
        ds.InstanceNumber = z + 1
        # pixel (row 0, column 0) is the patient's most right, most anterior voxel of the slice
        ds.ImagePositionPatient = [-(o[0] + dx * (size - 1)), -(o[1] + dy * (size - 1)), o[2] + dz * z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [dy, dx], dz
        ds.Rows, ds.Columns = size, size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = slices[z].astype(np.uint16).tobytes()
        p = folder / f"im{n - z:04d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def generate_volumes(out: Path, n: int, *, seed: int = 0, size: int = 96) -> list[dict]:
    """``n`` volumes under out/volumes/, the classes in turn: <class>_<i>.nii.gz and series/<class>_<i>/*.dcm.
    -> what each holds (class, lesion slab)."""
    root = out / "volumes"
    root.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        label = CLASSES[i % len(CLASSES)]
        slices, slab = volume_slices(label, seed * 1000 + i, size=size)
        name = f"{label}_{i:03d}"
        write_nifti(root / f"{name}.nii.gz", slices)
        write_series(root / "series" / name, slices)
        made.append({"name": name, "class": label, "slab": list(slab), "slices": int(slices.shape[0])})
    return made
