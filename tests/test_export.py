import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from brisc.export.run import ExportOptions, export_run
from brisc.export.loading import load_trained
from brisc.export.wrapper import ExportWrapper, HeatmapSpec
from brisc.imageio import Preprocessing, load
from brisc.maps import cls_map, rollout
from brisc.runfolder import RunFolder
from brisc.sidecar import SidecarError, read_sidecar
from conftest import run_cli

KINDS = ("vit", "hf_vit", "sae")


@pytest.fixture(scope="module")
def real_batch(real_images):
    return np.stack([load(p) for p in real_images[:7]])


def _wrapper(run, kind):
    tm = load_trained(run, kind)
    return ExportWrapper(tm.model, temperature=tm.config["temperature"])


def _torch(wrapper, x):
    with torch.no_grad():
        return dict(zip(wrapper.names, (t.numpy() for t in wrapper(torch.from_numpy(x)))))


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_pytorch_on_real_images_at_batch_1_2_and_7(tiny_run, tiny_export, real_batch, kind):
    w = _wrapper(tiny_run, kind)
    sess = ort.InferenceSession(str(tiny_export / f"{kind}.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names == w.names + ["ood_score"]  # its parity with numpy and PyTorch: test_ood
    expected = ["logits", "probabilities", "heatmap"] + (["attentions", "rollout"] if kind != "sae" else []) + ["ood_score"]
    assert names == expected
    assert sess.get_inputs()[0].name == "pixel_values" and isinstance(sess.get_inputs()[0].shape[0], str)
    for b in (1, 2, 7):
        x = real_batch[:b]
        got = dict(zip(names, sess.run(None, {"pixel_values": x})))
        ref = _torch(w, x)
        assert np.abs(got["logits"] - ref["logits"]).max() <= 1e-4
        assert np.abs(got["probabilities"] - ref["probabilities"]).max() <= 1e-4
        assert got["heatmap"].shape == (b, 14, 14) and got["heatmap"].min() >= 0 and got["heatmap"].max() <= 1 + 1e-6
        if kind != "sae":
            assert got["attentions"].shape[0] == b and got["attentions"].shape[-1] == 196
            assert np.abs(got["attentions"] - ref["attentions"]).max() <= 1e-5
            assert np.abs(got["rollout"] - ref["rollout"]).max() <= 1e-5
    probs = got["probabilities"]
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    t = read_sidecar(tiny_export / f"{kind}.onnx").temperature
    assert np.allclose(probs, torch.softmax(torch.from_numpy(got["logits"]) / t, -1).numpy(), atol=1e-6)


@pytest.mark.parametrize("fmt", ["torchscript", "pt2"])
@pytest.mark.parametrize("kind", KINDS)
def test_torchscript_and_torch_export_parity(tiny_run, tmp_path, real_batch, kind, fmt):
    out = tmp_path / fmt
    written = export_run(ExportOptions(run=tiny_run, out=out, models=(kind,), format=fmt), log=lambda *a: None)
    (path,) = written
    meta = read_sidecar(path)
    assert meta.format == fmt and list(meta.outputs) == _wrapper(tiny_run, kind).names + ["ood_score"]
    assert meta.self_check["max_abs_diff"]["ood_score"] <= 1e-3 and meta.ood["threshold"] is not None
    x = torch.from_numpy(real_batch[:3])
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
    else:
        module = torch.export.load(str(path)).module()
    with torch.no_grad():
        got = [t.numpy() for t in module(x)]
    ref = _torch(_wrapper(tiny_run, kind), real_batch[:3])
    for name, g in zip(meta.outputs, got):
        if name != "ood_score":  # the reference wrapper has no OOD head; the self-check compared it
            assert np.abs(g - ref[name]).max() <= 1e-5, name


def test_metadata_props_and_sidecar_round_trip(tiny_run, tiny_export):
    for kind in KINDS:
        path = tiny_export / f"{kind}.onnx"
        meta = read_sidecar(path)
        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert json.loads(props["classes"]) == list(meta.classes) == ["glioma", "meningioma", "no_tumor", "pituitary"]
        assert props["model_kind"] == meta.model_kind == kind
        assert Preprocessing.from_dict(json.loads(props["preprocessing"])) == meta.preprocessing
        assert float(props["temperature"]) == meta.temperature
        assert props["checkpoint_sha256"] == meta.checkpoint_sha256 == load_trained(tiny_run, kind).checkpoint_sha256
        assert "/" not in meta.training_data["data"]  # the data folder by name, never a path of this machine
        metrics = json.loads((tiny_run / kind / "metrics.json").read_text())
        assert meta.validation_metrics["accuracy"] == metrics["val"]["accuracy"]
        assert meta.self_check["images"] >= 1
        assert not list(tiny_export.glob("*.data"))  # self-contained graphs


def test_in_graph_rollout_equals_numpy_rollout_of_the_exported_attention(tiny_run, tmp_path, real_batch):
    (path,) = export_run(ExportOptions(run=tiny_run, out=tmp_path, models=("vit",), full_attention=True),
                         log=lambda *a: None)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"pixel_values": real_batch[:4]})))
    full = out["attentions_full"]
    assert full.shape[-2:] == (197, 197)
    assert np.array_equal(out["attentions"], full[:, :, :, 0, 1:])
    assert np.abs(out["rollout"] - rollout(full)).max() <= 1e-5
    assert np.array_equal(out["heatmap"], out["rollout"])


