"""brisc-infer past one process: --shard I/N + merge against one run, and --engine ray against the local engine."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from brisc.inference.inputs import Collected, Item
from brisc.inference.outdir import OutFolder
from brisc.inference.shard import select
from brisc.synth import generate
from conftest import run_cli

INFER = "brisc.inference.cli"
NUMBERS = ("probability", "ood_score")


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """32 scans in class folders, a NIfTI volume (14 slices and 6 background ones), an unreadable "scan" among
    them and a file that is not an image."""
    from brisc.synth_volumes import volume_slices, write_nifti

    data = tmp_path_factory.mktemp("scale")
    generate(data, per_class=8, test_per_class=0, seed=3, size=96)
    root = data / "classification_task" / "train"
    write_nifti(root / "study.nii.gz", volume_slices("meningioma", 1, size=64)[0])
    (root / "meningioma" / "m_broken.jpg").write_bytes(b"not a jpeg")
    (root / "notes.txt").write_text("acquisition notes\n")
    return root


def _infer(model, *args, check=True):
    return run_cli(INFER, *args, "--model", model, "--quiet", check=check)


def _same_rows(a: OutFolder, b: OutFolder) -> None:
    """Every row of ``a`` in ``b`` with the same fields; numbers within 1e-5 (batches of other sizes may round the
    last float bit differently), the rest equal."""
    ra, rb = ({(r["path"], r["frame"]): r for r in f.rows()} for f in (a, b))
    assert ra.keys() == rb.keys() and ra
    for path, r in ra.items():
        s = rb[path]
        assert r.keys() == s.keys()
        for k in r:
            if k == "time":
                continue
            if k in NUMBERS and r[k] is not None:
                assert s[k] == pytest.approx(r[k], rel=1e-5, abs=1e-5), (path, k)
            elif k == "probabilities":
                assert s[k].keys() == r[k].keys()
                assert np.allclose(list(s[k].values()), list(r[k].values()), atol=1e-5), path
            else:
                assert s[k] == r[k], (path, k, r[k], s[k])
        for k in ("heatmap", "panel"):
            if r.get(k):
                with Image.open(b.path / s[k]) as im:
                    im.load()


def _one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_a_file_goes_to_the_same_part_whatever_the_order_of_listing():
    items = [Item(path=None, rel=f"c/{i:03d}.jpg") for i in range(300)]
    parts = [select(Collected(items=items if order else items[::-1]), (i, 3)).items for i in (1, 2, 3)
             for order in (True, False)]
    for i in range(3):
        assert {it.rel for it in parts[2 * i]} == {it.rel for it in parts[2 * i + 1]}
    assert sorted(it.rel for k in (0, 2, 4) for it in parts[k]) == sorted(it.rel for it in items)  # once each
    assert all(70 <= len(parts[k]) <= 130 for k in (0, 2, 4))  # roughly a third each


def test_three_shards_merged_equal_one_run_on_the_same_files(tiny_export, scans, tmp_path):
    model = tiny_export / "vit.onnx"
    _infer(model, scans, "--out", tmp_path / "one", "--heatmaps", check=False)
    for i in (1, 2, 3):
        _infer(model, scans, "--shard", f"{i}/3", "--out", tmp_path / f"part{i}", "--heatmaps", check=False)
    r = run_cli(INFER, "merge", *(tmp_path / f"part{i}" for i in (3, 1, 2)), "--out", tmp_path / "all", check=False)
    assert r.returncode == 1, r.stderr  # 1: one file failed, in one of the parts, as in the single run
    one, merged = OutFolder(tmp_path / "one"), OutFolder(tmp_path / "all")
    _same_rows(one, merged)
    assert sorted(one.table("errors.csv")) == sorted(merged.table("errors.csv")) == [
        ("meningioma/m_broken.jpg", "not an image file that Pillow can read")]
    assert sorted(one.table("skipped.csv")) == sorted(merged.table("skipped.csv"))
    a, b = one.summary(), merged.summary()
    for k in ("classified", "failures", "predicted_per_class", "ground_truth", "out_of_distribution"):
        assert a[k] == b[k], k
    assert [m["shard"]["index"] for m in b["merged_from"]] == [1, 2, 3]
    assert (merged.path / "index.html").is_file()
    assert (one.path / "volumes.csv").read_text() == (merged.path / "volumes.csv").read_text()
    sizes = [len(OutFolder(tmp_path / f"part{i}").rows()) for i in (1, 2, 3)]
    assert sum(sizes) == len(one.rows()) and all(sizes)


def test_merge_refuses_a_missing_a_repeated_or_an_unfinished_part_and_a_file_in_two(tiny_export, scans, tmp_path):
    model = tiny_export / "vit.onnx"
    parts = [tmp_path / f"p{i}" for i in (1, 2, 3)]
    for i, p in enumerate(parts, 1):
        _infer(model, scans, "--shard", f"{i}/3", "--out", p, check=False)
    _infer(model, scans, "--out", tmp_path / "whole", check=False)
    out = tmp_path / "all"

    def merge(*folders):
        return run_cli(INFER, "merge", *folders, "--out", out, check=False)

    _one_line_exit_2(merge(parts[0], parts[2]), "2/3 missing")
    _one_line_exit_2(run_cli("brisc.cli", "infer", "merge", parts[0], parts[2], "--out", out, check=False),
                     "2/3 missing")  # `brisc infer merge` is the same command
    _one_line_exit_2(merge(parts[0], parts[1], parts[1], parts[2]), "part 2/3 is given twice")
    _one_line_exit_2(merge(parts[0], parts[1], tmp_path / "whole"), "not a shard")
    # a file in two parts: one row of part 1 copied into part 2
    row = (parts[0] / "predictions.jsonl").read_text().splitlines()[0]
    with open(parts[1] / "predictions.jsonl", "a") as f:
        f.write(row + "\n")
    _one_line_exit_2(merge(*parts), json.loads(row)["path"], "in two shards", str(parts[0]), str(parts[1]))
    s = json.loads((parts[2] / "summary.json").read_text())
    (parts[2] / "summary.json").write_text(json.dumps(s | {"interrupted": True}))
    _one_line_exit_2(merge(parts[0], parts[2]), str(parts[2]), "did not finish")
    assert not out.exists()  # every refusal before anything is written
    # a part resumed as another part would classify other files under the same --out
    _one_line_exit_2(_infer(model, scans, "--shard", "1/3", "--out", parts[1], "--resume", check=False),
                     "--shard 2/3", "--shard 1/3")


def test_the_ray_engine_writes_what_the_local_engine_writes(tiny_export, scans, tmp_path):
    model = tiny_export / "vit.onnx"
    _infer(model, scans, "--out", tmp_path / "local", "--heatmaps", "--batch-size", "4", check=False)
    r = _infer(model, scans, "--out", tmp_path / "ray", "--heatmaps", "--engine", "ray", "--concurrency", "2",
               "--batch-size", "4", check=False)
    assert r.returncode == 1, r.stderr[-2000:]  # the broken file, as locally
    local, ray = OutFolder(tmp_path / "local"), OutFolder(tmp_path / "ray")
    _same_rows(local, ray)
    assert local.table("errors.csv") == ray.table("errors.csv")
    assert local.table("skipped.csv") == ray.table("skipped.csv")
    assert (ray.path / "index.html").is_file()
    assert (local.path / "volumes.csv").read_text() == (ray.path / "volumes.csv").read_text()


def test_a_killed_ray_driver_loses_nothing_and_resumes(tiny_export, scans, tmp_path):
    model = tiny_export / "vit.onnx"
    _infer(model, scans, "--out", tmp_path / "local", check=False)
    n = len(OutFolder(tmp_path / "local").rows())
    out = tmp_path / "ray"
    args = [sys.executable, "-m", INFER, str(scans), "--model", str(model), "--out", str(out), "--engine", "ray",
            "--batch-size", "1", "--concurrency", "1", "--quiet"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    jl = out / "predictions.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None:
        if jl.is_file() and jl.read_bytes().count(b"\n") >= 2:  # rows are landing: kill the driver mid-run
            os.killpg(p.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = OutFolder(out).rows()
    assert 2 <= len(done) < n  # whole rows only, and not all of them
    r = _infer(model, scans, "--out", out, "--engine", "ray", "--resume", check=False)
    assert r.returncode == 1, r.stderr[-2000:]
    rows = OutFolder(out).rows()
    assert len(rows) == len({(x["path"], x["frame"]) for x in rows}) == n  # each scan and slice exactly once
    _same_rows(OutFolder(tmp_path / "local"), OutFolder(out))


def test_engine_ray_without_ray_is_one_line_naming_the_extra(tiny_export, scans, tmp_path):
    code = ("import sys\nsys.modules['ray'] = None\nfrom brisc.inference.cli import main\nmain(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", code, str(scans), "--model", str(tiny_export / "vit.onnx"), "--out",
                        str(tmp_path / "o"), "--engine", "ray", "--quiet"], capture_output=True, text=True)
    _one_line_exit_2(r, "brisc-mri[ray]")
    assert not (tmp_path / "o").exists()
