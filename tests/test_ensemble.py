"""Several exported graphs as one: the combined outputs against the members', and what a bad ensemble gets."""

import json
import shutil

import numpy as np
import pytest

from brisc.export.ensemble import build, combine
from brisc.export.run import check_set
from brisc.export.selfcheck import ort_runner
from brisc.imageio import load
from brisc.metrics import classification_metrics
from brisc.sidecar import read_sidecar
from conftest import run_cli


def quiet(*a):
    pass


@pytest.fixture(scope="module")
def pair(tiny_export, synth_root, tmp_path_factory):
    """The tiny ViT's fp32 and INT8 graphs (one split, different numbers) as one graph."""
    out = tmp_path_factory.mktemp("ensemble") / "vit.ensemble.onnx"
    build([tiny_export / "vit.onnx", tiny_export / "vit.int8.onnx"], out, data=synth_root, log=quiet)
    return out


@pytest.fixture(scope="module")
def shallow(synth_root, tmp_path_factory):
    """A one-layer tiny ViT on the same split (the tiny preset has two): its run folder and its graph."""
    run, out = tmp_path_factory.mktemp("runs") / "shallow", tmp_path_factory.mktemp("export") / "shallow"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit", "--preset", "tiny", "--set", "vit.depth=1",
            "--out", run, "--wandb", "disabled")
    run_cli("brisc.export.cli", "--run", run, "--models", "vit", "--out", out)
    return run, out / "vit.onnx"


@pytest.fixture(scope="module")
def scans(real_images):
    return check_set(np.stack([load(p) for p in real_images[:5]]))  # real scans, a black and a noise frame


def test_ensemble_graph_equals_the_combination_of_its_members(tiny_export, pair, scans):
    card = read_sidecar(pair)
    members = [tiny_export / "vit.onnx", tiny_export / "vit.int8.onnx"]
    outs = [ort_runner(m)(scans) for m in members]
    mcards = [read_sidecar(m) for m in members]
    got = ort_runner(pair)(scans)
    assert list(got) == list(card.outputs) == list(mcards[0].outputs)
    ref = combine(outs, [c.temperature for c in mcards], [c.ood["threshold"] for c in mcards], card.heatmap,
                  card.temperature)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], atol=1e-5, rtol=1e-5, err_msg=name)
    # independent of combine: the logits are the mean calibrated logit, the heads lie side by side
    mean = (outs[0]["logits"] / mcards[0].temperature + outs[1]["logits"] / mcards[1].temperature) / 2
    np.testing.assert_allclose(got["logits"], mean, atol=1e-5)
    heads = outs[0]["attentions"].shape[2]
    assert got["attentions"].shape[2] == 2 * heads
    np.testing.assert_array_equal(got["attentions"][:, :, heads:], outs[1]["attentions"])
    assert got["heatmap"].min() >= 0 and got["heatmap"].max() <= 1
    assert card.self_check["max_abs_diff"]["logits"] < 1e-4


@pytest.mark.parametrize("heatmap", ["rollout", "cls"])
def test_members_of_different_depth_stand_side_by_side_on_their_last_layers(tiny_run, tiny_export, shallow,
                                                                             synth_root, tmp_path, scans, heatmap):
    from brisc.export.run import ExportOptions, export_run
    from brisc.maps import cls_map

    members = [tiny_export / "vit.onnx", shallow[1]]  # two layers and one
    if heatmap != "rollout":
        members = [export_run(ExportOptions(run=r, out=tmp_path / f"cls{i}", models=("vit",), heatmap=heatmap),
                              log=quiet)[0] for i, r in enumerate((tiny_run, shallow[0]))]
    out = build(members, tmp_path / "deep+shallow.onnx", data=synth_root, log=quiet)
    card, got = read_sidecar(out), ort_runner(out)(scans)
    m = [ort_runner(p)(scans) for p in members]
    assert [o["attentions"].shape[1] for o in m] == [2, 1] and got["attentions"].shape[1] == 1
    heads = m[0]["attentions"].shape[2]
    np.testing.assert_array_equal(got["attentions"][:, 0, :heads], m[0]["attentions"][:, -1])  # the last layer's
    np.testing.assert_array_equal(got["attentions"][:, 0, heads:], m[1]["attentions"][:, 0])
    if heatmap == "rollout":  # the mean of the members' own maps, each over all its layers
        assert card.heatmap == "rollout"
        want = (m[0]["heatmap"] + m[1]["heatmap"]) / 2
    else:  # the last layer of each, over all the heads
        assert card.heatmap == "cls:layer=1" and "last 1 layers" in card.heatmap_method
        want = cls_map(got["attentions"])
    np.testing.assert_allclose(got["heatmap"], want, atol=1e-5)
    np.testing.assert_allclose(got["rollout"], (m[0]["rollout"] + m[1]["rollout"]) / 2, atol=1e-5)


