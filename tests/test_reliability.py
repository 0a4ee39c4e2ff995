"""Nothing lost, ever: the hostile tester's reproductions (issue 24), each as the user typed it."""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import prediction_rows, run_cli

INFER = "brisc.inference.cli"


@pytest.fixture
def base(tmp_path, synth_root):
    """12 scans in class folders (3 a class), like the tester's base/."""
    b = tmp_path / "base"
    shutil.copytree(synth_root / "classification_task" / "test", b)
    return b


@pytest.fixture
def G(base):
    return sorted((base / "glioma").glob("*.jpg"))[0]


def infer(model, *args, check=False, cwd=None):
    return run_cli(INFER, *args, "--model", model, "--quiet", check=check)


def test_dotdot_in_out_goes_through_every_check(tiny_export, base, G, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    m = tiny_export / "vit.onnx"
    assert infer(m, base, "--out", "o").returncode == 0
    r = infer(m, G, "--out", "nothere/../o")
    assert r.returncode == 2 and "already holds a brisc-infer run" in r.stderr
    assert len(prediction_rows(tmp_path / "o")) == 12 and not (tmp_path / "nothere").exists()
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "predictions.csv").write_text("mine\n")
    r = infer(m, base, "--out", "ghost/../f")
    assert r.returncode == 2 and (tmp_path / "f" / "predictions.csv").read_text() == "mine\n"


def test_a_corrupt_or_misfit_mask_is_an_error_row_and_the_scan_is_classified(tiny_export, base, tmp_path):
    masks = tmp_path / "m"
    masks.mkdir()
    scans = sorted((base / "glioma").glob("*.jpg"))
    (masks / (scans[0].stem + ".png")).write_bytes(b"")  # empty file
    Image.new("L", (7, 7), 255).save(masks / (scans[1].stem + ".png"))  # another size than its scan
    w, h = Image.open(scans[2]).size
    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), ((0, h - 8), (0, w - 8)))).save(masks / (scans[2].stem + ".png"))
    out = tmp_path / "o"
    r = infer(tiny_export / "vit.onnx", base / "glioma", "--out", out, "--masks", masks)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    rows = {row["path"]: row for row in prediction_rows(out)}
    assert len(rows) == 3 and rows[scans[2].name]["pointing_hit"] is not None
    assert rows[scans[2].name]["mask"] == scans[2].stem + ".png"
    errors = {row["path"]: row["reason"] for row in csv.DictReader(open(out / "errors.csv", encoding="utf-8"))}
    assert "unreadable mask" in errors[scans[0].name] and "mask is 7x7" in errors[scans[1].name]
    assert rows[scans[0].name]["pointing_hit"] is None and rows[scans[1].name]["pointing_hit"] is None


def test_masks_folder_that_matches_nothing_is_refused(tiny_export, base, tmp_path):
    r = infer(tiny_export / "vit.onnx", base, "--out", tmp_path / "o", "--masks", base)  # the scans folder
    assert r.returncode == 2 and "no mask there matches a scan" in r.stderr and not (tmp_path / "o").exists()


