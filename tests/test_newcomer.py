"""The three promised commands as a new user types them, in a fresh folder: brisc-train, brisc-export --format onnx,
brisc-infer ./scans --heatmaps; and `brisc <command>` equal to its hyphenated twin."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import prediction_rows

BIN = os.path.dirname(sys.executable)


def typed(cmd: str, cwd, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """A command line exactly as typed, with the installed console scripts on PATH."""
    r = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "WANDB_SILENT": "true",
                            **(env or {})})
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, synth_root):
    d = tmp_path_factory.mktemp("fresh")
    scans = d / "scans"
    for p in sorted((synth_root / "classification_task" / "test").rglob("*.jpg"))[:5]:
        scans.mkdir(exist_ok=True)
        shutil.copy(p, scans / p.name)
    return d


def test_brisc_train_then_export_as_typed(fresh, synth_root):
    # --preset tiny only shrinks the work; the data comes from $BRISC_DATA, the documented default; no hub here.
    r = typed("brisc-train --preset tiny --wandb disabled", fresh,
              env={"BRISC_DATA": str(synth_root), "HF_HUB_OFFLINE": "1"})
    runs = sorted((fresh / "artifacts" / "runs").iterdir())
    assert len(runs) == 1 and f"run folder artifacts/runs/{runs[0].name}" in r.stderr
    run = runs[0]
    for kind in ("vit", "hf_vit", "sae"):  # all three models it exists to compare
        assert (run / kind / "model.safetensors").is_file(), kind
    assert (run / "mae-encoder" / "pretrain.json").is_file()  # no hub, no --hf-model: pretrained in-domain first
    assert "pretrained in-domain with MAE" in (run / "comparison.md").read_text()

    r = typed("brisc-export --format onnx", fresh)
    assert f"the newest run is artifacts/runs/{run.name}" in r.stderr
    out = fresh / "artifacts" / "export" / run.name
    card = json.loads((out / "vit.onnx.json").read_text())
    guided = json.loads((run / "vit" / "config.json").read_text())["train"]["guide_weight"] > 0
    assert card["heatmap"] == ("cls:layer=2" if guided else "rollout")  # the model's own best map
    assert card["ood"]["threshold"] is not None and (out / "hf_vit.onnx").is_file() and (out / "sae.onnx").is_file()


def test_brisc_infer_scans_heatmaps_as_typed_and_brisc_infer_is_the_same(fresh):
    r = typed("brisc-infer ./scans --heatmaps", fresh)
    out = fresh / "brisc-out"
    assert "results in brisc-out" in r.stderr
    rows = prediction_rows(out)
    assert len(rows) == 5
    for row in rows:
        assert row["heatmap"].endswith(".png") and not row["heatmap"].endswith(".jpg.png")
        assert (out / row["heatmap"]).is_file() and row["in_distribution"] is not None
    typed("brisc infer ./scans --heatmaps --out brisc-out-2", fresh)
    keep = ("path", "predicted", "probabilities", "ood_score", "in_distribution", "heatmap")
    again = prediction_rows(fresh / "brisc-out-2")
    assert [{k: r[k] for k in keep} for r in again] == [{k: r[k] for k in keep} for r in rows]


def test_brisc_group_names_every_command_and_helps_lightly(fresh):
    r = typed("brisc --help", fresh)
    for name in ("train", "pretrain", "export", "infer", "data", "synth"):
        assert f"  {name} " in r.stdout
    r = typed("brisc infer --help", fresh)
    assert "--ood-threshold" in r.stdout and "--heatmap-format" in r.stdout


def test_what_a_new_user_reads_on_the_console_and_in_the_table(fresh, tiny_export):
    one = fresh / "one-class"
    (one / "glioma").mkdir(parents=True)
    for p in sorted((fresh / "scans").glob("*_gl_*.jpg"))[:2] + sorted((fresh / "scans").glob("*.jpg"))[:3]:
        shutil.copy(p, one / "glioma" / p.name)
    sidecar = f"{tiny_export / 'vit.onnx'}.json"  # the card named instead of the model: taken as its model
    r = typed(f"brisc-infer {one} --model {sidecar} --out o1 --batch-size 4", fresh)
    n = len(list((one / "glioma").iterdir()))
    assert f"{n}/{n}" in r.stderr  # the bar ends at the total, not at the last full batch
    assert "over the one class present (glioma)" in r.stderr
    for row in prediction_rows(fresh / "o1"):
        assert all(len(repr(v).split(".")[-1]) <= 6 for v in row["probabilities"].values())  # 6 decimals, not 16


@pytest.mark.parametrize("cmd", ["brisc-train", "brisc-export", "brisc-infer", "brisc-data", "brisc-synth", "brisc-pretrain"])
def test_every_help_has_an_example(fresh, cmd):
    r = typed(f"{cmd} --help", fresh)
    assert "\n  brisc-" in r.stdout or "\n  brisc " in r.stdout, r.stdout[:400]
