import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys

import numpy as np
import pytest
from pathlib import Path
import torch
from safetensors.torch import load_file

from brisc.fsio import is_tmp_name
from brisc.synth import generate
from conftest import run_cli


def test_tiny_end_to_end_run_of_all_three_models(tiny_run):
    comp = json.loads((tiny_run / "comparison.json").read_text())
    assert [r["model"] for r in comp["models"]] == ["vit", "hf_vit", "sae"]
    for kind in ("vit", "hf_vit", "sae"):
        d = tiny_run / kind
        for f in ("model.safetensors", "config.json", "metrics.json", "state.pt"):
            assert (d / f).is_file(), f
        state = torch.load(d / "state.pt", weights_only=True)  # nothing is unpickled
        assert state["epoch"] == 2 and "optimizer" in state
        m = json.loads((d / "metrics.json").read_text())
        assert m["complete"] and 0 <= m["val"]["accuracy"] <= 1 and m["temperature"] > 0
        assert "test" in m  # synthetic data has a test split: reported
        assert len(load_file(d / "model.safetensors")) > 0
    sae = json.loads((tiny_run / "sae" / "metrics.json").read_text())
    assert [p["layer"] for p in sae["pretrain"]] == [0, 0, 1, 1]  # the layer-wise phase is logged
    assert "rollout" in json.loads((tiny_run / "vit" / "metrics.json").read_text())["explanations"]
    md = (tiny_run / "comparison.md").read_text()
    assert "home-made ViT" in md and "stacked autoencoders" in md and "HF ViT" in md
    val = json.loads((tiny_run / "vit" / "metrics.json").read_text())["val"]
    half = val["ece_floor_half"]  # null here when validation holds one image a class: no halves to cross-fit
    assert 0 < val["ece_floor"] < 1 and (half is None) == (val["ece_cross_fitted"] is None) and "floor (all / half)" in md
    assert "held apart: acc / F1" in md and (val["held_apart"] is None) == (half is None)  # no halves: n/a, not a figure
    assert "held apart with the mirror" in md and (val["held_apart_mirror"] is None) == (half is None)
    lines = md.splitlines()
    top = lines.index(next(line for line in lines if line.startswith("| model | params")))
    table = lines[top:lines.index("", top)]  # header, divider, one row a model
    assert len(table) == 5 and len({line.count("|") for line in table}) == 1  # every row fills every column
    for png in ("curves.png", "confusion.png", "attention_vit.png", "attention_hf_vit.png", "attention_sae.png"):
        assert (tiny_run / png).stat().st_size > 1000
    runs = sorted((tiny_run / "wandb").glob("offline-run-*"))
    assert len(runs) == 4  # one per model + the comparison
    assert all(list(r.glob("*.wandb")) for r in runs)


def _weights(d):
    return {k: v for k, v in load_file(d / "model.safetensors").items()}


@pytest.fixture(scope="module")
def resume_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume") / "data"
    generate(root, per_class=30, test_per_class=0, seed=5)
    return root


UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_SILENT": "true"}


def _after_epoch_one(p: subprocess.Popen) -> None:
    """Wait for brisc-train's line for epoch 1, printed once that epoch's state.pt is written (engine.fit): the
    event to interrupt on, with no polling."""
    for line in p.stdout:
        if "] epoch 1/" in line:
            return
    raise AssertionError(f"brisc-train exited {p.wait()} before its first epoch ended")