def test_a_name_that_is_not_utf8_gets_a_row_and_resumes(tiny_export, G, tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    shutil.copy(G, os.path.join(os.fsencode(p), b"a\xff.jpg"))
    out = tmp_path / "o"
    assert infer(tiny_export / "vit.onnx", p, "--out", out, "--heatmaps").returncode == 0
    rows = prediction_rows(out)
    assert [r["path"] for r in rows] == ["a\\xff.jpg"]  # the byte, escaped the same way every time
    assert (out / rows[0]["heatmap"]).is_file()
    r = infer(tiny_export / "vit.onnx", p, "--out", out, "--resume", "--heatmaps")
    assert r.returncode == 0 and len(prediction_rows(out)) == 1
    assert json.loads((out / "summary.json").read_text())["classified_this_run"] == 0


def test_resume_with_another_model_is_refused_naming_both(tiny_export, base, tmp_path):
    out = tmp_path / "o"
    infer(tiny_export / "vit.onnx", base / "glioma", "--out", out)
    r = infer(tiny_export / "sae.onnx", base, "--out", out, "--resume")
    from brisc.sidecar import read_sidecar

    assert r.returncode == 2
    for name in ("vit.onnx", "sae.onnx"):
        assert read_sidecar(tiny_export / name).model_sha256 in r.stderr
    assert {row["model"] for row in prediction_rows(out)} == {"vit.onnx"}


def test_resume_keeps_every_files_name(tiny_export, base, tmp_path):
    out = tmp_path / "o5"
    m = tiny_export / "vit.onnx"
    infer(m, base / "glioma", "--out", out)
    r = infer(m, base / "glioma", base / "meningioma", "--out", out, "--resume")
    assert r.returncode == 2 and "would get other names" in r.stderr
    assert len(prediction_rows(out)) == 3
    out2 = tmp_path / "o6"  # started on the parent: a resume on one of its subfolders keeps the names
    infer(m, base, "--out", out2)
    assert infer(m, base / "glioma", "--out", out2, "--resume").returncode == 0
    assert len(prediction_rows(out2)) == 12
    assert json.loads((out2 / "summary.json").read_text())["classified_this_run"] == 0


def test_the_same_file_named_twice_is_classified_once(tiny_export, base, G, tmp_path):
    out = tmp_path / "o"
    r = run_cli(INFER, base / "glioma", Path(os.path.abspath(base)) / "glioma", G, "--model", tiny_export / "vit.onnx",
                "--out", out)
    rows = prediction_rows(out)
    assert len(rows) == 3 and not any("~" in row["path"] for row in rows)
    s = json.loads((out / "summary.json").read_text())
    assert s["duplicates_ignored"] == 4 and s["ground_truth"]["n"] == 3
    assert "classified once" in r.stderr


def test_a_fifo_is_skipped_with_its_reason_and_never_opened(tiny_export, base, tmp_path):
    os.mkfifo(base / "glioma" / "pipe")
    out = tmp_path / "o"
    r = run_cli(INFER, base / "glioma", "--model", tiny_export / "vit.onnx", "--out", out, timeout=120)
    assert r.returncode == 0 and len(prediction_rows(out)) == 3
    skipped = {row["path"]: row["reason"] for row in csv.DictReader(open(out / "skipped.csv", encoding="utf-8"))}
    assert skipped == {"pipe": "not a regular file"} and "pipe (not a regular file)" in r.stderr


def test_an_unsearchable_folder_is_an_error_row(base, monkeypatch):
    from brisc.inference import inputs

    locked = base / "meningioma"
    real = os.scandir

    def scandir(path):
        if os.path.realpath(path) == os.path.realpath(locked):  # root reads a mode-000 folder: deny it here
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(inputs.os, "scandir", scandir)
    col = inputs.collect([str(base)])
    assert len(col.items) == 9 and col.errors == [("meningioma", "cannot list folder (Permission denied)")]


def test_disk_full_keeps_every_complete_row_tears_none_and_resumes(tiny_export, base, tmp_path, monkeypatch):
    from brisc.errors import OutOfSpaceError
    from brisc.inference import outputs
    from brisc.inference.runner import InferOptions, run_inference
    from brisc.inference.session import open_session

    sess = open_session(tiny_export / "vit.onnx")
    out = tmp_path / "o"
    real_flush, calls = outputs.Writer.flush, []

    def flush(self):
        calls.append(1)
        if len(calls) >= 3:  # the third batch finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(self)

    monkeypatch.setattr(outputs.Writer, "flush", flush)
    with pytest.raises(OutOfSpaceError, match="none is torn") as e:
        run_inference(InferOptions(inputs=(str(base),), out=out, batch_size=4), sess, progress=False)
    assert e.value.exit_code == 1
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(lines) == 8 and all(line.endswith("\n") and json.loads(line) for line in lines)
    table = list(csv.DictReader(open(out / "predictions.csv", encoding="utf-8")))
    assert len(table) == 8
    monkeypatch.setattr(outputs.Writer, "flush", real_flush)
    s = run_inference(InferOptions(inputs=(str(base),), out=out, resume=True), sess, progress=False)
    assert s["classified"] == 12 and s["classified_this_run"] == 4


def test_links_into_out_are_never_read_and_linked_folders_are_followed_once(tiny_export, base, tmp_path):
    out = tmp_path / "o"
    m = tiny_export / "vit.onnx"
    infer(m, base / "glioma", "--out", out, "--heatmaps")
    overlay = next((out / "heatmaps").rglob("*.png"))
    os.symlink(overlay, base / "glioma" / "link.jpg")  # 10: a link into --out/heatmaps
    os.symlink(base / "pituitary", base / "glioma" / "more")  # 11: a linked folder is followed...
    os.symlink(base / "glioma", base / "glioma" / "loop")  # ...and a loop back to the folder is not walked twice
    r = infer(m, base / "glioma", "--out", out, "--resume")
    assert r.returncode == 0
    paths = sorted(row["path"] for row in prediction_rows(out))
    assert len(paths) == 6 and all(not p.startswith("link") for p in paths)
    assert sum(p.startswith("more/") for p in paths) == 3
    skipped = {row["path"]: row["reason"] for row in csv.DictReader(open(out / "skipped.csv", encoding="utf-8"))}
    assert "inside --out" in skipped["link.jpg"]
    from brisc.data import discover  # brisc-train's discovery walks the same way: the linked folder once, no loop

    assert len(discover(base).samples) == 12 + 3 + 1  # + link.jpg: an image like any other to brisc-train


def test_overwrite_removes_the_earlier_outputs(tiny_export, base, G, tmp_path):
    out = tmp_path / "o"
    m = tiny_export / "vit.onnx"
    infer(m, base, "--out", out, "--heatmaps")
    assert (out / "index.html").is_file()
    (out / "notes.txt").write_text("the user's own")  # not brisc's: kept
    (out / "thumbnails").mkdir()  # what an older brisc-infer wrote beside the overlays: brisc's, so removed
    (out / "thumbnails" / "scan.jpg").write_bytes(b"\xff\xd8")
    assert infer(m, G, "--out", out, "--overwrite").returncode == 0
    assert len(prediction_rows(out)) == 1
    assert not (out / "index.html").exists() and not (out / "heatmaps").exists() and not (out / "thumbnails").exists()
    assert (out / "notes.txt").read_text() == "the user's own"


def test_train_resume_of_a_finished_run_refuses_other_settings(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "comparison.json").read_text()
    r = run_cli("brisc.train.cli", "--data", json.loads((run / "vit" / "config.json").read_text())["data"],
                "--models", "vit", "--preset", "tiny", "--epochs", "4", "--out", run, "--resume", "--wandb", "disabled",
                check=False)
    assert r.returncode == 2 and "train.epochs" in r.stderr and "Traceback" not in r.stderr
    assert (run / "comparison.json").read_text() == before


@pytest.mark.parametrize("damage", ["truncated weights", "torn config"])
def test_export_of_a_broken_run_is_one_line_and_creates_nothing(tiny_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    f = run / "vit" / ("model.safetensors" if damage == "truncated weights" else "config.json")
    f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])
    out = tmp_path / "exp"
    r = run_cli("brisc.export.cli", "--run", run, "--models", "vit", "--out", out, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr and str(f) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_threads_are_capped_at_the_cores(tiny_export, G, tmp_path):
    r = run_cli(INFER, G, "--model", tiny_export / "vit.onnx", "--out", tmp_path / "o", "--threads", "100000")
    assert f"more than the {os.cpu_count()} CPU cores" in r.stderr


def test_pages_frames_gif_and_webp_are_read(tiny_export, G, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    img = Image.open(G).convert("L")
    img.save(d / "pages.tiff", save_all=True, append_images=[img.rotate(90), img.rotate(180)])
    img.save(d / "scan.gif")
    img.save(d / "scan.webp")
    out = tmp_path / "o"
    r = infer(tiny_export / "vit.onnx", d, "--out", out)
    assert r.returncode == 0
    got = sorted((row["path"], row["frame"]) for row in prediction_rows(out))
    assert got == [("pages.tiff", 0), ("pages.tiff", 1), ("pages.tiff", 2), ("scan.gif", None), ("scan.webp", None)]


def test_a_changed_file_is_redone_on_resume(tiny_export, base, G, tmp_path):
    out = tmp_path / "o"
    m = tiny_export / "vit.onnx"
    infer(m, base / "glioma", "--out", out)
    old = {row["path"]: row for row in prediction_rows(out)}[G.name]
    Image.open(G).rotate(90).save(G, "JPEG")
    infer(m, base / "glioma", "--out", out, "--resume")
    rows = prediction_rows(out)
    new = {row["path"]: row for row in rows}[G.name]
    assert len(rows) == 3 and new["input_sha256"] != old["input_sha256"]
    assert json.loads((out / "summary.json").read_text())["classified_this_run"] == 1


def test_resume_with_other_maps_is_refused(tiny_export, base, tmp_path):
    out = tmp_path / "o"
    m = tiny_export / "vit.onnx"
    infer(m, base / "glioma", "--out", out, "--heatmaps")
    r = infer(m, base / "glioma", "--out", out, "--heatmaps", "--explain", "occlusion", "--resume")
    assert r.returncode == 2 and "same --explain" in r.stderr


def test_names_a_spreadsheet_would_run_are_quoted_in_the_csv_only(tiny_export, G, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for name in ("=cmd.jpg", "+1.jpg", "-x.jpg", "@a.jpg"):
        shutil.copy(G, d / name)
    out = tmp_path / "o"
    infer(tiny_export / "vit.onnx", d, "--out", out)
    table = {row["path"] for row in csv.DictReader(open(out / "predictions.csv", encoding="utf-8"))}
    assert table == {"'=cmd.jpg", "'+1.jpg", "'-x.jpg", "'@a.jpg"}
    assert {row["path"] for row in prediction_rows(out)} == {"=cmd.jpg", "+1.jpg", "-x.jpg", "@a.jpg"}


def test_resume_with_panels_added_draws_the_missing_panels(tiny_export, base, tmp_path):
    out = tmp_path / "o"
    m = tiny_export / "vit.onnx"
    infer(m, base / "glioma", "--out", out, "--heatmaps")
    r = run_cli(INFER, base / "glioma", "--model", m, "--out", out, "--resume", "--panels")
    assert "classified 3 scans this run" in r.stderr
    rows = prediction_rows(out)
    assert len(rows) == 3 and all(row["panel"] and (out / row["panel"]).is_file() for row in rows)