@pytest.mark.parametrize("spec,reference", [
    ("cls:layer=1:max", lambda full: cls_map(full[:, :, :, 0, 1:], layer=0, head_fusion="max")),
    ("cls", lambda full: cls_map(full[:, :, :, 0, 1:])),
    ("cls:layer=2:head=2", lambda full: cls_map(full[:, :, :, 0, 1:], layer=1, head=1)),
    ("rollout:start=2", lambda full: rollout(full, start_layer=1)),
])
def test_chosen_heatmap_equals_its_numpy_reference(tiny_run, tmp_path, real_batch, spec, reference):
    (path,) = export_run(ExportOptions(run=tiny_run, out=tmp_path, models=("vit",), full_attention=True, heatmap=spec),
                         log=lambda *a: None)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"pixel_values": real_batch[:4]})))
    assert np.abs(out["heatmap"] - reference(out["attentions_full"])).max() <= 1e-5
    assert np.abs(out["rollout"] - rollout(out["attentions_full"])).max() <= 1e-5  # rollout stays plain
    assert read_sidecar(path).heatmap == spec


@pytest.mark.parametrize("spec", ["rollout", "rollout:max", "rollout:start=2", "cls", "cls:layer=1:max",
                                  "cls:head=1"])
def test_lean_wrapper_gives_the_outputs_of_the_models_own_path(tiny_run, real_batch, spec):
    # The exported computation (q/k/v head-major, last block for the prefix tokens only) against the model's own.
    tm = load_trained(tiny_run, "vit")
    heat = HeatmapSpec.parse(spec)
    lean, plain = ExportWrapper(tm.model, heatmap=heat), ExportWrapper(tm.model, heatmap=heat, lean=False)
    x = torch.from_numpy(real_batch[:4])
    with torch.no_grad():
        got, ref = lean(x), plain(x)
        assert tm.model(x, output_attentions=True, prefix_only_last=True).attentions[-1].shape[-2] == 1
    for name, g, r in zip(lean.names, got, ref, strict=True):
        assert g.shape == r.shape and (g - r).abs().max() <= 1e-5, name


def test_int8_keeps_attention_products_in_fp32_and_agrees(tiny_run, tiny_export):
    # The tiny models sit near chance, so their logits nearly tie and top-1 agreement would hinge on rounding
    # (and on the CPU's instruction set): the bound is on the logit error relative to the logit spread.
    from brisc.export.quantize import int8_nodes

    for kind in KINDS:
        q = read_sidecar(tiny_export / f"{kind}.int8.onnx").quantization
        assert q["type"].startswith("static") and "reduce_range" in q["type"] and q["cpu"]
        # Calibrated on training images and the self-check's two outliers (black, noise).
        assert q["calibration_images"] == min(128, len(RunFolder(tiny_run).train_paths())) + 2
        assert q["logit_error_ratio"] <= 0.1 and q["heatmap_correlation"] >= 0.95, (kind, q)
        assert kind == "sae" or q["rollout_correlation"] >= 0.95
        g = onnx.load(str(tiny_export / f"{kind}.int8.onnx")).graph
        inits = {i.name for i in g.initializer}
        ops = [n.op_type for n in g.node]
        assert "DynamicQuantizeLinear" not in ops  # the scales are in the graph, not computed per batch
        quantized = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
        int8_products = [n for n in g.node if n.op_type in ("MatMul", "Gemm") and set(n.input) & quantized]
        assert len(int8_products) == len(int8_nodes(tiny_export / f"{kind}.onnx")) > 0
        # Each quantized product has both inputs through Q/DQ: its activation and its weight, nothing else.
        assert all(len(set(n.input[:2]) & quantized) == 2 for n in int8_products)
        if kind != "sae":
            float_mm = [n for n in g.node if n.op_type == "MatMul" and not set(n.input) & (inits | quantized)]
            assert len(float_mm) >= 2 * 2  # Q.K^T and P.V of every layer stay fp32
            softmax = [n for n in g.node if n.op_type == "Softmax"]
            assert softmax and not any(set(n.input) & quantized for n in softmax)


