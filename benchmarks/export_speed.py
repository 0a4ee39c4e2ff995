"""PyTorch eager (fp32 and bf16 autocast) vs onnxruntime fp32 and static INT8 (all outputs), one trained ViT.

Batches 1, 8 and 32, interleaved rounds in one process (``brisc.export.ship.speeds``), with the CPU's flags. Also
INT8 top-1 agreement with fp32 and map correlations on real BRISC validation images. Goals: INT8 (the shipped
default) >= 1.2x the faster PyTorch path at every batch, top-1 agreement >= 99.5%, rollout correlation >= 0.95.
``--dynamic PATH`` adds a dynamic-INT8 graph of the same model as a column (the quantization shipped before).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from common import machine, table


def run(run_dir: str | None = None, export_dir: str | None = None, n_agree: int = 500, rounds: int = 3,
        dynamic: str | None = None) -> str:
    from brisc.export.run import ExportOptions, export_run
    from brisc.export.loading import load_trained
    from brisc.export.quantize import agreement
    from brisc.export.ship import fastest_pytorch, speeds
    from brisc.export.wrapper import ExportWrapper
    from brisc.imageio import load
    from brisc.runfolder import RunFolder

    run_path = Path(run_dir)
    tmp = None
    if export_dir is None or not (Path(export_dir) / "vit.int8.onnx").is_file():
        tmp = tempfile.TemporaryDirectory()
        export_dir = tmp.name
        export_run(ExportOptions(run=run_path, out=Path(export_dir), models=("vit",), quantize="int8"), log=lambda *a: None)
    exp = Path(export_dir)
    tm = load_trained(run_path, "vit")
    val = RunFolder(run_path).val_paths()
    images = np.stack([load(p) for p in val[:max(n_agree, 32)]])
    graphs = {"ort_fp32": exp / "vit.onnx", "ort_int8": exp / "vit.int8.onnx"}
    if dynamic:
        graphs["ort_dynamic_int8"] = Path(dynamic)
    wrapper = ExportWrapper(tm.model, temperature=tm.config["temperature"], lean=False)  # the model's own path
    table_speeds = speeds(wrapper, graphs, images[:32], rounds=rounds)
    rows = [[b, *(f"{v[k]:.1f}" for k in v), f"{v['ort_int8'] / fastest_pytorch(v):.2f}x"]
            for b, v in table_speeds.items()]
    images = images[:n_agree]
    agree = {"top1_agreement": [], "rollout_correlation": [], "heatmap_correlation": []}
    for i in range(0, len(images), 32):
        a = agreement(exp / "vit.onnx", exp / "vit.int8.onnx", images[i:i + 32])
        for k in agree:
            agree[k].append(a[k] * a["images"])
    n = len(images)
    top1, corr, heat = (sum(agree[k]) / n for k in ("top1_agreement", "rollout_correlation", "heatmap_correlation"))
    if tmp:
        tmp.cleanup()
    names = {"ort_fp32": "ORT fp32", "ort_int8": "ORT static INT8 (shipped)", "ort_dynamic_int8": "ORT dynamic INT8"}
    return ("### Home-made ViT: PyTorch vs onnxruntime fp32 vs INT8 (img/s)\n\n"
            + table(["batch", "PyTorch eager fp32", "PyTorch eager bf16 autocast", *(names[g] for g in graphs),
                     "static INT8 / faster PyTorch"], rows)
            + f"\n\n{machine()}. All return logits, probabilities, heatmap, attentions, rollout and ood_score; PyTorch "
              f"runs the model's own attention path. Medians over {rounds} interleaved rounds of the medians of 9 runs, "
              f"one process, one onnxruntime session alive at a time (`brisc.timing.onnx_median_seconds`). INT8 vs fp32 on "
              f"{n} real BRISC validation images: top-1 agreement {top1:.4f}, rollout correlation {corr:.4f}, "
              f"heatmap correlation {heat:.4f}. "
              f"Model: `{run_path}/vit`.\n")


SETTINGS = {  # onnxruntime session options that could matter on a small CPU (brisc.timing.onnx_median_seconds
    # keywords); brisc-infer runs the defaults
    "defaults (brisc-infer)": {},
    "no memory arena": {"options": {"enable_cpu_mem_arena": False}},
    "no memory pattern": {"options": {"enable_mem_pattern": False}},
    "1 intra-op thread": {"threads": 1},
    "no thread spinning": {"config": {"session.intra_op.allow_spinning": "0"}},
}


def session_settings(graph: Path, images: np.ndarray, rounds: int = 3) -> str:
    """img/s of one graph at batch 1, 8 and 32 under each of ``SETTINGS``, interleaved rounds, medians."""
    from brisc.timing import onnx_median_seconds

    rows = []
    for b in (1, 8, 32):
        t = {name: [] for name in SETTINGS}
        for _ in range(rounds):
            for name, setting in SETTINGS.items():
                t[name].append(onnx_median_seconds(graph, images[:b], repeats=9, **setting))
        rows.append([b, *(f"{b / float(np.median(v)):.1f}" for v in t.values())])
    return (f"### onnxruntime session settings, `{graph.name}` (img/s)\n\n" + table(["batch", *SETTINGS], rows)
            + f"\n\nMedians over {rounds} interleaved rounds of the medians of 9 runs.\n")


def run_settings(run_dir: str, export_dir: str, rounds: int = 3) -> str:
    from brisc.imageio import load
    from brisc.runfolder import RunFolder

    x = np.stack([load(p) for p in RunFolder(Path(run_dir)).val_paths()[:32]])
    return session_settings(Path(export_dir) / "vit.int8.onnx", x, rounds=rounds)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a brisc-train run folder with a vit")
    ap.add_argument("--export", default=None, help="its brisc-export folder (with vit.int8.onnx); else exported to a temp dir")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dynamic", default=None, help="a dynamic-INT8 graph of the same model, as another column")
    ap.add_argument("--settings", action="store_true", help="also the INT8 graph under other session settings")
    a = ap.parse_args()
    print(run(a.run, a.export, a.images, rounds=a.rounds, dynamic=a.dynamic))
    if a.settings:
        print(run_settings(a.run, a.export, rounds=a.rounds))
