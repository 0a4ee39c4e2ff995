"""The studies of one exported graph behind docs/results.md run on any graph and data, here the tiny ones."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brisc.data import discover, make_splits
from brisc.sidecar import read_sidecar

ROOT = Path(__file__).resolve().parents[1]


def _study(script, *args) -> str:
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *map(str, args)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture(scope="module")
def val(synth_root):
    return make_splits(discover(synth_root)).val


def test_flip_average_reports_the_scan_its_mirror_and_their_mean(tiny_export, synth_root, val):
    out = json.loads(_study("flip_average.py", "--model", tiny_export / "vit.onnx", "--data", synth_root)
                     .splitlines()[-1])
    assert set(out) == {"scan", "mirror", "mean"}
    for view in out.values():
        assert view["errors"] == round((1 - view["accuracy"]) * len(val)) and 0 <= view["energy"] <= 1


def test_flip_average_scores_a_graph_that_averages_the_mirror_itself_on_the_scan(tiny_export, synth_root, val,
                                                                                 tmp_path):
    from brisc.export.ensemble import build

    graph = build([tiny_export / "vit.onnx"], tmp_path / "mirror.onnx", data=synth_root, mirror=True, log=lambda *a: 0)
    text = _study("flip_average.py", "--model", graph, "--data", synth_root)
    out = json.loads(text.splitlines()[-1])
    assert set(out) == {"scan"} and "| mirror |" not in text
    assert out["scan"]["accuracy"] == pytest.approx(read_sidecar(graph).validation_metrics["accuracy"])


def test_map_heads_chooses_only_a_faithful_map_and_reports_it_on_validation(tiny_export, synth_root, val):
    text = _study("map_heads.py", "--model", tiny_export / "vit.onnx", "--data", synth_root, "--train", 20,
                  "--faithful", 2, "--faithful-val", 6)
    out = json.loads(text.splitlines()[-1])
    rows = [line for line in text.splitlines() if line.startswith("| cls:")]
    faithful = {r.split(" | ")[0][2:]: r.rstrip(" |").endswith("yes") for r in rows[:4]}  # mean, max, head 1, head 2
    assert len(faithful) == 4 and (out["chosen"] is None or faithful[out["chosen"]])
    assert out["validation"]["all"]["n"] == sum(1 for s in val if s.mask)
    assert all(len(r["pointing"]) == len(out["maps"]) for r in out["validation"].values())
    assert set(out["validation_faithfulness"]) == {*out["maps"], "random"}


def test_pointing_misses_counts_every_validation_mask(tiny_export, synth_root, val):
    text = _study("pointing_misses.py", "--model", tiny_export / "vit.onnx", "--data", synth_root)
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| ") and line[2:3].isalpha()
            and not line.startswith("| class")]
    by_class = {r[0][2:]: int(r[1]) for r in rows}
    assert by_class == {c: sum(1 for s in val if s.mask and s.class_name == c) for c in by_class}
    assert sum(by_class.values()) == sum(1 for s in val if s.mask) > 0
    for r in rows:
        hits = float(r[2])
        assert np.isclose(int(r[6]), round((1 - hits) * int(r[1])))  # the misses are the pointing game's
        # the class's energy is the mean over its masks: the hits' and the misses' energies weighted by their counts
        hit_e, miss_e = r[11].rstrip(" |").split(" / ")
        parts = [(hits, float(hit_e))] if hit_e != "nan" else []
        parts += [(1 - hits, float(miss_e))] if miss_e != "-" else []
        assert 0 <= float(r[10]) <= 1 and np.isclose(float(r[10]), sum(w * e for w, e in parts), atol=2e-3)


@pytest.mark.parametrize("graphs", [("vit.onnx",), ("vit.onnx", "vit.int8.onnx")])
def test_ensemble_epochs_scores_every_epoch_and_the_held_apart_choice(tiny_run, tiny_export, val, graphs):
    from brisc.selection import validation_halves

    halved = validation_halves([s.path for s in val], [s.label for s in val]) is not None
    epochs = np.load(tiny_run / "vit" / "val_logits.npy").shape[0]
    text = _study("ensemble_epochs.py", "--run", tiny_run, *[a for g in graphs for a in ("--model", tiny_export / g)])
    out = json.loads(text.splitlines()[-1])
    assert f"{len(graphs)} graph(s) + {tiny_run.name}" in text
    by_epoch = [line for line in text.splitlines() if line.startswith("ensemble accuracy by epoch")][0].split(": ")[1]
    assert len(by_epoch.split()) == epochs
    for r in (out["second"], out["ensemble"]):
        assert r["n"] == len(val) and sum(r["halves"]) == len(val)
        assert all(1 <= e <= epochs for e in r["epochs_chosen"].values())
        assert float(by_epoch.split()[r["best_epoch"] - 1]) == pytest.approx(r["best_accuracy"], abs=5e-4)
        assert (r["accuracy"] is not None) == halved == (len(r["epochs_chosen"]) == 2)
    assert out["ensemble"]["last_accuracy"] == pytest.approx(float(by_epoch.split()[-1]), abs=5e-4)


def test_ensemble_epochs_with_the_mirror_averages_every_member_over_the_scan_and_its_mirror(tiny_run, tiny_export,
                                                                                            synth_root, tmp_path):
    from brisc.data import label_from_path
    from brisc.export.ensemble import build
    from brisc.runfolder import RunFolder
    from brisc import CLASSES

    mirrored = build([tiny_export / "vit.onnx"], tmp_path / "mirror.onnx", data=synth_root, mirror=True, log=print)
    plain, inside = (json.loads(_study("ensemble_epochs.py", "--run", tiny_run, "--model", g, "--mirror").splitlines()[-1])
                     for g in (tiny_export / "vit.onnx", mirrored))
    assert plain["first"] == inside["first"]  # the graph's views averaged here, or inside the graph: one answer
    # A run whose scans are always wrong and whose mirrors are right by a wider margin: only their mean is right.
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    rf = RunFolder(run)
    y = np.array([CLASSES.index(label_from_path(p)) for p in rf.val_paths()])
    right = np.eye(len(CLASSES), dtype=np.float32)[y]
    np.save(rf.val_logits("vit"), np.stack([np.roll(right, 1, axis=1)] * 2))
    np.save(rf.val_logits("vit", mirror=True), np.stack([3 * right] * 2))
    for flag, accuracy in (([], 0.0), (["--mirror"], 1.0)):
        out = json.loads(_study("ensemble_epochs.py", "--run", run, "--model", tiny_export / "vit.onnx",
                                *flag).splitlines()[-1])
        assert out["second"]["last_accuracy"] == accuracy


def test_a_gpu_run_comes_back_as_a_local_run_of_the_same_split(tiny_run, tmp_path):
    """scripts/gpu_weights.py: the weights in fp16 pieces and back; the validation rows of a run trained on a copy
    whose scans lie elsewhere and in another order, put in the local run's order; the result exports."""
    import importlib.util

    from safetensors.torch import load_file

    from conftest import run_cli

    spec = importlib.util.spec_from_file_location("gpu_weights", ROOT / "scripts" / "gpu_weights.py")
    gw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gw)
    there = tmp_path / "there" / "vits-s0"  # the run as the GPU machine trained it: another root, reversed order
    shutil.copytree(tiny_run, there)
    split = json.loads((tiny_run / "split.json").read_text())
    copy = "/gpu/.gpu/data/classification_task/val"
    split["val"] = [f"{copy}/{Path(p).parent.name}/{Path(p).name}" for p in split["val"]][::-1]
    (there / "split.json").write_text(json.dumps(split))
    for name in ("val_logits.npy", "val_logits_mirror.npy"):
        np.save(there / "vit" / name, np.load(tiny_run / "vit" / name)[:, ::-1])
    gw.PIECE = 4096  # several pieces
    pieces = gw.pack(there, tmp_path / "files")
    assert len(pieces) > 2 and all(p.stat().st_size <= 4096 for p in pieces)
    out = gw.unpack(there, str(tmp_path / "files" / "vits-s0.fp16"), tiny_run, tmp_path / "runs" / "vits-h200")
    assert (out / "split.json").read_text() == (tiny_run / "split.json").read_text()
    for name in ("val_logits.npy", "val_logits_mirror.npy"):
        np.testing.assert_array_equal(np.load(out / "vit" / name), np.load(tiny_run / "vit" / name))
    got, want = (load_file(str(r / "vit" / "model.safetensors")) for r in (out, tiny_run))
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-3, atol=1e-4, err_msg=k)  # fp16 on the way
    assert json.loads((out / "vit" / "config.json").read_text())["data"] == \
        json.loads((tiny_run / "vit" / "config.json").read_text())["data"]
    run_cli("brisc.export.cli", "--run", out, "--models", "vit", "--out", tmp_path / "export")
    assert read_sidecar(tmp_path / "export" / "vit.onnx").training_data["val_images"] == len(split["val"])
    split["val"] = split["val"][1:]  # a copy that lacks one of the scans
    (there / "split.json").write_text(json.dumps(split))
    with pytest.raises(SystemExit, match="validation scans are not"):
        gw.unpack(there, str(tmp_path / "files" / "vits-s0.fp16"), tiny_run, tmp_path / "runs" / "other")
    assert not (tmp_path / "runs" / "other").exists()