@pytest.mark.parametrize("kind", KINDS)
def test_int8_probabilities_do_not_depend_on_the_batch(tiny_export, real_batch, kind):
    """Static scales: a scan's outputs are the same alone or among others (dynamic INT8 scales from each batch did not)."""
    sess = ort.InferenceSession(str(tiny_export / f"{kind}.int8.onnx"), providers=["CPUExecutionProvider"])
    x = np.concatenate([real_batch] * 5)[:32]  # 32 scans, as brisc-infer batches them
    together = sess.run(None, {"pixel_values": x})
    names = [o.name for o in sess.get_outputs()]
    alone = [sess.run(None, {"pixel_values": x[i:i + 1]}) for i in (0, 3, 6)]
    for j, name in enumerate(names):
        for k, i in enumerate((0, 3, 6)):
            assert np.abs(alone[k][j][0] - together[j][i]).max() <= 1e-5, (kind, name, i)


def test_truncated_or_tampered_graph_is_refused(tiny_export, tmp_path):
    for name in ("vit.onnx", "vit.onnx.json"):
        shutil.copy(tiny_export / name, tmp_path / name)
    read_sidecar(tmp_path / "vit.onnx")  # intact: accepted
    data = (tmp_path / "vit.onnx").read_bytes()
    (tmp_path / "vit.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(SidecarError, match="sha256 does not match"):
        read_sidecar(tmp_path / "vit.onnx")
    (tmp_path / "vit.onnx").write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(SidecarError, match="sha256 does not match"):
        read_sidecar(tmp_path / "vit.onnx")
    meta = json.loads((tmp_path / "vit.onnx.json").read_text())
    meta["preprocessing"]["version"] = 99
    (tmp_path / "vit.onnx").write_bytes(data)
    (tmp_path / "vit.onnx.json").write_text(json.dumps(meta))
    with pytest.raises(SidecarError, match="preprocessing version 99"):
        read_sidecar(tmp_path / "vit.onnx")


def test_failed_self_check_deletes_the_output(tiny_run, tmp_path, monkeypatch):
    from brisc.export import selfcheck as onnx_mod

    monkeypatch.setitem(onnx_mod.TOLERANCE, "logits", -1.0)  # nothing can pass
    with pytest.raises(onnx_mod.ExportCheckError, match="logits max abs diff"):
        export_run(ExportOptions(run=tiny_run, out=tmp_path, models=("sae",)), log=lambda *a: None)
    assert list(tmp_path.iterdir()) == []


def _run_copy(tiny_run, tmp_path, *, ema: bool = False):
    """The tiny run's ViT with last-epoch weights unlike its best (and, with ``ema``, as an EMA run whose last
    evaluated model lives in state.pt), and last-epoch validation logits of known temperature."""
    from safetensors.torch import load_file, save_file

    from brisc import CLASSES
    from brisc.data import label_from_path
    from brisc.metrics import fit_temperature
    from brisc.train import checkpoint as ckpt

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("hf_vit", "sae"))
    rf = RunFolder(run)
    last = {k: (v * 0.5 if v.is_floating_point() else v) for k, v in load_file(str(rf.weights("vit"))).items()}
    logits = np.load(rf.val_logits("vit"))
    logits[-1] = np.random.default_rng(0).normal(0, 3, logits[-1].shape)  # an epoch unlike the best
    np.save(rf.val_logits("vit"), logits)
    if ema:
        cfg = rf.config("vit")
        cfg["train"]["ema"] = 0.99
        rf.config_path("vit").write_text(json.dumps(cfg))
        state = ckpt.load_state(rf.state("vit"))
        ckpt.save_state(rf.state("vit"), {**state, "ema": {"updates": 1, "weights": last}})
        rf.last("vit").unlink()  # the raw weights are not what an EMA run evaluates
    else:
        save_file(last, str(rf.last("vit")))
    y = [CLASSES.index(label_from_path(p)) for p in rf.val_paths()]
    return run, last, fit_temperature(logits[-1], y), logits.shape[0]


