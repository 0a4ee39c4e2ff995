import json
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from brisc import CLASSES
from brisc.data import (DataError, canonical_class, discover, load_mask, make_splits, parse_brisc_name,
                        stratified_split)


def _copy_tree(src, dst, rename=None):
    shutil.copytree(src, dst)
    for old, new in (rename or {}).items():
        (dst / old).rename(dst / new)
    return dst


def test_parse_brisc_names_including_no_and_nt():
    p = parse_brisc_name("brisc2025_train_00012_gl_ax_t1.jpg")
    assert (p.split, p.index, p.label, p.plane, p.sequence) == ("train", 12, "glioma", "axial", "t1")
    assert parse_brisc_name("brisc2025_test_00001_no_co_t1.jpg").label == "no_tumor"
    assert parse_brisc_name("brisc2025_test_00001_nt_sa_t1.jpg").label == "no_tumor"
    assert parse_brisc_name("brisc2025_train_00003_pi_sa_t1.png").plane == "sagittal"
    assert parse_brisc_name("scan_0001.jpg") is None
    assert parse_brisc_name("brisc2025_train_00001_xx_ax_t1.jpg") is None


def test_class_aliases():
    for alias in ("notumor", "no-tumor", "no", "nt", "healthy", "No_Tumor"):
        assert canonical_class(alias) == "no_tumor"
    assert canonical_class("glioma_tumor") == "glioma"
    assert canonical_class("cat") is None


def test_release_layout_with_masks(synth_root):
    d = discover(synth_root)
    assert d.layout == "release"
    assert len(d.samples) == 4 * 15
    for s in d.samples:
        assert (s.mask is not None) == (s.class_name != "no_tumor")
        assert s.plane in ("axial", "coronal", "sagittal") and s.sequence == "t1"
    m = load_mask(next(s.mask for s in d.samples if s.mask))
    assert m.dtype == bool and m.any() and not m.all()


def test_classification_task_folder_still_joins_masks(synth_root):
    d = discover(synth_root / "classification_task")
    assert d.layout == "classification_task"
    assert sum(s.mask is not None for s in d.samples) == 3 * 15


def test_kaggle_style_training_testing_with_notumor(synth_root, tmp_path):
    root = tmp_path / "kaggle"
    root.mkdir()
    for split, new in (("train", "Training"), ("test", "Testing")):
        _copy_tree(synth_root / "classification_task" / split, root / new, rename={"no_tumor": "notumor"})
    d = discover(root)
    assert d.layout == "split-folders"
    counts = {sp: sum(s.split == sp for s in d.samples) for sp in ("train", "test")}
    assert counts == {"train": 48, "test": 12}
    assert {s.class_name for s in d.samples} == set(CLASSES)


def test_plain_class_folders(synth_root, tmp_path):
    root = _copy_tree(synth_root / "classification_task" / "train", tmp_path / "plain")
    d = discover(root)
    assert d.layout == "class-folders" and len(d.samples) == 48 and {s.split for s in d.samples} == {"train"}


def test_name_folder_disagreement_is_reported(synth_root, tmp_path):
    root = _copy_tree(synth_root / "classification_task" / "train", tmp_path / "plain")
    src = next((root / "glioma").glob("*.jpg"))
    shutil.move(src, root / "pituitary" / src.name)
    d = discover(root)
    assert [(m[1], m[2]) for m in d.name_mismatches] == [("pituitary", "glioma")]


def test_split_is_stratified_seeded_and_disjoint(synth_root):
    d = discover(synth_root)
    a, b = (make_splits(d, val_fraction=0.25, seed=3, method="random") for _ in range(2))
    assert [s.path for s in a.val] == [s.path for s in b.val]
    c = make_splits(d, val_fraction=0.25, seed=4, method="random")
    assert [s.path for s in a.val] != [s.path for s in c.val]
    for k in range(4):
        assert sum(s.label == k for s in a.val) == 3  # 25% of 12 per class
    assert not {s.path for s in a.val} & {s.path for s in a.train}
    assert all(s.split == "val" for s in a.val) and all(s.split == "test" for s in a.test)
    # Order of the input does not matter.
    train = [s for s in d.samples if s.split == "train"]
    assert stratified_split(train[::-1], 0.25, 3)[1] == stratified_split(train, 0.25, 3)[1]