def test_stem_maps_chooses_on_training_masks_and_reports_every_class_on_validation(synth_root, tiny_run, val, tmp_path):
    from conftest import run_cli

    run = tmp_path / "conv"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit", "--preset", "tiny", "--set", "vit.stem=conv",
            "--out", run, "--wandb", "disabled")
    text = _study("stem_maps.py", "--run", run, "--train", "12", "--slack", "1")  # slack 1: a setting is chosen
    out = json.loads(text.splitlines()[-1])
    masked = [s for s in val if s.mask]
    assert tuple(out["chosen"]) in {(c, p) for c in (28, 56) for p in (1.0, 2.0, 4.0)}
    assert out["validation"]["all"]["n"] == len(masked) == sum(r["n"] for c, r in out["validation"].items() if c != "all")
    # bilinear is the trainer's own scoring of the map (other batches: a near-tied peak may land on another mask)
    trained = json.loads((run / "vit" / "metrics.json").read_text())["explanations"]["cls"]
    assert out["validation"]["all"]["pointing"][0] == pytest.approx(trained["pointing_game"], abs=1.5 / len(masked))
    assert out["validation"]["all"]["energy"][0] == pytest.approx(trained["energy_in_mask"], abs=1e-4)
    assert len(out["every_setting"]) == 7 and all(0 <= x <= 1 for r in out["every_setting"].values() for x in r)
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "stem_maps.py"), "--run", str(tiny_run)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "no conv stem" in r.stderr


