"""brisc-pretrain: a tiny MAE run, exact resume, and its output feeding both ViTs."""

import json
import math

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from brisc.data import discover, make_splits
from brisc.train import pretrain as pt
from brisc.train.models.vit import VIT_PRESETS, VisionTransformer, load_hf_vit_state
from conftest import run_cli


@pytest.fixture(scope="module")
def pretrained(synth_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrain") / "mae"
    r = run_cli("brisc.train.pretrain_cli", "--data", synth_root, "--out", out, "--preset", "tiny", "--wandb", "disabled")
    assert "validation never seen" in r.stdout
    return out


def test_tiny_pretraining_writes_a_vit_directory_reconstructions_and_its_record(pretrained, synth_root):
    rec = json.loads((pretrained / "pretrain.json").read_text())
    assert [h["epoch"] for h in rec["history"]] == [1, 2] and all(h["loss"] > 0 for h in rec["history"])
    train = make_splits(discover(synth_root), val_fraction=0.1, seed=0, method="group").train
    assert rec["split"]["train_images"] == len(train) and rec["labels_used"] is False  # brisc-train's own split
    assert json.loads((pretrained / "config.json").read_text())["model_type"] == "vit"
    for epoch in (1, 2):
        img = Image.open(pretrained / "reconstructions" / f"epoch_{epoch:03d}.png")
        assert img.size == (3 * 224, 4 * 224)  # original | masked | reconstruction, four training images


def test_the_encoder_loads_into_transformers_vit_with_only_the_classifier_missing(pretrained):
    from transformers import ViTForImageClassification

    _, info = ViTForImageClassification.from_pretrained(str(pretrained), num_labels=4, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]


def test_the_encoder_maps_onto_the_home_made_vit_and_computes_the_same_features(pretrained):
    from transformers import ViTModel

    hf = ViTModel.from_pretrained(str(pretrained), add_pooling_layer=False, attn_implementation="eager").eval()
    ours = VisionTransformer(VIT_PRESETS["tiny"]).eval()
    left = load_hf_vit_state(ours, load_file(str(pretrained / "model.safetensors")))
    assert set(left) == {"head.weight", "head.bias"}  # only the classification head starts fresh
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = hf(pixel_values=x).last_hidden_state
        got, _ = ours.forward_features(x)
    assert torch.allclose(got, ref, atol=1e-5)


def test_resume_after_a_kill_ends_with_the_same_weights(synth_root, tmp_path, monkeypatch):
    opts = pt.PretrainOptions(data=synth_root, out=tmp_path / "straight", preset="tiny", wandb="disabled")
    pt.pretrain(opts, log=lambda *a: None)
    calls = []

    def killed_after_first_epoch(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt  # after epoch 1's checkpoint: a kill between epochs

    killed = pt.PretrainOptions(data=synth_root, out=tmp_path / "killed", preset="tiny", wandb="disabled")
    monkeypatch.setattr(pt, "reconstructions", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        pt.pretrain(killed, log=lambda *a: None)
    monkeypatch.undo()
    with pytest.raises(pt.PretrainError, match="--resume"):
        pt.pretrain(killed, log=lambda *a: None)
    pt.pretrain(pt.PretrainOptions(**{**killed.__dict__, "resume": True}), log=lambda *a: None)
    a = load_file(str(tmp_path / "straight" / "mae" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "mae" / "model.safetensors"))
    assert calls == [1] and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_brisc_train_fine_tunes_the_pretrained_encoder_in_both_vits(pretrained, synth_root, tmp_path):
    out = tmp_path / "run"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit,hf_vit", "--preset", "tiny", "--epochs", "1",
            "--out", out, "--hf-model", pretrained, "--wandb", "disabled")
    comp = json.loads((out / "comparison.json").read_text())
    assert {r["model"] for r in comp["models"]} == {"vit", "hf_vit"}  # the pretrained row is filled
    assert all(0 <= r["val_accuracy"] <= 1 for r in comp["models"])
    init = tmp_path / "from-mae"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit", "--preset", "tiny", "--epochs", "1",
            "--out", init, "--init", pretrained, "--wandb", "disabled")
    assert (init / "vit" / "model.safetensors").is_file()
    r = run_cli("brisc.train.cli", "--data", synth_root, "--models", "sae", "--preset", "tiny", "--epochs", "1",
                "--out", tmp_path / "sae", "--init", pretrained, "--wandb", "disabled", check=False)
    assert r.returncode == 2 and "home-made ViT only" in r.stderr


def test_the_tensor_loader_pretrains_too_and_an_unknown_loader_is_refused(pretrained, synth_root, tmp_path):
    assert json.loads((pretrained / "pretrain.json").read_text())["train"]["loader"] == "pil"  # the CPU's default
    rec = pt.pretrain(pt.PretrainOptions(data=synth_root, out=tmp_path / "tensor", preset="tiny", wandb="disabled",
                                         loader="tensor"), log=lambda *a: None)
    assert rec["train"]["loader"] == "tensor" and len(rec["history"]) == 2
    assert all(math.isfinite(h["loss"]) for h in rec["history"])
    assert json.loads((tmp_path / "tensor" / "config.json").read_text())["model_type"] == "vit"
    with pytest.raises(pt.PretrainError, match="--loader dali"):
        pt.pretrain(pt.PretrainOptions(data=synth_root, out=tmp_path / "bad", preset="tiny", wandb="disabled",
                                       loader="dali"), log=lambda *a: None)