@pytest.mark.parametrize("recipe", [[], ["--set", "vit.ema=0.9"]], ids=["plain", "weight-average"])
def test_resume_after_sigkill_matches_an_uninterrupted_run(resume_data, tmp_path, recipe):
    args = ["--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "3", "--batch-size", "4",
            "--wandb", "disabled", *recipe]
    run_cli("brisc.train.cli", *args, "--out", tmp_path / "full")

    killed = tmp_path / "killed"
    p = subprocess.Popen([sys.executable, "-m", "brisc.train.cli", *map(str, args), "--out", str(killed)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=UNBUFFERED)
    state = killed / "vit" / "state.pt"
    _after_epoch_one(p)
    os.kill(p.pid, signal.SIGKILL)  # during epoch 2
    p.wait()
    assert state.exists() and not (killed / "vit" / "metrics.json").exists(), "the kill came too late to test resume"
    assert torch.load(state, weights_only=True)["epoch"] < 3

    r = run_cli("brisc.train.cli", *args, "--out", killed, "--resume")
    assert "resuming after epoch" in r.stdout
    a, b = _weights(tmp_path / "full" / "vit"), _weights(killed / "vit")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "vit" / "metrics.json").read_text()) for d in (tmp_path / "full", killed))
    assert ma["val"] == mb["val"] and ma["best_epoch"] == mb["best_epoch"]
    assert [h["train_loss"] for h in ma["history"]] == [h["train_loss"] for h in mb["history"]]
    assert all(("val_acc_raw" in h) == bool(recipe) for h in ma["history"])  # the average is scored, raw beside it
    # Every epoch's validation logits survive the kill, so the epoch choice can be scored on held-apart halves.
    for name in ("val_logits.npy", "val_logits_mirror.npy"):
        la, lb = (np.load(d / "vit" / name) for d in (tmp_path / "full", killed))
        n_val = len(json.loads((killed / "split.json").read_text())["val"])
        assert la.shape == (3, n_val, 4) and np.array_equal(la, lb)
    assert ma["val"]["held_apart_mirror"]["halves"] == ma["val"]["held_apart"]["halves"]
    chosen = ma["val"]["held_apart"]
    assert set(chosen["epochs_chosen"].values()) <= {1, 2, 3} and sum(chosen["halves"]) == n_val
    assert chosen["best_epoch"] == ma["best_epoch"]


def test_the_kept_validation_logits_are_the_models_on_the_scans_and_on_their_mirrors(tiny_run):
    from brisc.imageio import load
    from brisc.runfolder import RunFolder
    from brisc.train.checkpoint import load_model

    rf = RunFolder(tiny_run)
    best = rf.metrics("vit")["best_epoch"] - 1  # model.safetensors holds that epoch's weights
    x = torch.from_numpy(np.stack([load(p) for p in rf.val_paths()]))
    with torch.no_grad():
        model = load_model(tiny_run, "vit")
        scan, mirror = model(x).logits.numpy(), model(x.flip(-1)).logits.numpy()
    atol = 2e-5  # fp32 (the tiny preset), other batch sizes
    assert np.abs(scan - mirror).max() > 50 * atol  # the scans are not symmetric: the checks below tell them apart
    np.testing.assert_allclose(np.load(rf.val_logits("vit"))[best], scan, atol=atol)
    np.testing.assert_allclose(np.load(rf.val_logits("vit", mirror=True))[best], mirror, atol=atol)


