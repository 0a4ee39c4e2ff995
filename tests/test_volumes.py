"""Volumes: NIfTI files and DICOM series read as BRISC shows slices, one row per slice, one per volume."""

import csv
import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from brisc.inference.outdir import OutFolder
from brisc.inference.per_volume import decide
from brisc.synth_volumes import (ras_affine, ras_volume, stored, volume_slices, write_nifti, write_series)
from brisc.volumes import VolumeSource, canonical, to_uint8, window
from conftest import run_cli

INFER = "brisc.inference.cli"
DEPTH, BLANK = 20, 3


@pytest.fixture(scope="module")
def glioma_slices():
    return volume_slices("glioma", 5, size=64)


def _rows(out):
    return {(r["path"], r["frame"]): r for r in OutFolder(out).rows()}


def _volumes(out):
    with open(out / "volumes.csv", newline="", encoding="utf-8") as f:
        return {r["volume"]: r for r in csv.DictReader(f)}


@pytest.mark.parametrize("axes", [(0, 1, 2), (2, 0, 1), (1, 2, 0), (2, 1, 0)])
@pytest.mark.parametrize("flips", [(False, False, False), (True, False, True), (True, True, True)])
def test_reorientation_matches_nibabel(axes, flips):
    rng = np.random.default_rng(0)
    data = rng.random((5, 6, 7)).astype(np.float32)
    base = ras_affine(6)
    theta = 0.2  # a slightly oblique acquisition: the closest canonical axes still win
    rot = np.eye(4)
    rot[:2, :2] = [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
    arr, aff = stored(data, rot @ base, axes=axes, flips=flips)
    ours, our_aff = canonical(arr, aff)
    ref = nib.as_closest_canonical(nib.Nifti1Image(arr, aff))
    np.testing.assert_array_equal(ours, np.asarray(ref.dataobj))
    np.testing.assert_allclose(our_aff, ref.affine, atol=1e-9)


def test_nifti_and_dicom_series_read_back_as_the_slices_they_were_made_of(glioma_slices, tmp_path):
    """The phantom's slices are drawn as BRISC shows a slice; read back from a NIfTI file stored permuted and
    flipped, and from a DICOM series in LPS with its files in reverse order, every slice is that picture."""
    slices, slab = glioma_slices
    nii = write_nifti(tmp_path / "v.nii.gz", slices)
    files = write_series(tmp_path / "series", slices)
    lo, hi = window(ras_volume(slices).astype(np.float64))
    for src in (VolumeSource((nii,)), VolumeSource(tuple(sorted(files)), series_uid="x")):
        vol = src.load()
        assert vol.count("axial") == DEPTH and vol.zooms == pytest.approx((0.9, 0.9, 4.0))
        for z in (BLANK, slab[0], slab[1] - 1, DEPTH - BLANK - 1):
            shown = np.asarray(vol.image("axial", z))
            np.testing.assert_array_equal(shown, to_uint8(slices[z], lo, hi))
            assert not np.array_equal(shown, shown[::-1]) and not np.array_equal(shown, shown[:, ::-1])


def test_coronal_and_sagittal_slices_have_square_pixels(glioma_slices, tmp_path):
    slices, _ = glioma_slices
    vol = VolumeSource((write_nifti(tmp_path / "v.nii.gz", slices),)).load()
    assert vol.count("coronal") == vol.count("sagittal") == 64
    # 20 slices 4 mm apart over 0.9 mm pixels: 89 rows, superior at the top (the blank top slices first)
    img = np.asarray(vol.image("coronal", 32))
    assert img.shape == (round(DEPTH * 4.0 / 0.9), 64)
    assert img[:5].max() == 0 and img[-5:].max() == 0 and img[40].max() > 0


def test_brisc_shows_superior_at_the_top_and_anterior_at_the_top_of_axial_slices(real_images, brisc_root):
    """How brisc's display was matched to BRISC's: nilearn's MNI152 template cut as brisc cuts a volume looks
    like BRISC's own slices the right way up (coronal and sagittal: the mean BRISC slice of that plane correlates
    better with the template's than with its upside-down version; axial: the shipped model finds the template's
    axial slices less unlike its training scans than the same slices upside down). Left and right cannot be told
    from BRISC (its sagittal slices face either way; training flips images at random): brisc uses the radiological
    display that DICOM viewers use, checked above on a DICOM series."""
    from nilearn.datasets import load_mni152_template

    from brisc.imageio import resize, to_array
    from brisc.inference.session import open_session
    from brisc.volumes import from_voxels

    t = load_mni152_template(resolution=2)
    vol = from_voxels(np.asarray(t.dataobj), t.affine, "mni152")
    files = sorted((brisc_root / "classification_task").rglob("*.jpg"))

    def grey(im):
        return np.asarray(im.convert("L").resize((64, 64), Image.Resampling.BILINEAR), np.float64)

    def central(plane):
        ks = [k for k in range(vol.count(plane)) if vol.foreground(plane)[k] > 0.3]
        return [vol.image(plane, k) for k in ks[len(ks) // 2 - len(ks) // 8: len(ks) // 2 + len(ks) // 8 + 1]]

    for plane, code in (("coronal", "_co_"), ("sagittal", "_sa_")):
        mean = np.mean([grey(Image.open(f)) for f in [f for f in files if code in f.name][:300]], 0)
        ours = np.mean([grey(im) for im in central(plane)], 0)
        corr = lambda a: np.corrcoef(a.ravel(), mean.ravel())[0, 1]  # noqa: E731
        assert corr(ours) > corr(ours[::-1]) + 0.03, plane
    sess = open_session(None)
    x = np.stack([to_array(resize(im.convert("RGB"))) for im in central("axial")])
    up = np.median(sess.run(x, ["ood_score"])["ood_score"])
    down = np.median(sess.run(x[:, :, ::-1].copy(), ["ood_score"])["ood_score"])
    assert up < 0.97 * down


def test_volume_run_rows_volumes_csv_contact_sheets_and_the_same_rows_whatever_the_orientation(
        tiny_export, glioma_slices, tmp_path):
    slices, slab = glioma_slices
    data = tmp_path / "scans"
    data.mkdir()
    write_nifti(data / "a.nii.gz", slices)
    write_nifti(data / "b.nii", slices, axes=(1, 0, 2), flips=(True, True, False))  # stored otherwise
    write_series(data / "series", slices, uid="1.2.826.0.1.3680043.8.498.1")
    out = tmp_path / "out"
    r = run_cli(INFER, data, "--model", tiny_export / "vit.onnx", "--out", out, "--heatmaps", "--quiet")
    rows = _rows(out)
    uid_rel = "series/1.2.826.0.1.3680043.8.498.1"
    frames = range(BLANK, DEPTH - BLANK)
    assert {k for k in rows} == {(p, z) for p in ("a.nii.gz", "b.nii", uid_rel) for z in frames}, r.stderr
    for z in frames:  # the same pictures, so the same answers, however the voxels were stored
        a, b, s = rows[("a.nii.gz", z)], rows[("b.nii", z)], rows[(uid_rel, z)]
        assert a["probabilities"] == b["probabilities"] == s["probabilities"]
        assert s["volume"] == "1.2.826.0.1.3680043.8.498.1" and a["volume"] == "a.nii.gz"
        with Image.open(out / a["heatmap"]) as im:
            im.load()
    skipped = OutFolder(out).table("skipped.csv")
    assert ("a.nii.gz#frame0000", skipped[0][1]) in skipped and "mostly background" in skipped[0][1]
    assert sum(p.startswith("a.nii.gz#") for p, _ in skipped) == 2 * BLANK
    vols = _volumes(out)
    assert set(vols) == {"a.nii.gz", "b.nii", uid_rel}
    assert vols["a.nii.gz"]["predicted"] == vols["b.nii"]["predicted"] == vols[uid_rel]["predicted"]
    assert vols["a.nii.gz"]["background_slices_skipped"] == str(2 * BLANK) and vols["a.nii.gz"]["slices"] == "14"
    for v in vols.values():
        with Image.open(out / v["contact_sheet"]) as im:
            assert im.width >= 192
    s = json.loads((out / "summary.json").read_text())
    assert s["volumes"]["n"] == 3 and "contiguous" in s["volumes"]["rule"]
    assert "Volumes" in (out / "index.html").read_text()


def test_bad_volumes_each_give_one_row_and_the_rest_goes_on(tiny_export, glioma_slices, tmp_path):
    slices, _ = glioma_slices
    data = tmp_path / "scans"
    data.mkdir()
    good = write_nifti(data / "good.nii.gz", slices)
    (data / "truncated.nii.gz").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    four = np.stack([ras_volume(slices)] * 2, -1).astype(np.int16)
    nib.save(nib.Nifti1Image(four, ras_affine(64)), str(data / "fmri.nii.gz"))
    files = write_series(data / "missing", slices)
    files[len(files) // 2].unlink()  # a slice missing from the middle of the series
    bad = write_series(data / "badslice", slices)
    bad[5].write_bytes(bad[5].read_bytes()[:400])  # the header survives, the pixels do not
    Image.fromarray(slices[10]).save(data / "plain.png")
    out = tmp_path / "out"
    r = run_cli(INFER, data, "--model", tiny_export / "vit.onnx", "--out", out, "--quiet", check=False)
    assert r.returncode == 1, r.stderr
    errors = dict(OutFolder(out).table("errors.csv"))
    assert "unreadable NIfTI file" in errors["truncated.nii.gz"]
    assert "4D volume" in errors["fmri.nii.gz"] and "--volume-index" in errors["fmri.nii.gz"]
    assert any(p.startswith("missing/") and "slice is missing" in e for p, e in errors.items()), errors
    assert any(p.startswith("badslice/") for p in errors), errors
    rows = _rows(out)
    assert ("plain.png", None) in rows and sum(p == "good.nii.gz" for p, _ in rows) == DEPTH - 2 * BLANK
    # the 4D file, one volume of it picked
    out2 = tmp_path / "out2"
    run_cli(INFER, data / "fmri.nii.gz", "--model", tiny_export / "vit.onnx", "--out", out2, "--quiet",
            "--volume-index", "1")
    assert len(_rows(out2)) == DEPTH - 2 * BLANK


def _slice(frame, cls, p, ok=True):
    probs = {c: (p if c == cls else (1 - p) / 3) for c in ("glioma", "meningioma", "no_tumor", "pituitary")}
    return {"frame": frame, "predicted": cls, "probability": p, "probabilities": probs, "in_distribution": ok}


def test_the_volume_rule_needs_k_contiguous_confident_in_distribution_slices():
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    base = [_slice(z, "no_tumor", 0.95) for z in range(10)]
    three = base[:3] + [_slice(z, "glioma", 0.95) for z in (3, 4, 5)] + base[6:]
    assert decide(three, classes, k=3, t=0.9)[0] == "glioma"
    assert [r["frame"] for r in decide(three, classes, k=3, t=0.9)[1]] == [3, 4, 5]
    assert decide(three, classes, k=4, t=0.9)[0] == "no_tumor"
    assert decide(three, classes, k=3, t=0.96)[0] == "no_tumor"  # not confident enough
    gap = [r for r in three if r["frame"] != 4]  # slice 4 missing (skipped): no longer contiguous
    assert decide(gap, classes, k=3, t=0.9)[0] == "no_tumor"
    odd = three[:4] + [_slice(4, "glioma", 0.95, ok=False)] + three[5:]
    assert decide(odd, classes, k=3, t=0.9)[0] == "no_tumor"  # a slice not like the training scans is no evidence
    mixed = base[:2] + [_slice(z, "meningioma", 0.99) for z in (2, 3, 4)] + [_slice(z, "glioma", 0.92) for z in (5, 6, 7, 8)]
    assert decide(mixed, classes, k=3, t=0.9)[0] == "glioma"  # the longest run wins


def test_the_mni152_template_is_no_tumor_for_the_shipped_model(tmp_path):
    """A real brain without a tumour (nilearn ships it in its wheel): the shipped model's volume answer."""
    from nilearn.datasets import load_mni152_template

    nib.save(load_mni152_template(resolution=2), str(tmp_path / "mni152.nii.gz"))
    out = tmp_path / "out"
    run_cli(INFER, tmp_path / "mni152.nii.gz", "--out", out, "--quiet")
    assert _volumes(out)["mni152.nii.gz"]["predicted"] == "no_tumor"


def test_a_gzip_that_is_not_nifti_is_one_error_row(tiny_export, tmp_path):
    (tmp_path / "notes.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 20))
    out = tmp_path / "out"
    r = run_cli(INFER, tmp_path / "notes.nii.gz", "--model", tiny_export / "vit.onnx", "--out", out, "--quiet",
                check=False)
    assert r.returncode == 3 and "unreadable NIfTI file" in dict(OutFolder(out).table("errors.csv"))["notes.nii.gz"]


def test_planes_mixed_series_a_missing_extra_and_brisc_synth_volumes(tiny_export, glioma_slices, tmp_path):
    slices, _ = glioma_slices
    data = tmp_path / "scans"
    data.mkdir()
    write_nifti(data / "v.nii.gz", slices)
    files = write_series(data / "mixed", slices)
    from pydicom import dcmread

    ds = dcmread(files[3])
    ds.Rows, ds.Columns = 32, 128  # the same pixel count, another shape: mixed geometry
    ds.save_as(files[3])
    model = tiny_export / "vit.onnx"
    out = tmp_path / "coronal"
    run_cli(INFER, data, "--model", model, "--out", out, "--plane", "coronal", "--quiet", check=False)
    rows = _rows(out)
    assert {z for p, z in rows if p == "v.nii.gz"} <= set(range(64)) and sum(p == "v.nii.gz" for p, _ in rows) > 30
    errors = dict(OutFolder(out).table("errors.csv"))
    assert any(p.startswith("mixed/") and "mixed geometry" in e for p, e in errors.items()), errors
    # without nibabel a NIfTI file is one error row naming the extra; the rest goes on
    import subprocess
    import sys

    code = "import sys\nsys.modules['nibabel'] = None\nfrom brisc.inference.cli import main\nmain(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, str(data / "v.nii.gz"), str(data / "mixed" / "im0001.dcm"),
                        "--model", str(model), "--out", str(tmp_path / "nonib"), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 1, r.stderr
    assert "brisc-mri[volumes]" in dict(OutFolder(tmp_path / "nonib").table("errors.csv"))["v.nii.gz"]
    # brisc-synth --volumes writes NIfTI files and DICOM series that brisc-infer reads
    synth = tmp_path / "synth"
    r = run_cli("brisc.synth_cli", synth, "--per-class", "1", "--size", "64", "--volumes", "2")
    assert "wrote 2 volumes" in r.stdout
    assert sorted(p.name for p in (synth / "volumes").glob("*.nii.gz")) == ["glioma_000.nii.gz", "meningioma_001.nii.gz"]
    assert len(list((synth / "volumes" / "series" / "glioma_000").glob("*.dcm"))) == DEPTH