@pytest.mark.parametrize("ema", [False, True], ids=["plain", "ema"])
def test_checkpoint_last_exports_the_last_epoch_with_its_own_temperature(tiny_run, tiny_export, tmp_path, real_batch,
                                                                       ema):
    run, last, temperature, epochs = _run_copy(tiny_run, tmp_path, ema=ema)
    tm = load_trained(run, "vit", "last")
    for k, v in tm.model.state_dict().items():
        assert torch.equal(v, last[k]), k
    best = load_trained(run, "vit").model.state_dict()
    assert any(not torch.equal(v, best[k]) for k, v in last.items())  # so the equality above says which was loaded
    out = tmp_path / "out"
    r = run_cli("brisc.export.cli", "--run", run, "--models", "vit", "--checkpoint", "last", "--out", out)
    assert r.returncode == 0, r.stderr
    card = read_sidecar(out / "vit.onnx")
    assert card.training_data["checkpoint"] == f"last (epoch {epochs})"
    assert card.temperature == pytest.approx(temperature)
    assert card.checkpoint_sha256 == load_trained(run, "vit", "last").checkpoint_sha256 != load_trained(
        run, "vit").checkpoint_sha256
    sess = ort.InferenceSession(str(out / "vit.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["logits"], {"pixel_values": real_batch})[0]
    assert np.abs(got - _torch(ExportWrapper(tm.model, temperature=temperature), real_batch)["logits"]).max() <= 1e-4
    assert read_sidecar(tiny_export / "vit.onnx").training_data["checkpoint"].startswith("best (epoch ")


def test_checkpoint_last_without_its_files_is_refused_in_one_line(tiny_run, tmp_path):
    run, *_ = _run_copy(tiny_run, tmp_path)
    RunFolder(run).val_logits("vit").unlink()
    r = run_cli("brisc.export.cli", "--run", run, "--checkpoint", "last", "--out", tmp_path / "out", check=False)
    assert r.returncode == 2 and "val_logits.npy: missing, so the last epoch cannot be exported" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["missing run", "model not in run", "opset", "unwritable out", "heatmap layer",
                                  "heatmap head", "heatmap name"])
def test_bad_input_exit_2_nothing_written(tiny_run, tmp_path, case):
    out = tmp_path / "out"
    args = {"missing run": ["--run", tmp_path / "nope", "--out", out],
            "model not in run": ["--run", tiny_run, "--models", "resnet", "--out", out],
            "opset": ["--run", tiny_run, "--opset", "9", "--out", out],
            "unwritable out": ["--run", tiny_run, "--out", tmp_path / "file" / "sub"],
            "heatmap layer": ["--run", tiny_run, "--models", "vit", "--heatmap", "cls:layer=9", "--out", out],
            "heatmap head": ["--run", tiny_run, "--models", "vit", "--heatmap", "cls:head=3", "--out", out],
            "heatmap name": ["--run", tiny_run, "--heatmap", "gradcam", "--out", out]}[case]
    (tmp_path / "file").write_text("a file, not a folder")
    r = run_cli("brisc.export.cli", *args, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("brisc-export: error:") and r.stderr.strip().count("\n") == 0
    assert not out.exists() or not any(out.iterdir())


def test_ship_checks_int8_on_validation_and_falls_back_to_fp32(tiny_run, tmp_path, monkeypatch):
    from brisc.export import ship as shipping
    from brisc.inference.session import open_session

    exp = tmp_path / "exp"
    export_run(ExportOptions(run=tiny_run, out=exp, models=("vit",), quantize="int8"), log=lambda *a: None)
    dest = shipping.ship(exp / "vit.int8.onnx", run=tiny_run, dest_dir=tmp_path / "a", log=lambda *a: None)
    card = open_session(dest).card  # the shipped copy verifies (sha256 of the copy, not the source)
    q = card.quantization
    assert q["images"] == len(RunFolder(tiny_run).val_paths())  # checked on the whole validation split
    # The rule, whichever way this CPU's rounding tips a near-chance tiny model's top-1:
    int8 = q["top1_agreement"] >= shipping.MIN_AGREEMENT
    assert q["shipped"] == ("int8" if int8 else "fp32") and card.shipped_from == ("vit.int8.onnx" if int8 else "vit.onnx")
    monkeypatch.setattr(shipping, "MIN_AGREEMENT", 1.01)  # no INT8 graph can pass: its fp32 graph is shipped
    dest = shipping.ship(exp / "vit.int8.onnx", run=tiny_run, dest_dir=tmp_path / "b", log=lambda *a: None)
    card = open_session(dest).card
    assert card.shipped_from == "vit.onnx" and card.quantization["shipped"] == "fp32"
    monkeypatch.setattr(shipping, "MAX_BYTES", 1000)
    with pytest.raises(ValueError, match="over the 25 MB limit"):
        shipping.ship(exp / "vit.onnx", dest_dir=tmp_path / "c")
    assert not (tmp_path / "c").exists()