def test_shift_maps_one_view_is_the_scan_as_flip_average_scores_it(tiny_export, synth_root, val):
    graph = tiny_export / "vit.onnx"
    out = json.loads(_study("shift_maps.py", "--model", graph, "--data", synth_root).splitlines()[-1])
    scan = json.loads(_study("flip_average.py", "--model", graph, "--data", synth_root).splitlines()[-1])["scan"]
    assert list(out) == ["one view", "4 views (8 px)", "16 views (4 px)"]
    for k in ("accuracy", "pointing", "energy"):
        assert out["one view"][k] == pytest.approx(scan[k], abs=1e-9), k
    for r in out.values():
        assert all(0 <= r[k] <= 1 for k in ("accuracy", "pointing", "energy"))


def test_shift_robustness_scores_the_unmoved_scan_as_flip_average_and_every_shift(tiny_export, synth_root):
    graph = tiny_export / "vit.onnx"
    out = json.loads(_study("shift_robustness.py", "--model", graph, "--data", synth_root).splitlines()[-1])
    scan = json.loads(_study("flip_average.py", "--model", graph, "--data", synth_root).splitlines()[-1])["scan"]
    assert out["0,0"]["accuracy"] == pytest.approx(scan["accuracy"]) and out["0,0"]["errors"] == scan["errors"]
    assert len(out) == 15 and {"16,16", "-16,0", "0,-4"} <= set(out)
    assert all(0 <= r["flagged"] <= 1 and 0 <= r["accuracy"] <= 1 for r in out.values())


def test_map_upsampling_chooses_on_training_masks_and_reports_every_class(tiny_run, tiny_export, synth_root, val):
    graph = tiny_export / "vit.onnx"
    out = json.loads(_study("map_upsampling.py", "--run", tiny_run, "--model", graph, "--train", "12", "--slack", "1")
                     .splitlines()[-1])
    assert tuple(out["chosen"]) in {(r, k) for r in (8, 16, 32) for k in (1.0, 2.0, 4.0)}
    assert out["validation"]["all"]["n"] == len([s for s in val if s.mask])
    assert all(0 <= x <= 1 for r in out["validation"].values() for x in r["pointing"] + r["energy"])
    scan = json.loads(_study("flip_average.py", "--model", graph, "--data", synth_root).splitlines()[-1])["scan"]
    assert out["validation"]["all"]["pointing"][0] == pytest.approx(scan["pointing"])  # bilinear: brisc-infer's map
    assert out["validation"]["all"]["energy"][0] == pytest.approx(scan["energy"])
