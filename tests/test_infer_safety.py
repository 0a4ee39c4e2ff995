"""brisc-infer never loses, overwrites or misreads: kills, signals, locks, foreign --out folders, odd inputs."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from brisc.inference import outputs
from brisc.inference.outdir import MARKER, OutLock
from brisc.synth import generate
from conftest import gallery_data, prediction_rows, run_cli

INFER = "brisc.inference.cli"


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    data = tmp_path_factory.mktemp("scans")
    generate(data, per_class=2, test_per_class=0, seed=7, size=160)
    return data / "classification_task" / "train"  # 8 scans in 4 class folders


def _infer(model, *args, check=False, **kw):
    return run_cli(INFER, *args, "--model", model, "--quiet", check=check, **kw)


def _one_line_exit_2(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_a_kill_while_resume_starts_loses_nothing(tmp_path, monkeypatch):
    out = tmp_path / "o"
    out.mkdir()
    rows = [{"path": f"s{i}.jpg", "frame": None, "probabilities": {"glioma": 1.0}} for i in range(224)]
    good = "".join(json.dumps(r) + "\n" for r in rows)
    (out / "predictions.jsonl").write_text(good + '{"path": "torn', encoding="utf-8")

    def killed(*a, **k):  # the process dies right after reading, before anything else is written
        raise SystemExit("killed")

    monkeypatch.setattr(outputs.Writer, "_rewrite", killed)
    with pytest.raises(SystemExit):
        outputs.Writer(out, resume=True)
    assert (out / "predictions.jsonl").read_text(encoding="utf-8") == good  # only the torn tail is cut
    monkeypatch.undo()
    w = outputs.Writer(out, resume=True)
    w.close()
    assert len(w.done) == 224 and (out / "predictions.jsonl").read_text(encoding="utf-8") == good


def test_out_inside_the_input_folder_is_never_read(tiny_export, scans, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(scans, data)
    out = data / "brisc-out"
    _infer(tiny_export / "vit.onnx", data, "--out", out, "--heatmaps", check=True)
    _infer(tiny_export / "vit.onnx", data, "--out", out, "--heatmaps", "--resume", check=True)
    _infer(tiny_export / "vit.onnx", data, "--out", data / "second", check=True)  # an earlier output is skipped too
    for o in (out, data / "second"):
        paths = [r["path"] for r in prediction_rows(o)]
        assert len(paths) == 8 and not any(p.startswith(("brisc-out", "second")) for p in paths), paths
    r = _infer(tiny_export / "vit.onnx", out / "heatmaps", "--out", out, "--resume")
    _one_line_exit_2(r, "inside --out")


def test_a_folder_that_is_not_a_brisc_output_is_refused_and_untouched(tiny_export, scans, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "predictions.csv").write_text("my own table\n")
    (out / "index.html").write_text("<p>mine</p>")
    for flag in ([], ["--overwrite"], ["--resume"]):
        r = _infer(tiny_export / "vit.onnx", scans, "--out", out, *flag)
        _one_line_exit_2(r, "not a brisc-infer output")
    assert sorted(os.listdir(out)) == ["index.html", "predictions.csv"]
    assert (out / "predictions.csv").read_text() == "my own table\n"
    legacy = tmp_path / "legacy"  # written by a brisc-infer from before the marker: still brisc's to resume
    _infer(tiny_export / "vit.onnx", scans, "--out", legacy, check=True)
    (legacy / MARKER).unlink()
    _infer(tiny_export / "vit.onnx", scans, "--out", legacy, "--resume", check=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    _infer(tiny_export / "vit.onnx", scans, "--out", empty, check=True)  # an empty folder is fine
    assert (empty / MARKER).is_file() and len(prediction_rows(empty)) == 8


def test_a_second_process_on_the_same_out_refuses_and_names_the_holder(tiny_export, scans, tmp_path):
    out = tmp_path / "o"
    with OutLock(out):
        r = _infer(tiny_export / "vit.onnx", scans, "--out", out, "--resume")
        _one_line_exit_2(r, f"in use by brisc-infer process {os.getpid()}")
    _infer(tiny_export / "vit.onnx", scans, "--out", out, "--resume", check=True)  # released: it runs
    assert len(prediction_rows(out)) == 8


@pytest.mark.parametrize("case", ["a file", "under a file", "missing input", "no images", "resume and overwrite"])
def test_bad_out_and_inputs_are_one_line_exit_2_and_write_nothing(tiny_export, scans, tmp_path, case):
    out, inputs, extra = tmp_path / "o", [scans], []
    if case == "a file":
        out.write_text("x")
        needle = "an existing file"
    elif case == "under a file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "o"
        needle = "cannot write the --out folder"
    elif case == "missing input":
        inputs, needle = [tmp_path / "nope"], "nope: no such file or folder"
    elif case == "no images":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "notes.txt").write_text("no scans here")
        inputs, needle = [tmp_path / "docs"], "no images found under"
    else:
        extra, needle = ["--resume", "--overwrite"], "contradict"
    r = _infer(tiny_export / "vit.onnx", *inputs, "--out", out, *extra)
    _one_line_exit_2(r, needle)
    assert case in ("a file", "under a file") or not out.exists()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_write_what_is_done_and_exit_128_plus_signal(tiny_export, tmp_path, sig, code):
    data = tmp_path / "data"
    n = 4 * 40  # ~15 s of work after the fourth row: the signal lands mid-run even if this process stalls for seconds
    generate(data, per_class=n // 4, test_per_class=0, seed=3, size=160)
    out = tmp_path / "o"
    args = [sys.executable, "-m", INFER, str(data / "classification_task" / "train"), "--model",
            str(tiny_export / "vit.onnx"), "--out", str(out), "--batch-size", "2", "--heatmaps", "--explain",
            "occlusion", "--quiet"]
    # A Ctrl-C at a terminal: SIGINT as the default, even where this test inherits it ignored (a background job)
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    jl = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and (not jl.exists() or jl.read_text().count("\n") < 4):
        time.sleep(0.02)
    assert p.poll() is None, "brisc-infer finished before it could be interrupted"
    p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    assert "interrupted" in err and "Traceback" not in err and "Aborted" not in err
    rows = prediction_rows(out)
    assert 4 <= len(rows) < n
    s = json.loads((out / "summary.json").read_text())
    assert s["interrupted"] and s["classified"] == len(rows)
    drawn = {p.relative_to(out).as_posix() for p in (out / "heatmaps").rglob("*.png")}
    assert drawn == {r["heatmap"] for r in rows}  # every heatmap has its row and every row its heatmap
    assert not [p for p in out.rglob(".*.tmp*")]
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0 and len(prediction_rows(out)) == n, r.stderr[-2000:]


def test_errors_header_is_written_first_and_stale_temporaries_are_removed(tiny_export, scans, tmp_path):
    out = tmp_path / "o"
    _infer(tiny_export / "vit.onnx", scans, "--out", out, "--heatmaps", check=True)
    stale = out / "heatmaps" / "glioma" / ".x.png.tmp99999"
    stale.write_bytes(b"")
    (out / "errors.csv").write_text("")  # as a kill at the worst moment would have left it before
    with OutLock(out):
        assert (out / "errors.csv").read_text() == "" and not stale.exists()  # claimed: temporaries go
    w = outputs.Writer(out, resume=True)
    assert (out / "errors.csv").read_text() == "path,reason\n"  # the header is there before any work
    w.close()


def test_unwritable_heatmaps_count_as_failures(tiny_export, scans, tmp_path):
    out = tmp_path / "o"
    _infer(tiny_export / "vit.onnx", scans, "--out", out, check=True)
    (out / "heatmaps").write_text("a file where the heatmaps folder should be")
    r = _infer(tiny_export / "vit.onnx", scans, "--out", out, "--resume", "--heatmaps")
    assert r.returncode == 1, r.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["failures"] == 8
    with open(out / "errors.csv", newline="") as f:
        assert sum("heatmap not written" in row["reason"] for row in csv.DictReader(f)) == 8


def test_same_name_under_two_inputs_keeps_its_input_in_the_path(tiny_export, scans, tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(next((scans / "glioma").glob("*.jpg")), tmp_path / d / "same.jpg")
    out = tmp_path / "o"
    _infer(tiny_export / "vit.onnx", tmp_path / "a", tmp_path / "b", "--out", out, "--heatmaps", check=True)
    assert sorted(r["path"] for r in prediction_rows(out)) == ["a/same.jpg", "b/same.jpg"]
    assert (out / "heatmaps" / "a" / "same.png").is_file() and (out / "heatmaps" / "b" / "same.png").is_file()
    shutil.copy(tmp_path / "a" / "same.jpg", tmp_path / "a" / "same.tiff")  # x.jpg beside x.tiff: full names, apart
    out2 = tmp_path / "o2"
    _infer(tiny_export / "vit.onnx", tmp_path / "a", "--out", out2, "--heatmaps", "--heatmap-format", "jpg", check=True)
    assert sorted(p.name for p in (out2 / "heatmaps").iterdir()) == ["same.jpg.jpg", "same.tiff.jpg"]


def test_resume_with_heatmaps_added_draws_the_missing_ones(tiny_export, scans, tmp_path):
    out = tmp_path / "o"
    _infer(tiny_export / "vit.onnx", scans, "--out", out, check=True)
    _infer(tiny_export / "vit.onnx", scans, "--out", out, "--resume", "--heatmaps", check=True)
    rows = prediction_rows(out)
    assert len(rows) == 8 and all(r["heatmap"] and (out / r["heatmap"]).is_file() for r in rows)
    with open(out / "predictions.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 8
    assert len(gallery_data(out / "index.html")["rows"]) == 8


def test_masks_report_deletion_and_insertion_auc(tiny_export, synth_root, tmp_path):
    out = tmp_path / "o"
    r = run_cli(INFER, synth_root / "classification_task" / "test", "--model", tiny_export / "vit.onnx", "--out", out,
                "--masks", synth_root / "segmentation_task" / "test" / "masks", "--faithfulness", "4")
    m = json.loads((out / "summary.json").read_text())["masks"]
    assert m["faithfulness_n"] == 4 and 0 <= m["deletion_auc"] <= 1 and 0 <= m["insertion_auc"] <= 1
    assert sum(row["deletion_auc"] is not None for row in prediction_rows(out)) == 4
    assert "deletion AUC" in r.stderr and "insertion AUC" in r.stderr
