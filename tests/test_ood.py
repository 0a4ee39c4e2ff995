"""Out-of-distribution: the numpy scores, the graph's ood_score against them, outlier exposure, and brisc-infer's flags."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from brisc.ood import (SCORES, auroc, background_distance, evaluate, fit_gaussians, flagged, image_rule, score,
                       threshold_for)
from brisc.sidecar import read_sidecar
from conftest import gallery_data, prediction_rows, run_cli

INFER = "brisc.inference.cli"


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (4, 6))
    A = rng.normal(0, 1, (6, 6))
    y = np.repeat(np.arange(4), 200)
    f = means[y] + rng.normal(0, 1, (800, 6)) @ A
    return f, y, fit_gaussians(f, y, 4)


def test_mahalanobis_equals_the_textbook_formula(gaussians):
    f, y, stats = gaussians
    means = np.stack([f[y == k].mean(0) for k in range(4)])
    c = f - means[y]
    cov = c.T @ c / len(f)
    cov += 1e-3 * np.trace(cov) / 6 * np.eye(6)  # brisc.ood.RIDGE
    prec = np.linalg.inv(cov)
    x = f[:7] + 5.0
    ref = np.min([np.einsum("nd,de,ne->n", x - m, prec, x - m) for m in means], axis=0)
    np.testing.assert_allclose(score("mahalanobis", logits=np.zeros((7, 4)), features=x, stats=stats), ref, rtol=1e-5)
    bg = np.cov(f, rowvar=False, bias=True)
    bg += 1e-3 * np.trace(bg) / 6 * np.eye(6)
    d0 = np.einsum("nd,de,ne->n", x - f.mean(0), np.linalg.inv(bg), x - f.mean(0))
    np.testing.assert_allclose(score("relative_mahalanobis", logits=np.zeros((7, 4)), features=x, stats=stats),
                               ref - d0, rtol=1e-4)


def test_logit_scores_and_their_direction():
    logits = np.array([[10.0, 0, 0, 0], [0.0, 0, 0, 0]])  # confident, then uniform: the second is less like training
    for name in ("energy", "max_logit", "max_probability"):
        s = score(name, logits=logits)
        assert s[1] > s[0], name
    np.testing.assert_allclose(score("energy", logits=logits), -np.log(np.exp(logits).sum(1)))


def test_threshold_flags_at_most_the_rate_and_auroc_bounds():
    s = np.random.default_rng(1).normal(size=1000)
    t = threshold_for(s, 0.05)
    assert 0.04 <= flagged(s, t).mean() <= 0.05
    assert flagged(np.array([np.nan]), t)[0]  # a broken score is flagged, never trusted
    assert auroc(np.zeros(5), np.ones(5)) == 1.0 and auroc(np.ones(5), np.ones(5)) == 0.5
    ev = evaluate(s, s + 100, t)
    assert ev["auroc"] == 1.0 and ev["ood_flag_rate"] == 1.0


def test_the_image_rule_flags_blank_and_coloured_pictures_never_a_grey_scan(real_images):
    from brisc.imageio import DEFAULT, load

    grey = np.stack([load(p) for p in real_images])
    assert not image_rule(grey, DEFAULT.mean, DEFAULT.std).any()  # BRISC's scans are grey
    tinted = grey.copy()
    tinted[:, 0] = np.clip(tinted[:, 0] + 0.3, -1, 1)  # red shifted by ~38 of 255 everywhere
    spot = grey.copy()
    spot[:, 1, :10, :10] = 1.0  # a coloured corner: 100 of 50,176 pixels, under the 1% share
    blank = np.full((1, 3, 224, 224), 0.2, np.float32)
    assert image_rule(tinted, DEFAULT.mean, DEFAULT.std).all() and image_rule(blank, DEFAULT.mean, DEFAULT.std).all()
    assert not image_rule(spot, DEFAULT.mean, DEFAULT.std).any()


def test_fit_needs_every_class():
    with pytest.raises(ValueError, match="class"):
        fit_gaussians(np.zeros((4, 2)), np.array([0, 0, 1, 1]), 4)


@pytest.mark.parametrize("name", SCORES)
def test_graph_head_equals_the_numpy_score(gaussians, name):
    from brisc.export.ood import OODHead

    f, _, stats = gaussians
    x = np.concatenate([f[:5], f[:5] * 40])  # near and far from the training features
    logits = np.random.default_rng(2).normal(0, 3, (10, 4))
    head = OODHead(name, stats, temperature=1.7)
    got = head(torch.from_numpy(logits).float(), torch.from_numpy(x).float()).numpy()
    ref = score(name, logits=logits.astype(np.float32), features=x.astype(np.float32), stats=stats, temperature=1.7)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_outliers_are_reproducible_in_range_and_of_every_kind():
    from brisc.train import outliers

    scans = torch.rand(4, 3, 224, 224) * 2 - 1
    torch.manual_seed(3)
    a = outliers.make_outliers(scans, 64)
    torch.manual_seed(3)
    b = outliers.make_outliers(scans, 64)
    assert torch.equal(a, b)  # drawn from the per-epoch seeded generator: resume stays exact
    assert a.shape == (64, 3, 224, 224) and a.min() >= -1 and a.max() <= 1
    spread = a.flatten(1).std(1)
    assert (spread < 0.11).any() and (spread > 0.3).any()  # blank frames and busy patterns both among them
    assert torch.all(outliers.deleted(scans, low=1.0) == -1.0)  # every patch deleted: the all-black frame
    sh = outliers.shuffled(scans)
    assert torch.allclose(sh.sum((1, 2, 3)), scans.sum((1, 2, 3)), rtol=1e-4)  # the same pixels, moved
    assert outliers.uniform_loss(torch.zeros(3, 4)).item() == pytest.approx(np.log(4))
    assert outliers.count(64, 0.25) == 16 and outliers.count(3, 0.25) == 1 and outliers.count(64, 0) == 0


def test_every_preset_trains_with_outlier_exposure_and_the_run_logs_it(tiny_run):
    from brisc.train.config import TRAIN_PRESETS

    for preset, kinds in TRAIN_PRESETS.items():
        for kind, cfg in kinds.items():
            assert cfg.outliers > 0 and cfg.outlier_weight > 0, (preset, kind)
    for kind in ("vit", "hf_vit", "sae"):
        history = json.loads((tiny_run / kind / "metrics.json").read_text())["history"]
        assert all(h["outlier_loss"] >= np.log(4) - 1e-4 for h in history), kind  # cross-entropy to uniform >= log C


def test_every_exported_graph_has_ood_score_its_check_and_a_threshold(tiny_export):
    for kind in ("vit", "hf_vit", "sae"):
        for name in (f"{kind}.onnx", f"{kind}.int8.onnx"):
            card = read_sidecar(tiny_export / name)
            assert card.outputs[-1] == "ood_score", name
            o = card.ood
            assert o["score"] == "mahalanobis" and o["threshold"] is not None, name
            assert o["validation"]["flag_rate"] <= 0.05 and o["validation"]["n"] > 0
            assert 0 <= o["evaluation_set"]["auroc"] <= 1 and o["evaluation_set"]["n"] >= 20
            assert {"photo", "drawn"} <= set(o["evaluation_set"]["per_kind"])
            if not name.endswith(".int8.onnx"):
                assert card.self_check["max_abs_diff"]["ood_score"] <= 1e-4  # ORT vs PyTorch, relative


def test_graph_ood_score_equals_numpy_on_the_runs_own_statistics(tiny_run, tmp_path):
    """The exported ood_score is brisc.ood.score of the PyTorch features under Gaussians fitted on the train split."""
    import onnxruntime as ort

    from brisc.export.loading import load_trained
    from brisc.export.ood import fit_run, run_features
    from brisc.ood_eval import drawn, _array
    from brisc.imageio import DEFAULT

    run_cli("brisc.export.cli", "--run", tiny_run, "--models", "vit", "--out", tmp_path, "--ood-score",
            "relative_mahalanobis")
    tm = load_trained(tiny_run, "vit")
    stats = fit_run(tm.model, tiny_run)
    x = np.stack([_array(drawn("shapes", i), DEFAULT) for i in range(3)] + [np.full((3, 224, 224), -1.0, np.float32)])
    f, lg = run_features(tm.model, x)
    ref = score("relative_mahalanobis", logits=lg, features=f, stats=stats)
    sess = ort.InferenceSession(str(tmp_path / "vit.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(["ood_score"], {"pixel_values": x})[0]
    # A difference of two distances: its rounding scales with the distances, not with the difference (float32
    # features differ between onnxruntime and PyTorch, and between CPUs, by ~1e-6 relative).
    scale = background_distance(f, stats)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4 * float(scale.max()) + 1e-3)


def test_infer_writes_the_flag_counts_override_and_gallery_badge(tiny_export, synth_root, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for p in sorted((synth_root / "classification_task" / "test").rglob("*.jpg"))[:6]:
        (scans / p.name).write_bytes(p.read_bytes())
    Image.new("L", (200, 200), 0).save(scans / "black.png")  # blank: classified and always flagged
    grey = Image.open(sorted(scans.glob("*.jpg"))[0]).convert("RGB")
    Image.merge("RGB", (grey.getchannel(0), grey.getchannel(1).point(lambda v: v // 2),
                        grey.getchannel(2).point(lambda v: v // 3))).save(scans / "tinted.png")  # coloured: flagged
    out = tmp_path / "o"
    r = run_cli(INFER, scans, "--model", tiny_export / "vit.onnx", "--out", out, "--heatmaps", "--panels")
    rows = {row["path"]: row for row in prediction_rows(out)}
    card = read_sidecar(tiny_export / "vit.onnx")
    assert rows["black.png"]["in_distribution"] is False and rows["tinted.png"]["in_distribution"] is False
    for row in rows.values():
        assert isinstance(row["ood_score"], float)
        if row["path"] not in ("black.png", "tinted.png"):
            assert row["in_distribution"] == (row["ood_score"] <= card.ood["threshold"])
    with open(out / "predictions.csv", newline="", encoding="utf-8") as f:
        table = {row["path"]: row for row in csv.DictReader(f)}
    assert table["black.png"]["in_distribution"] == "false" and "ood_score" in table["black.png"]
    s = json.loads((out / "summary.json").read_text())
    flagged_n = sum(row["in_distribution"] is False for row in rows.values())
    assert s["out_of_distribution"] == s["ood"]["out_of_distribution"] == flagged_n >= 1
    assert s["ood"]["threshold"] == card.ood["threshold"] and s["ood"]["threshold_from"] == "model card"
    assert "flagged as not like the training scans" in r.stderr
    data = gallery_data(out / "index.html")
    col = data["columns"].index("ood")
    assert sorted(row[col] for row in data["rows"]).count(False) == flagged_n
    page = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="ood"' in page and "the class is not reliable" in page

    out2 = tmp_path / "o2"  # --ood-threshold overrides the card: below every score flags all
    run_cli(INFER, scans, "--model", tiny_export / "vit.onnx", "--out", out2, "--ood-threshold", "-1e30")
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["out_of_distribution"] == len(rows) and s2["ood"]["threshold_from"] == "--ood-threshold"
    assert "ground_truth_in_distribution" not in s2  # nothing in distribution: no figure over nothing


def test_faithfulness_takes_the_classes_in_turn_with_a_random_reference(tiny_export, synth_root, tmp_path):
    test = synth_root / "classification_task" / "test"
    masks = synth_root / "segmentation_task" / "test" / "masks"
    out = tmp_path / "o"
    run_cli(INFER, test, "--model", tiny_export / "vit.onnx", "--out", out, "--masks", masks, "--faithfulness", "3")
    rows = [r for r in prediction_rows(out) if r["deletion_auc"] is not None]
    assert len(rows) == 3 and len({r["true_label"] for r in rows}) == 3  # one of each tumour class, not 3 gliomas
    for r in rows:
        assert 0 <= r["deletion_auc_random"] <= 1 and 0 <= r["insertion_auc_random"] <= 1
    m = json.loads((out / "summary.json").read_text())["masks"]
    assert set(m["faithfulness_per_class"]) == {r["true_label"] for r in rows}
    assert m["deletion_auc_random"] is not None and m["faithfulness_n"] == 3


@pytest.fixture(scope="module")
def shipped():
    from brisc.inference.session import open_session

    return open_session(None)  # the default graph brisc-infer ships


def _probs_and_flags(sess, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    out = [sess.run(x[i:i + 32], ["probabilities", "ood_score"]) for i in range(0, len(x), 32)]
    probs = np.concatenate([o["probabilities"] for o in out])
    by_score = flagged(np.concatenate([o["ood_score"] for o in out]), sess.card.ood["threshold"])
    return probs, by_score | image_rule(x, sess.prep.mean, sess.prep.std)  # as brisc-infer flags them


def test_shipped_model_flags_the_ood_evaluation_set_and_not_its_validation(shipped, brisc_root):
    from brisc.data import discover, make_splits
    from brisc.export.ood import load_images
    from brisc.ood_eval import evaluation_set

    assert "ood_score" in shipped.output_names and shipped.card.ood["validation"]["flag_rate"] <= 0.05
    outliers, _ = evaluation_set()
    _, out_flags = _probs_and_flags(shipped, np.stack([o.image for o in outliers]))
    assert out_flags.mean() >= 0.95
    td = shipped.card.training_data
    val = make_splits(discover(brisc_root), val_fraction=td["val_fraction"], seed=td["split_seed"],
                      method=td["split_method"]).val
    images, _ = load_images([s.path for s in val])
    _, val_flags = _probs_and_flags(shipped, images)
    # Set on these scans at 5%; INT8's per-batch activation scales and the CPU can move a scan on the threshold.
    assert val_flags.mean() <= 0.07


def test_shipped_model_gives_no_class_to_nothing_and_flags_what_training_never_drew(shipped, real_images):
    from brisc.imageio import DEFAULT, load
    from brisc.ood_eval import DRAWN_KINDS, _array, drawn
    from brisc.train.outliers import deleted

    black = np.full((1, 3, 224, 224), -1.0, np.float32)
    scans = torch.from_numpy(np.stack([load(p) for p in real_images[:4]]))
    nothing = deleted(scans, low=1.0).numpy()  # every patch of a real scan deleted
    probs, flags = _probs_and_flags(shipped, np.concatenate([black, nothing]))
    assert probs.max() < 0.5 and flags.all()
    never = np.stack([_array(drawn(kind, seed), DEFAULT) for kind in DRAWN_KINDS for seed in (100, 101)])
    _, flags = _probs_and_flags(shipped, never)  # seeds the evaluation set does not use either
    assert flags.mean() >= 0.9
