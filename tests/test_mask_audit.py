import numpy as np

from brisc.mask_audit import findings, head_region, peak_distance, pieces


def _head(size=128):
    yy, xx = np.mgrid[:size, :size]
    grey = np.where((yy - 64) ** 2 + (xx - 64) ** 2 < 50 ** 2, 120, 3).astype(np.uint8)
    grey[60:70, 60:70] = 5  # a dark core inside the head is still head
    return grey


def test_pieces_are_8_connected_and_sorted():
    m = np.zeros((20, 20), bool)
    m[1:4, 1:4] = True  # 9
    m[4, 4] = True  # touches the first diagonally
    m[10:12, 10:15] = True  # 10
    assert pieces(m) == [10, 10]
    assert pieces(np.zeros((5, 5), bool)) == []


def test_the_head_is_filled_and_air_is_not():
    head = head_region(_head())
    assert head[65, 65] and head[64, 20] and not head[2, 2] and not head[64, 126]


def test_peak_distance_is_zero_inside_and_euclidean_outside():
    mask = np.zeros((50, 50), bool)
    mask[10:20, 10:20] = True
    hm = np.zeros((50, 50))
    hm[15, 15] = 1
    assert peak_distance(hm, mask) == 0
    hm[15, 15], hm[19, 40] = 0, 1
    assert peak_distance(hm, mask) == 21.0
    assert peak_distance(hm, np.zeros_like(mask)) is None


def test_each_finding_on_a_mask_made_to_have_it():
    grey = _head()
    good = np.zeros((128, 128), bool)
    good[50:70, 50:70] = True
    near = np.zeros((128, 128))
    near[60, 60] = 1
    far = np.zeros((128, 128))
    far[110, 64] = 1
    assert findings(good, grey, heatmap=near, correct=True, probability=0.99)["flags"] == []
    assert findings(np.zeros_like(good), grey)["flags"] == ["empty"]
    speck = np.zeros_like(good)
    for k in range(5):
        speck[30 + 12 * k:35 + 12 * k, 40:45] = True
    assert "speckled" in findings(speck, grey)["flags"]
    air = np.zeros_like(good)
    air[0:10, 0:10] = True
    assert "outside the head" in findings(air, grey)["flags"]
    assert findings(good, grey, heatmap=far, correct=True, probability=0.99)["flags"] == ["far from where the model looks"]
    # Only a confident, correct model's look counts against a mask
    assert findings(good, grey, heatmap=far, correct=False, probability=0.99)["flags"] == []
    assert findings(good, grey, heatmap=far, correct=True, probability=0.6)["flags"] == []


def test_the_audit_script_lists_every_mask_of_the_run_and_refuses_an_existing_folder(tiny_run, tiny_export, tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from brisc.runfolder import RunFolder

    out = tmp_path / "audit"
    cmd = [sys.executable, "scripts/mask_audit.py", "--run", str(tiny_run), "--model", str(tiny_export / "vit.onnx"),
           "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(out / "audit.csv")))
    rf = RunFolder(tiny_run)
    in_split = {Path(p).name for p in rf.train_paths() + rf.val_paths()}
    assert rows and {row["image"] for row in rows} <= in_split
    assert {row["split"] for row in rows} <= {"train", "val"}
    flagged = [row["image"] for row in rows if row["flags"]]
    listed = (out / "flagged.txt").read_text().split()
    assert sorted(listed) == sorted(flagged)
    md = (out / "audit.md").read_text()
    assert "| flag | train | validation |" in md and "| class | validation masks | pointing |" in md
    for thumb in (out / "thumbs").glob("*.png"):
        assert Image.open(thumb).size == (384, 192)
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode != 0 and "already exists" in again.stderr and "Traceback" not in again.stderr
