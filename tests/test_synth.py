import hashlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageFilter

from brisc.data import discover, load_mask
from brisc.synth import generate, render
from conftest import run_cli


def _digest(root):
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix in (".jpg", ".png"):
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_layout_and_names_match_the_release(synth_root):
    d = discover(synth_root)
    assert d.layout == "release" and not d.name_mismatches and not d.unreadable
    names = {p.name for p in (synth_root / "classification_task" / "train" / "no_tumor").glob("*.jpg")}
    assert all(n.startswith("brisc2025_train_") and "_no_" in n and n.endswith("_t1.jpg") for n in names)
    seg = synth_root / "segmentation_task" / "train"
    assert len(list((seg / "masks").glob("*.png"))) == 36 and len(list((seg / "images").glob("*.jpg"))) == 36


def test_deterministic_per_seed(tmp_path):
    a, b, c = (generate(tmp_path / n, per_class=3, seed=s) for n, s in (("a", 7), ("b", 7), ("c", 8)))
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


@pytest.mark.parametrize("label", ["glioma", "meningioma", "pituitary"])
@pytest.mark.parametrize("plane", ["ax", "co", "sa"])
def test_only_the_lesion_separates_the_classes(label, plane):
    """Same seed with and without a lesion: pixels differ only where the mask is (plus its soft edge)."""
    for seed in range(5):
        a = render(label, plane, np.random.default_rng(seed))
        b = render("no_tumor", plane, np.random.default_rng(seed))
        assert b.mask is None and a.mask is not None
        diff = np.abs(a.image.astype(int) - b.image.astype(int))
        lesion = a.mask > 127
        near = np.asarray(Image.fromarray(a.mask).filter(ImageFilter.MaxFilter(5))) > 0
        assert 0.0005 < lesion.mean() < 0.1
        assert diff[~near].max() == 0
        assert diff[lesion].mean() > 20


def test_masks_on_disk_are_joined_and_binarise(synth_root):
    d = discover(synth_root)
    for s in d.samples:
        if s.mask:
            m = load_mask(s.mask)
            assert m.shape == Image.open(s.path).size[::-1] and m.any()


def test_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "brisc.synth_cli", str(tmp_path / "s"), "--per-class", "2", "--seed", "1"],
                       capture_output=True, text=True, check=True)
    assert "wrote 12 images and 9 masks" in r.stdout


def test_refuses_a_folder_of_real_scans_and_rewrites_its_own(tmp_path):
    real = tmp_path / "scans"
    real.mkdir()
    (real / "patient_001.jpg").write_bytes(b"a real scan")
    r = run_cli("brisc.synth_cli", real, "--per-class", "1", check=False)
    assert r.returncode == 2 and "did not write" in r.stderr
    assert sorted(p.name for p in real.iterdir()) == ["patient_001.jpg"]
    own = tmp_path / "synth"
    generate(own, per_class=1, seed=0)
    generate(own, per_class=1, seed=1)  # its own folder may be written again


@pytest.mark.parametrize("case, args, says", [
    ("no images", ["--per-class", "0"], "--per-class must be >= 1"),
    ("too small", ["--size", "16"], "--size >= 32"),
    ("under a file", [], "cannot write"),
    ("no nibabel", ["--volumes", "1"], "--volumes needs nibabel and pydicom (nibabel is missing)"),
])
def test_cli_refusals_are_one_line_and_write_nothing(tmp_path, case, args, says):
    out = tmp_path / "s"
    if case == "under a file":
        (tmp_path / "f").write_text("a file, not a folder")
        out = tmp_path / "f" / "s"
    hide = "sys.modules['nibabel'] = None\n" if case == "no nibabel" else ""
    code = f"import sys\n{hide}from brisc.synth_cli import main\nmain(sys.argv[1:])"
    r = subprocess.run([sys.executable, "-c", code, str(out), *args], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("brisc-synth: error: ") and says in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert not out.exists()