@pytest.mark.parametrize("heatmap", ["rollout", "cls"])
def test_ensemble_of_a_graph_with_itself_is_that_graph(tiny_run, tiny_export, synth_root, tmp_path, scans, heatmap):
    from brisc.export.run import ExportOptions, export_run

    member = tiny_export / "vit.onnx"  # the tiny ViT is unguided: its map is rollout
    if heatmap != "rollout":  # the [CLS] map over heads that come twice: the same mean
        member = export_run(ExportOptions(run=tiny_run, out=tmp_path / "cls", models=("vit",), heatmap=heatmap),
                            log=quiet)[0]
    twin = tmp_path / "twin.onnx"
    for suffix in ("", ".json"):
        shutil.copy(f"{member}{suffix}", f"{twin}{suffix}")
    out = build([member, twin], tmp_path / "self.onnx", data=synth_root, log=quiet)
    m, got, mc = ort_runner(member)(scans), ort_runner(out)(scans), read_sidecar(member)
    assert read_sidecar(out).heatmap == mc.heatmap == heatmap
    np.testing.assert_allclose(got["logits"], m["logits"] / mc.temperature, atol=1e-5)
    for name in ("heatmap", "rollout"):
        np.testing.assert_allclose(got[name], m[name], atol=1e-5, err_msg=name)
    np.testing.assert_allclose(got["ood_score"], m["ood_score"] / mc.ood["threshold"], rtol=1e-5, atol=1e-6)


def test_card_holds_the_graphs_own_validation_figures(pair, synth_root):
    from brisc.data import discover, make_splits

    card = read_sidecar(pair)
    val = make_splits(discover(synth_root)).val
    x = np.stack([load(s.path) for s in val])
    out = ort_runner(pair)(x)
    y = np.array([s.label for s in val])
    m = classification_metrics(out["logits"], y, card.temperature)
    assert card.validation_metrics["n"] == len(val)
    assert card.validation_metrics["accuracy"] == pytest.approx(m["accuracy"])
    np.testing.assert_allclose(out["probabilities"], np.exp(out["logits"] / card.temperature) /
                               np.exp(out["logits"] / card.temperature).sum(1, keepdims=True), atol=1e-5)
    assert (out["ood_score"] > card.ood["threshold"]).mean() <= 0.05 + 1e-9
    assert [m["file"] for m in card.self_check["members"]] == ["vit.onnx", "vit.int8.onnx"]


def test_brisc_infer_runs_the_ensemble_and_writes_its_maps(pair, real_images, tmp_path):
    from PIL import Image

    scans = tmp_path / "scans"
    scans.mkdir()
    for p in real_images[:3]:
        shutil.copy(p, scans / p.name)
    out = tmp_path / "out"
    run_cli("brisc.inference.cli", scans, "--model", pair, "--out", out, "--heatmaps")
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) >= 3
    for p in pngs:
        Image.open(p).verify()