def test_sigterm_stops_training_in_one_line_and_leaves_no_temporary_file(resume_data, tmp_path):
    out = tmp_path / "termed"
    p = subprocess.Popen([sys.executable, "-m", "brisc.train.cli", "--data", str(resume_data), "--models", "vit",
                          "--preset", "tiny", "--epochs", "50", "--batch-size", "4", "--wandb", "disabled",
                          "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=UNBUFFERED)
    state = out / "vit" / "state.pt"
    _after_epoch_one(p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("brisc-train: interrupted (SIGTERM)") and "--resume" in err
    assert not [f for f in out.rglob("*") if is_tmp_name(f.name)]
    assert torch.load(state, weights_only=True)["epoch"] >= 1


def test_a_sigterm_inside_an_atomic_write_removes_its_temporary_file(tmp_path):
    target = tmp_path / "big.bin"
    code = ("import sys, time; from brisc.fsio import atomic_path, interrupted, raise_on_sigterm\n"
            "raise_on_sigterm()\n"
            "try:\n"
            f"    with atomic_path({str(target)!r}) as t:\n"
            "        t.write_bytes(b'x' * 1000); print('writing', flush=True); time.sleep(60)\n"
            "except KeyboardInterrupt as e:\n"
            "    sys.exit(interrupted('writer', e, 'here'))\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    assert [f.name for f in tmp_path.iterdir() if is_tmp_name(f.name)]  # the temporary file is there mid-write
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143 and "interrupted (SIGTERM)" in err
    assert list(tmp_path.iterdir()) == []  # neither the temporary file nor a half-written target


def test_existing_run_is_not_overwritten_without_resume(resume_data, tmp_path):
    (tmp_path / "run" / "vit").mkdir(parents=True)
    (tmp_path / "run" / "vit" / "state.pt").write_bytes(b"x")
    r = run_cli("brisc.train.cli", "--data", resume_data, "--models", "vit", "--out", tmp_path / "run", check=False)
    assert r.returncode == 2 and "--resume" in r.stderr


def test_torchrun_two_cpu_processes(synth_root, tmp_path):
    out = tmp_path / "ddp"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
                        "-m", "brisc.train.cli", "--data", str(synth_root), "--models", "vit,sae", "--preset", "tiny",
                        "--out", str(out), "--wandb", "disabled", "--device", "cpu"],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    comp = json.loads((out / "comparison.json").read_text())
    assert comp["run"]["world_size"] == 2
    val_n = comp["run"]["val_images"]
    for kind in ("vit", "sae"):
        m = json.loads((out / kind / "metrics.json").read_text())
        assert m["val"]["n"] == val_n  # every val image once: no padded duplicates
        assert sum(sum(row) for row in m["val"]["confusion"]) == val_n
    assert r.stdout.count("epoch 1/2  loss") == 2  # rank 0 alone logs (once per model)


@pytest.mark.parametrize("case,args,env,message", [
    ("missing data", ["--data", "{tmp}/nope", "--models", "vit"], {}, "does not exist"),
    ("unknown model", ["--models", "vit,resnet"], {}, "unknown model 'resnet'"),
    ("unreachable hub", ["--models", "hf_vit", "--hf-model", "nobody/no-such-vit"], {"HF_HUB_OFFLINE": "1"},
     "pass the local directory with --hf-model DIR"),
    ("no cuda", ["--models", "vit", "--device", "cuda"], {"CUDA_VISIBLE_DEVICES": ""}, "no CUDA device"),
    ("unknown field", ["--models", "vit", "--set", "vit.dept=2"], {}, "no field 'dept' for vit (choose from"),
    ("bad value", ["--models", "vit", "--set", "vit.augment.scale=0.9"], {}, "expected 2 comma-separated numbers"),
    ("model not trained", ["--models", "vit", "--set", "sae.dropout=0"], {}, "'sae' is not one of --models"),
    ("impossible architecture", ["--models", "vit", "--set", "vit.heads=3"], {}, "vit: dim 32 is not divisible by heads 3"),
    ("zero epochs", ["--models", "vit", "--epochs", "0"], {}, "--epochs 0: must be at least 1"),
    ("one class", ["--data", "{one_class}", "--models", "vit"], {}, "needs at least two classes"),
    ("distillation without a teacher", ["--models", "vit", "--set", "vit.distill_token=true"], {}, "go together"),
    ("a teacher that is not a model", ["--models", "vit", "--set", "vit.distill_token=true",
                                       "--set", "vit.distill_from=nowhere/sae"], {}, "not a trained brisc model folder"),
    ("a graph teacher that is not there", ["--models", "vit", "--set", "vit.distill_token=true",
                                           "--set", "vit.distill_from={tmp}/nowhere.onnx"], {}, "nowhere.onnx: model file not found"),
    ("guidance without attention", ["--models", "sae", "--set", "sae.guide_weight=1"], {}, "sae has none"),
    ("guide layer out of range", ["--models", "vit", "--set", "vit.guide_weight=1", "--set", "vit.guide_layers=3"], {},
     "guide layer 3 is outside the model's 2 layers"),
    ("no list of masks to leave out", ["--models", "vit", "--set", "vit.guide_exclude={tmp}/flagged.txt"], {},
     "vit.guide_exclude: cannot read the list of masks to leave out"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(synth_root, tmp_path, case, args, env, message):
    if "{one_class}" in args:  # a data folder whose only class is glioma
        generate(tmp_path / "one", per_class=6, test_per_class=0, seed=1)
        for d in (tmp_path / "one" / "classification_task" / "train").iterdir():
            if d.name != "glioma":
                shutil.rmtree(d)
    args = [a.replace("{tmp}", str(tmp_path)).replace("{one_class}", str(tmp_path / "one")) for a in args]
    if "--data" not in args:
        args += ["--data", str(synth_root)]
    out = tmp_path / "out"
    r = run_cli("brisc.train.cli", *args, "--out", out, "--preset", "tiny", "--wandb", "disabled", env=env, check=False)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not out.exists()


def test_set_changes_the_recipe_and_resume_refuses_other_settings(resume_data, tmp_path):
    out = tmp_path / "run"
    args = ["--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "1", "--wandb", "disabled",
            "--out", out]
    run_cli("brisc.train.cli", *args, "--set", "vit.depth=1", "--set", "vit.augment.scale=0.8,1.2")
    cfg = json.loads((out / "vit" / "config.json").read_text())
    assert cfg["model"]["depth"] == 1 and cfg["train"]["augment"]["scale"] == [0.8, 1.2]
    assert len([k for k in _weights(out / "vit") if k.endswith("attn.qkv.weight")]) == 1

    (out / "vit" / "metrics.json").unlink()  # as if killed before the end: --resume goes back into training
    r = run_cli("brisc.train.cli", *args, "--set", "vit.depth=2", "--set", "vit.augment.scale=0.8,1.2", "--resume",
                check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "other settings (model.depth)" in r.stderr and "state.pt" in r.stderr


def test_resume_refuses_another_split_and_says_when_there_is_nothing_to_resume(resume_data, tmp_path):
    out = tmp_path / "run"
    args = ["--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "1", "--wandb", "disabled",
            "--out", out]
    r = run_cli("brisc.train.cli", *args, "--resume")
    assert "no run in" in r.stdout and "starting a new one" in r.stdout
    (out / "vit" / "metrics.json").unlink()
    for extra, field in ((["--seed", "1"], "--seed 0 -> 1"), (["--val-fraction", "0.2"], "--val-fraction 0.1 -> 0.2")):
        r = run_cli("brisc.train.cli", *args, "--resume", *extra, check=False)
        assert r.returncode == 2 and "another split" in r.stderr and field in r.stderr, r.stderr


def test_run_files_are_strict_json_and_world_readable(tiny_run):
    def strict(path):
        return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{path}: bare {c}"))

    comp = strict(tiny_run / "comparison.json")
    for kind in ("vit", "hf_vit", "sae"):
        strict(tiny_run / kind / "metrics.json")
        for f in ("model.safetensors", "state.pt", "config.json"):
            assert stat.S_IMODE((tiny_run / kind / f).stat().st_mode) & 0o044 == 0o044, f
    # A class absent from a tiny validation split has an undefined AUC: null, not NaN.
    aucs = [c["auc"] for r in comp["models"] for c in r["val_per_class"].values()]
    assert all(a is None or not math.isnan(a) for a in aucs)


def test_an_exported_graph_teaches_as_its_pytorch_model_does_and_trains_a_soft_student(
        tiny_run, tiny_export, real_images, synth_root, tmp_path):
    from dataclasses import replace

    from brisc.imageio import load
    from brisc.train.distill import check_distillation, load_teacher
    from brisc.train.models import VisionTransformer, preset_config

    x = torch.from_numpy(np.stack([load(p) for p in real_images[:5]]))
    with torch.no_grad():
        ref = load_teacher(str(tiny_run / "vit"))(x).logits
    got = load_teacher(str(tiny_export / "vit.onnx"))(x).logits
    assert got.shape == ref.shape and (got - ref).abs().max() <= 1e-4
    # A graph fed otherwise than brisc-train feeds its students is refused, and the file named.
    odd = tmp_path / "odd.onnx"
    shutil.copy(tiny_export / "vit.onnx", odd)
    card = json.loads((tiny_export / "vit.onnx.json").read_text())
    card["preprocessing"]["mean"] = [0.4, 0.4, 0.4]
    (tmp_path / "odd.onnx.json").write_text(json.dumps(card))
    student = VisionTransformer(replace(preset_config("vit", "tiny"), distill_token=True))
    with pytest.raises(ValueError, match=f"^{re.escape(str(odd))}: the graph expects"):
        check_distillation(student, str(odd))
    out = tmp_path / "run"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit", "--preset", "tiny", "--epochs", "1",
            "--wandb", "disabled", "--out", out, "--set", "vit.distill_token=true",
            "--set", f"vit.distill_from={tiny_export / 'vit.int8.onnx'}", "--set", "vit.distill_tau=2")
    cfg = json.loads((out / "vit" / "config.json").read_text())
    assert cfg["train"]["distill_tau"] == 2.0 and cfg["train"]["distill_from"].endswith("vit.int8.onnx")
    assert math.isfinite(json.loads((out / "vit" / "metrics.json").read_text())["history"][0]["train_loss"])


def test_guided_distilled_run_with_registers_conv_stem_and_cutmix_records_its_recipe_and_exports(
        resume_data, tiny_run, tmp_path):
    out = tmp_path / "run"
    run_cli("brisc.train.cli", "--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "2",
            "--wandb", "disabled", "--out", out, "--set", "vit.guide_weight=0.5", "--set", "vit.guide_layers=1,2",
            "--set", "vit.registers=2", "--set", "vit.stem=conv", "--set", "vit.cutmix=1",
            "--set", "vit.distill_token=true", "--set", f"vit.distill_from={tiny_run / 'sae'}")
    cfg = json.loads((out / "vit" / "config.json").read_text())
    assert cfg["train"]["guide_weight"] == 0.5 and cfg["train"]["guide_layers"] == [1, 2]
    assert cfg["train"]["cutmix"] == 1.0 and cfg["model"]["stem"] == "conv" and cfg["model"]["distill_token"]
    assert cfg["train"]["distill_from"] == str(tiny_run / "sae")
    assert cfg["model"]["registers"] == 2 and cfg["split_method"] == "group"
    hist = json.loads((out / "vit" / "metrics.json").read_text())["history"]
    assert all(h["guide_loss"] > 0 for h in hist)
    expl = json.loads((out / "vit" / "metrics.json").read_text())["explanations"]
    assert {"rollout", "cls", "cls:layer=1", "cls:layer=2"} <= set(expl)
    run_cli("brisc.export.cli", "--run", out, "--out", tmp_path / "export")  # no --heatmap: the model's own best
    assert (tmp_path / "export" / "vit.onnx").stat().st_size > 0  # the export's own check compared it with PyTorch
    card = json.loads((tmp_path / "export" / "vit.onnx.json").read_text())
    assert card["heatmap"] == "cls:layer=2"  # the last guided layer's [CLS] attention, not plain rollout


def test_init_starts_from_another_runs_weights_and_refuses_another_architecture(resume_data, tmp_path):
    args = ["--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "1", "--wandb", "disabled"]
    run_cli("brisc.train.cli", *args, "--out", tmp_path / "a")
    run_cli("brisc.train.cli", *args, "--out", tmp_path / "b", "--init", tmp_path / "a", "--lr", "1e-9")
    a, b = _weights(tmp_path / "a" / "vit"), _weights(tmp_path / "b" / "vit")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5  # a near-zero learning rate: still run a's weights
    assert json.loads((tmp_path / "b" / "vit" / "config.json").read_text())["init"] == str(tmp_path / "a")
    r = run_cli("brisc.train.cli", *args, "--out", tmp_path / "c", "--init", tmp_path / "a", "--set", "vit.depth=1",
                check=False)
    assert r.returncode == 2 and "cannot start vit from it" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()


def test_a_training_seed_keeps_the_split_and_trains_another_model(resume_data, tmp_path):
    # An ensemble member: --set vit.seed changes the initialisation and the batches, never the split (--seed's).
    args = ["--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "1", "--wandb", "disabled"]
    run_cli("brisc.train.cli", *args, "--out", tmp_path / "a")
    run_cli("brisc.train.cli", *args, "--out", tmp_path / "b", "--set", "vit.seed=1")
    split_a, split_b = (json.loads((tmp_path / n / "split.json").read_text()) for n in "ab")
    assert split_a["val"] == split_b["val"] and split_a["train"] == split_b["train"]
    cfg = json.loads((tmp_path / "b" / "vit" / "config.json").read_text())
    assert cfg["seed"] == 1 and cfg["train"]["seed"] == 1
    a, b = _weights(tmp_path / "a" / "vit"), _weights(tmp_path / "b" / "vit")
    assert max((a[k] - b[k]).abs().max().item() for k in a) > 1e-3


def test_a_class_with_a_handful_of_images_is_warned_about(tmp_path):
    generate(tmp_path / "d", per_class=6, test_per_class=0, seed=2)
    for p in sorted((tmp_path / "d" / "classification_task" / "train" / "pituitary").glob("*.jpg"))[3:]:
        p.unlink()
    r = run_cli("brisc.train.cli", "--data", tmp_path / "d", "--models", "vit", "--preset", "tiny", "--epochs", "1",
                "--wandb", "disabled", "--out", tmp_path / "run")
    assert "class pituitary has only 3 image(s)" in r.stdout


def test_guidance_can_leave_out_the_masks_an_audit_flagged(resume_data, tmp_path):
    from brisc.data import discover
    from brisc.train.guidance import without_masks

    masked = sorted(Path(s.path).name for s in discover(resume_data).samples if s.mask)
    assert len(masked) >= 4
    listed = tmp_path / "flagged.txt"
    flagged = masked[::2]  # every other one: some land in training, whatever the split
    listed.write_text("\n".join(flagged) + "\nnot-in-the-data.jpg\n")
    samples = discover(resume_data).samples
    kept = without_masks(samples, set(flagged))
    assert sum(s.mask is not None for s in kept) == sum(s.mask is not None for s in samples) - len(flagged)
    assert [s.path for s in kept] == [s.path for s in samples]  # the images still train
    r = run_cli("brisc.train.cli", "--data", resume_data, "--models", "vit", "--preset", "tiny", "--epochs", "1",
                "--set", "vit.guide_weight=1", "--set", f"vit.guide_exclude={listed}", "--wandb", "disabled",
                "--out", tmp_path / "run")
    left_out = int(r.stdout.split("guidance leaves out the masks of ")[1].split()[0])
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert left_out == sum(Path(p).name in flagged for p in split["train"]) > 0