def test_duplicates_of_test_and_val_are_dropped_from_train(synth_root, tmp_path):
    root = _copy_tree(synth_root, tmp_path / "dup")
    test_img = next((root / "classification_task" / "test" / "glioma").glob("*.jpg"))
    shutil.copy(test_img, root / "classification_task" / "train" / "glioma" / "copy_of_test.jpg")
    d = discover(root)
    s = make_splits(d, val_fraction=0.1, seed=0)
    assert s.duplicates["dropped_from_train"] == 1
    assert not any(x.path.endswith("copy_of_test.jpg") for x in s.train)
    assert s.duplicates["groups"] == 0  # after dropping, nothing is duplicated


def test_unreadable_files_are_listed_and_skipped(synth_root, tmp_path):
    root = _copy_tree(synth_root / "classification_task" / "train", tmp_path / "plain")
    (root / "glioma" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "glioma" / "empty.png").write_bytes(b"")
    (root / "glioma" / "notes.txt").write_text("ignored")
    d = discover(root)
    assert sorted(p.split("/")[-1] for p, _ in d.unreadable) == ["broken.jpg", "empty.png"]
    assert d.ignored_files == 1 and len(d.samples) == 48


@pytest.mark.parametrize("setup,message", [
    ("missing", "does not exist"),
    ("unknown", "unknown class folder 'cats'"),
    ("empty", "empty class folder"),
    ("noimages", "no readable images"),
])
def test_bad_datasets_give_one_line_and_exit_2(tmp_path, setup, message):
    root = tmp_path / "data"
    if setup != "missing":
        for c in CLASSES:
            (root / c).mkdir(parents=True)
            if setup != "empty" or c != "glioma":
                Image.new("L", (8, 8)).save(root / c / "a.png") if setup != "noimages" else (root / c / "a.jpg").write_bytes(b"x")
    if setup == "unknown":
        (root / "cats").mkdir()
        Image.new("L", (8, 8)).save(root / "cats" / "a.png")
    with pytest.raises(DataError, match=message):
        discover(root)
    r = subprocess.run([sys.executable, "-m", "brisc.data_cli", str(root)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr and "Traceback" not in r.stderr


def test_brisc_data_json_on_real_brisc(brisc_root):
    r = subprocess.run([sys.executable, "-m", "brisc.data_cli", str(brisc_root), "--json"],
                       capture_output=True, text=True, check=True)
    rep = json.loads(r.stdout)
    assert rep["layout"] == "release"
    assert rep["found"]["train"]["per_class"] == {"glioma": 1147, "meningioma": 1329, "no_tumor": 1067, "pituitary": 1457}
    assert rep["found"]["train"]["masks_joined"] == 3933
    sp = rep["split"]
    assert abs(sp["val"]["images"] - 500) <= 2 and sp["test"]["images"] == 0  # 10%, rounded per class
    assert sp["train"]["images"] + sp["val"]["images"] + rep["duplicates"]["dropped_from_train"] == 5000


def test_classes_in_turn_makes_every_prefix_span_the_classes():
    from brisc.data import Sample, classes_in_turn

    counts = {0: 5, 1: 3, 3: 4}  # unequal classes, sorted by path the first 5 would all be class 0
    samples = [Sample(path=f"{c}/{i}.jpg", label=c, split="val", sha1=f"{c}{i}") for c, n in counts.items()
               for i in range(n)][::-1]
    ordered = classes_in_turn(samples)
    assert sorted(s.path for s in ordered) == sorted(s.path for s in samples)  # a reordering, nothing lost
    assert [s.label for s in ordered[:3]] == [0, 1, 3] and [s.path for s in ordered[:3]] == ["0/0.jpg", "1/0.jpg", "3/0.jpg"]
    assert [s.label for s in ordered[-3:]] == [0, 3, 0]  # rank 3 of classes 0 and 3, then the largest class alone
    for c in counts:  # within a class, path order
        paths = [s.path for s in ordered if s.label == c]
        assert paths == sorted(paths)