@pytest.mark.parametrize("case", ["one member", "out exists", "other split", "sae", "wrong data", "other map"])
def test_bad_ensemble_exit_2_one_line_nothing_written(tiny_export, synth_root, tmp_path, case):
    vit, out = tiny_export / "vit.onnx", tmp_path / "ens.onnx"
    other = tmp_path / "other.onnx"
    for suffix in ("", ".json"):
        shutil.copy(f"{vit}{suffix}", f"{other}{suffix}")
    meta = json.loads((tmp_path / "other.onnx.json").read_text())
    if case == "other map":
        meta["heatmap"] = "cls"  # its card recommends the [CLS] map, the tiny ViT's the rollout
    else:
        meta["training_data"]["split_seed"] = 7  # the card says another split; the graph's bytes are intact
    (tmp_path / "other.onnx.json").write_text(json.dumps(meta))
    args, data = {"one member": ([vit], synth_root), "out exists": ([vit, vit], synth_root),
                  "other split": ([vit, other], synth_root), "sae": ([vit, tiny_export / "sae.onnx"], synth_root),
                  "wrong data": ([vit, vit], tmp_path), "other map": ([vit, other], synth_root)}[case]
    if case == "out exists":
        out.write_bytes(b"a user's file")
    r = run_cli("brisc.export.ensemble", *args, "--out", out, "--data", data, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("brisc.export.ensemble: error:") and r.stderr.strip().count("\n") == 0, r.stderr
    if case == "out exists":
        assert out.read_bytes() == b"a user's file"
    else:
        assert not out.exists()
    assert {"other split": "other.onnx", "sae": "sae.onnx", "out exists": "ens.onnx",
            "other map": "its map (cls of 2 layers) is not vit.onnx's (rollout of 2)"}.get(case, "") in r.stderr



@pytest.mark.parametrize("heatmap", ["rollout", "cls"])
def test_mirror_views_average_a_graph_over_the_scan_and_its_mirror(tiny_run, tiny_export, synth_root, tmp_path, scans,
                                                                  heatmap):
    """--mirror: one member on the scan and its mirror is flip averaging, checked against the member run twice."""
    from brisc.export.run import ExportOptions, export_run
    from brisc.maps import cls_map

    member = tiny_export / "vit.onnx"
    if heatmap != "rollout":
        member = export_run(ExportOptions(run=tiny_run, out=tmp_path / "cls", models=("vit",), heatmap=heatmap),
                            log=quiet)[0]
    out = build([member], tmp_path / "mirror.onnx", data=synth_root, mirror=True, log=quiet)
    card, mc = read_sidecar(out), read_sidecar(member)
    assert card.self_check["mirror"] is True and card.heatmap == mc.heatmap
    mirrored = np.ascontiguousarray(scans[..., ::-1])
    run, m = ort_runner(out), ort_runner(member)
    got, got_m, a, b = run(scans), run(mirrored), m(scans), m(mirrored)
    # written out here, not through mirror_back: the mirror's patch columns are the scan's reversed
    g = a["heatmap"].shape[-1]
    b_att = b["attentions"].reshape(*b["attentions"].shape[:3], g, g)[..., ::-1].reshape(b["attentions"].shape)
    np.testing.assert_allclose(got["logits"], (a["logits"] + b["logits"]) / 2 / mc.temperature, atol=1e-5)
    np.testing.assert_allclose(got["attentions"], np.concatenate([a["attentions"], b_att], 2), atol=1e-6)
    np.testing.assert_allclose(got["rollout"], (a["rollout"] + b["rollout"][..., ::-1]) / 2, atol=1e-5)
    heat = (cls_map(np.concatenate([a["attentions"], b_att], 2), layer=-1) if heatmap == "cls"
            else (a["heatmap"] + b["heatmap"][..., ::-1]) / 2)
    np.testing.assert_allclose(got["heatmap"], heat, atol=1e-5)
    np.testing.assert_allclose(got["ood_score"], (a["ood_score"] + b["ood_score"]) / 2 / mc.ood["threshold"],
                               rtol=1e-5, atol=1e-6)
    # the averaged graph does not care which way the scan faces: its map turns with the scan
    np.testing.assert_allclose(got_m["logits"], got["logits"], atol=1e-5)
    np.testing.assert_allclose(got_m["heatmap"], got["heatmap"][..., ::-1], atol=1e-5)
    assert ort_runner(out)(scans[:1])["logits"] == pytest.approx(got["logits"][:1], abs=1e-5)  # batch-independent
    assert out.stat().st_size < 1.2 * member.stat().st_size  # the member's weights once
