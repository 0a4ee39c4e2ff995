import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from brisc.export.run import ExportOptions, export_run
from brisc.export.loading import load_trained
from brisc.export.wrapper import ExportWrapper
from brisc.imageio import load
from brisc.inference.session import open_session
from brisc.sidecar import read_sidecar
from brisc.synth import generate
from conftest import gallery_data, prediction_rows, run_cli, write_dicom, write_png_bomb

INFER = "brisc.inference.cli"


def _errors(out):
    with open(out / "errors.csv", newline="", encoding="utf-8") as f:
        return {r["path"]: r["reason"] for r in csv.DictReader(f)}


def test_inference_never_imports_torch(tiny_export, synth_root, tmp_path):
    """The one run-time check (test_architecture checks the source): a brisc-infer run loads neither torch nor
    training, export or Ray."""
    code = ("import sys\nfrom brisc.inference.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "bad = [m for m in ('torch', 'transformers', 'torchvision', 'brisc.train', 'brisc.export', 'ray') "
            "if m in sys.modules]\n"
            "assert not bad, bad\nprint('torch-free')")
    r = subprocess.run([sys.executable, "-c", code, str(synth_root / "classification_task" / "test"), "--model",
                        str(tiny_export / "vit.onnx"), "--out", str(tmp_path / "o"), "--heatmaps", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "torch-free" in r.stdout, r.stderr[-2000:]


def test_help_is_light():
    """--help must answer fast: it imports neither numpy nor onnxruntime (timed in benchmarks/)."""
    code = ("import sys\nfrom brisc.inference.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('numpy', 'onnxruntime', 'PIL', 'torch') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Research use only" in r.stdout and r.stdout.strip().endswith("[]")


@pytest.mark.parametrize("kind", ["vit", "sae"])
def test_predictions_on_real_brisc_match_pytorch(tiny_run, tiny_export, real_images, tmp_path, kind):
    out = tmp_path / "o"
    run_cli(INFER, *real_images, "--model", tiny_export / f"{kind}.onnx", "--out", out, "--quiet")
    rows = {r["path"]: r for r in prediction_rows(out)}
    assert len(rows) == len(real_images)
    tm = load_trained(tiny_run, kind)
    w = ExportWrapper(tm.model, temperature=tm.config["temperature"])
    x = torch.from_numpy(np.stack([load(p) for p in real_images]))
    with torch.no_grad():
        ref = torch.softmax(w(x)[0] / w.temperature, -1).numpy()
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    for p, r in zip(real_images, ref):
        row = rows[f"{p.parent.name}/{p.name}"]  # several inputs: paths from the folder that holds them all
        got = np.array([row["probabilities"][c] for c in classes])
        assert np.abs(got - r).max() <= 1e-4
        assert row["predicted"] == classes[int(got.argmax())]
        if np.diff(np.sort(r)[-2:])[0] > 2e-4:  # a near-tie of this near-chance model may flip within the tolerance
            assert row["predicted"] == classes[int(r.argmax())]
        assert row["true_label"] == p.parent.name  # BRISC names carry the ground truth
    s = json.loads((out / "summary.json").read_text())
    assert s["ground_truth"]["n"] == len(real_images) and s["provider"] == "CPUExecutionProvider"


@pytest.fixture
def bad_corpus(tmp_path, synth_root):
    d = tmp_path / "corpus"
    (d / "sub dir").mkdir(parents=True)
    good = next((synth_root / "classification_task" / "test" / "glioma").glob("*.jpg"))
    img = Image.open(good).convert("L")
    jpeg = good.read_bytes()
    expect_ok, expect_err = {}, {}

    shutil.copy(good, d / "sub dir" / "scan with spaces.jpg"); expect_ok["sub dir/scan with spaces.jpg"] = 1
    shutil.copy(good, d / "ünïcødé_脑.jpg"); expect_ok["ünïcødé_脑.jpg"] = 1
    shutil.copy(good, d / "new\nline.jpg"); expect_ok["new\nline.jpg"] = 1
    img.convert("RGBA").save(d / "rgba.png"); expect_ok["rgba.png"] = 1
    img.convert("CMYK").save(d / "cmyk.jpg"); expect_ok["cmyk.jpg"] = 1
    Image.fromarray((np.asarray(img, np.uint16) * 200)).save(d / "sixteen.png"); expect_ok["sixteen.png"] = 1
    Image.fromarray(np.array([[0, 255], [128, 64]], np.uint8)).save(d / "tiny.png"); expect_ok["tiny.png"] = 1
    Image.new("L", (256, 256), 0).save(d / "black.png"); expect_ok["black.png"] = 1  # classified, flagged (test_ood)
    Image.new("L", (1, 1), 128).save(d / "grey1x1.png"); expect_ok["grey1x1.png"] = 1
    img.save(d / "scan.tiff"); expect_ok["scan.tiff"] = 1
    img.save(d / "scan.bmp"); expect_ok["scan.bmp"] = 1
    px = np.asarray(img, np.uint16)
    write_dicom(d / "mono1.dcm", px, photometric="MONOCHROME1"); expect_ok["mono1.dcm"] = 1
    write_dicom(d / "IM0001", px); expect_ok["IM0001"] = 1  # DICOM without extension: found by magic bytes
    write_dicom(d / "multi.dcm", np.stack([px, px[::-1], px[:, ::-1]])); expect_ok["multi.dcm"] = 3

    (d / "corrupt.jpg").write_bytes(jpeg[:200] + os.urandom(2000)); expect_err["corrupt.jpg"] = ""
    (d / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3]); expect_err["truncated.jpg"] = "truncated"
    (d / "zero.jpg").write_bytes(b""); expect_err["zero.jpg"] = "not an image"
    (d / "text.jpg").write_text("definitely not a JPEG"); expect_err["text.jpg"] = "not an image"
    write_png_bomb(d / "bomb.png"); expect_err["bomb.png"] = "decompression bomb"
    write_dicom(d / "nopixels.dcm", px, with_pixels=False); expect_err["nopixels.dcm"] = "no pixel data"
    os.symlink("loop.png", d / "loop.png"); expect_err["loop.png"] = "symlink loop"
    if os.geteuid() == 0:  # root reads any file: a FIFO is the unreadable entry then (reading it would block)
        os.mkfifo(d / "unreadable.png"); expect_err["unreadable.png"] = "not a regular file"
    else:
        shutil.copy(good, d / "unreadable.png"); os.chmod(d / "unreadable.png", 0); expect_err["unreadable.png"] = "permission"
    (d / "README.txt").write_text("notes, not a scan")
    return d, expect_ok, expect_err


def test_bad_input_corpus_each_with_its_outcome_while_the_rest_are_classified(bad_corpus, tiny_export, tmp_path):
    d, ok, err = bad_corpus
    out = tmp_path / "o"
    r = run_cli(INFER, d, "--model", tiny_export / "vit.onnx", "--out", out, "--heatmaps", check=False)
    assert r.returncode == 1, r.stderr[-2000:]  # some files failed
    assert "Traceback" not in r.stderr
    rows = prediction_rows(out)
    got = {}
    for row in rows:
        got[row["path"]] = got.get(row["path"], 0) + 1
    assert got == ok
    errors = _errors(out)
    assert set(errors) == set(err)
    for name, reason in err.items():
        assert reason in errors[name], (name, errors[name])
    s = json.loads((out / "summary.json").read_text())
    assert s["classified"] == sum(ok.values()) and s["failures"] == len(err) and s["skipped_non_images"] == 1
    frames = sorted(row["frame"] for row in rows if row["path"] == "multi.dcm")
    assert frames == [0, 1, 2]
    assert (out / "heatmaps" / "multi.frame0002.png").is_file()
    assert (out / "heatmaps" / "sub dir" / "scan with spaces.png").is_file()
    html = (out / "index.html").read_text(encoding="utf-8")
    labels = [r[0] for r in gallery_data(out / "index.html")["rows"]]
    assert "new\nline" not in html and "new\\x0aline.jpg" in labels  # control characters shown escaped


def test_nothing_classified_exits_3(tmp_path, tiny_export):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.jpg").write_bytes(b"nope")
    r = run_cli(INFER, tmp_path / "in", "--model", tiny_export / "sae.onnx", "--out", tmp_path / "o", check=False)
    assert r.returncode == 3


def test_resume_after_sigkill_ends_with_every_file_exactly_once(tiny_export, tmp_path):
    data = tmp_path / "data"
    generate(data, per_class=15, test_per_class=0, seed=3, size=192)
    scans = data / "classification_task" / "train"
    out = tmp_path / "o"
    args = [sys.executable, "-m", INFER, str(scans), "--model", str(tiny_export / "vit.onnx"), "--out", str(out),
            "--batch-size", "2", "--heatmaps", "--explain", "occlusion", "--quiet"]
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    jl = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and (not jl.exists() or jl.read_text().count("\n") < 4):
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    partial = len(prediction_rows(out))
    assert 0 < partial < 60, "the kill came too late to test resume"
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    keys = [(row["path"], row["frame"]) for row in prediction_rows(out)]
    assert len(keys) == len(set(keys)) == 60
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 60
    s = json.loads((out / "summary.json").read_text())
    assert s["classified"] == 60 and s["classified_this_run"] == 60 - partial


def test_existing_predictions_are_not_overwritten_by_accident(tiny_export, synth_root, tmp_path):
    scans = synth_root / "classification_task" / "test" / "pituitary"
    out = tmp_path / "o"
    run_cli(INFER, scans, "--model", tiny_export / "sae.onnx", "--out", out, "--quiet")
    before = (out / "predictions.jsonl").read_bytes()
    r = run_cli(INFER, scans, "--model", tiny_export / "sae.onnx", "--out", out, "--quiet", check=False)
    assert r.returncode == 2 and "--resume" in r.stderr
    assert (out / "predictions.jsonl").read_bytes() == before
    run_cli(INFER, scans, "--model", tiny_export / "sae.onnx", "--out", out, "--quiet", "--overwrite")
    assert len(prediction_rows(out)) == 3


def test_mask_metrics_are_reported(tiny_export, synth_root, tmp_path):
    scans = synth_root / "classification_task" / "test"
    out = tmp_path / "o"
    run_cli(INFER, scans, "--model", tiny_export / "vit.onnx", "--out", out, "--masks",
            synth_root / "segmentation_task" / "test" / "masks", "--quiet")
    rows = prediction_rows(out)
    tumour = [r for r in rows if r["true_label"] != "no_tumor"]
    assert all(r["pointing_hit"] in (True, False) and 0 <= r["energy_in_mask"] <= 1 for r in tumour)
    assert all(r["pointing_hit"] is None for r in rows if r["true_label"] == "no_tumor")
    s = json.loads((out / "summary.json").read_text())["masks"]
    assert s["n"] == len(tumour) == 9 and 0 < s["mask_area_fraction"] < 0.1


@pytest.mark.parametrize("kind,explain", [("vit", "cls"), ("sae", "occlusion"), ("hf_vit", "rollout")])
def test_explain_methods(tiny_export, synth_root, tmp_path, kind, explain):
    scans = synth_root / "classification_task" / "test" / "glioma"
    out = tmp_path / "o"
    run_cli(INFER, scans, "--model", tiny_export / f"{kind}.onnx", "--out", out, "--heatmaps", "--save-maps",
            "--explain", explain, "--quiet")
    rows = prediction_rows(out)
    assert all(r["explain"] == explain for r in rows)
    for r in rows:
        m = np.load(out / r["map"])
        assert m.shape == (14, 14) and np.isfinite(m).all() and m.max() <= 1
    if explain == "rollout":  # the plain rollout output, whatever the graph's recommended heatmap is
        sess = open_session(tiny_export / f"{kind}.onnx")
        x = np.stack([load(p) for p in sorted(scans.glob("*.jpg"))])
        ref = sess.run(x)["rollout"]
        got = np.stack([np.load(out / "heatmaps" / f"{p.stem}.npy") for p in sorted(scans.glob("*.jpg"))])
        assert np.abs(got - ref).max() <= 1e-6


def test_auto_uses_the_graphs_recommended_heatmap_named_in_the_sidecar(tiny_run, synth_root, tmp_path):
    exp = tmp_path / "exp"
    export_run(ExportOptions(run=tiny_run, out=exp, models=("vit",), heatmap="cls:layer=1"), log=lambda *a: None)
    scans = synth_root / "classification_task" / "test" / "pituitary"
    out = tmp_path / "o"
    run_cli(INFER, scans, "--model", exp / "vit.onnx", "--out", out, "--heatmaps", "--save-maps", "--quiet")
    rows = prediction_rows(out)
    assert {r["explain"] for r in rows} == {"cls:layer=1"}
    sess = open_session(exp / "vit.onnx")
    x = np.stack([load(p) for p in sorted(scans.glob("*.jpg"))])
    ref = sess.run(x)
    got = np.stack([np.load(out / "heatmaps" / f"{p.stem}.npy") for p in sorted(scans.glob("*.jpg"))])
    assert np.abs(got - ref["heatmap"]).max() <= 1e-6 and np.abs(got - ref["rollout"]).max() > 1e-3


@pytest.mark.parametrize("case", ["rollout of sae", "tampered", "no sidecar", "cuda"])
def test_model_errors_exit_2(tiny_export, synth_root, tmp_path, case):
    scans = synth_root / "classification_task" / "test" / "glioma"
    model = tiny_export / "sae.onnx"
    extra = []
    if case == "rollout of sae":
        extra, msg = ["--heatmaps", "--explain", "rollout"], "needs the 'rollout' output"
    elif case == "tampered":
        model = tmp_path / "m.onnx"
        data = (tiny_export / "sae.onnx").read_bytes()
        model.write_bytes(data[:-10])
        shutil.copy(tiny_export / "sae.onnx.json", tmp_path / "m.onnx.json")
        msg = "sha256 does not match"
    elif case == "no sidecar":
        model = tmp_path / "m.onnx"
        shutil.copy(tiny_export / "sae.onnx", model)
        msg = "no sidecar"
    else:
        extra, msg = ["--device", "cuda"], "--device cuda"
    r = run_cli(INFER, scans, "--model", model, "--out", tmp_path / "o", *extra, check=False)
    assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr


def test_shipped_default_model_classifies_real_brisc_validation_scans(brisc_root, tmp_path):
    """brisc-infer with no --model uses the shipped model; on the validation split it was selected on, it
    reproduces (on a sample) the accuracy its sidecar states."""
    from brisc.data import discover, make_splits
    from brisc.inference.session import DEFAULT_MODEL

    card = read_sidecar(DEFAULT_MODEL)  # present, intact, same preprocessing
    assert DEFAULT_MODEL.stat().st_size <= 25 * 1024 * 1024
    from brisc.export.ship import MIN_AGREEMENT  # INT8 only where it agrees with fp32 on validation, else fp32
    q = card.quantization
    assert q["images"] == card.training_data["val_images"] and q["int8_speedup_vs_pytorch"] > 0
    assert card.shipped_from.endswith(".int8.onnx") == (q["top1_agreement"] >= MIN_AGREEMENT) == (q["shipped"] == "int8")
    td = card.training_data
    assert td["layout"] == "release" and td["val_images"] > 0
    splits = make_splits(discover(brisc_root), val_fraction=td["val_fraction"], seed=td["split_seed"],
                         method=td.get("split_method") or "random")
    assert len(splits.val) == td["val_images"]
    sample = splits.val[::5]  # 100 validation scans, every class
    out = tmp_path / "o"
    run_cli(INFER, *[s.path for s in sample], "--out", out, "--heatmaps", "--quiet")
    s = json.loads((out / "summary.json").read_text())
    assert s["model"] == "default.onnx" and s["classified"] == len(sample)
    assert s["ground_truth"]["accuracy"] >= card.validation_metrics["accuracy"] - 0.08
    assert (out / "index.html").is_file()


def test_shipped_model_gives_a_scan_the_same_probabilities_whatever_its_batch(real_images, tmp_path):
    """Static INT8: the scales are in the graph, so --batch-size 1 and 32 write the same probabilities (dynamic INT8,
    scaled per batch, did not), and the card's speed check covers both PyTorch paths at batch 1, 8 and 32."""
    from brisc.inference.session import DEFAULT_MODEL

    q = read_sidecar(DEFAULT_MODEL).quantization
    assert q["type"].startswith("static") and set(q["img_s"]) == {"1", "8", "32"}
    assert all({"pytorch_fp32", "pytorch_bf16", "ort_fp32", "ort_int8"} <= set(v) for v in q["img_s"].values())
    rows = {}
    for b in (1, 32):
        out = tmp_path / f"b{b}"
        run_cli(INFER, *real_images, "--out", out, "--batch-size", str(b), "--quiet")
        rows[b] = {r["path"]: r for r in prediction_rows(out)}
    assert len(rows[1]) == len(real_images) and rows[1].keys() == rows[32].keys()
    for path, r in rows[1].items():
        other = rows[32][path]
        assert max(abs(p - other["probabilities"][c]) for c, p in r["probabilities"].items()) <= 1e-5, path
        assert r["ood_score"] == pytest.approx(other["ood_score"], rel=1e-5), path


def test_exported_vit_carries_onnxruntime_fusions_and_still_matches_pytorch(tiny_export):
    import onnx


    check = read_sidecar(tiny_export / "vit.onnx").self_check
    assert check["fused_ops"].get("BiasGelu", 0) > 0  # the fused graph is the one that was checked
    ops = {n.op_type for n in onnx.load(str(tiny_export / "vit.onnx")).graph.node}
    assert "BiasGelu" in ops and "Attention" not in ops  # no fused attention: its probabilities are outputs
    assert max(check["max_abs_diff"].values()) <= 1e-4


def test_a_session_that_does_not_spin_gives_the_same_numbers(tiny_export, synth_root):
    """brisc-infer --heatmaps opens its session with idle threads sleeping (the drawing threads need the cycles):
    a scheduling choice, so every output must stay what the spinning session gives."""
    x = np.stack([load(p) for p in sorted((synth_root / "classification_task" / "test" / "glioma").glob("*.jpg"))])
    spinning, sleeping = (open_session(tiny_export / "vit.onnx", spin=s) for s in (True, False))
    key = "session.intra_op.allow_spinning"
    assert sleeping.session.get_session_options().get_session_config_entry(key) == "0"
    a, b = spinning.run(x), sleeping.run(x)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
