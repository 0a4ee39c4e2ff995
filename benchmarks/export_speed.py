"""PyTorch eager fp32 vs onnxruntime fp32 (attentions exposed) vs onnxruntime dynamic INT8, one trained ViT.

Batches 1, 8 and 32, medians of several runs, all in one process. Also INT8 top-1 agreement with fp32
and rollout correlation on real BRISC validation images. Goals: the exported graph >= 1.2x PyTorch eager fp32
at every batch; INT8 (the shipped default) with top-1 agreement >= 99.5% and rollout correlation >= 0.95.
The graphs carry onnxruntime's output-preserving fusions (``brisc.export.onnx.fuse_for_onnxruntime``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from common import median_time, table


def run(run_dir: str | None = None, export_dir: str | None = None, n_agree: int = 500, threads: int | None = None,
        rounds: int = 3) -> str:
    from brisc.export.run import ExportOptions, export_run
    from brisc.export.loading import load_trained
    from brisc.export.quantize import agreement
    from brisc.export.wrapper import ExportWrapper
    from brisc.imageio import load
    from brisc.runfolder import RunFolder
    from brisc.timing import onnx_median_seconds

    run_path = Path(run_dir)
    tmp = None
    if export_dir is None or not (Path(export_dir) / "vit.int8.onnx").is_file():
        tmp = tempfile.TemporaryDirectory()
        export_dir = tmp.name
        export_run(ExportOptions(run=run_path, out=Path(export_dir), models=("vit",), quantize="int8"), log=lambda *a: None)
    exp = Path(export_dir)
    tm = load_trained(run_path, "vit")
    temperature = tm.config["temperature"]
    # PyTorch runs the model's own attention path (as trained, the baseline), and the graph's lean one.
    eager = {"pt": ExportWrapper(tm.model, temperature=temperature, lean=False),
             "pt_lean": ExportWrapper(tm.model, temperature=temperature)}
    if threads:
        torch.set_num_threads(threads)
    val = RunFolder(run_path).val_paths()
    rows = []
    for b in (1, 8, 32):
        x = np.stack([load(p) for p in val[:b]])
        xt = torch.from_numpy(x)
        reps = 20 if b < 32 else 9

        def pytorch(name: str) -> float:
            w = eager[name]
            with torch.no_grad():
                return median_time(lambda: w(xt), repeats=reps, warmup=2)
        # Rounds interleave the engines so that a slow spell of the (shared, virtual) machine hits them all alike;
        # the median over rounds is reported.
        t = {k: [] for k in ("pt", "pt_lean", "fp32", "int8")}
        for _ in range(rounds):
            t["pt"].append(pytorch("pt"))
            t["pt_lean"].append(pytorch("pt_lean"))
            t["fp32"].append(onnx_median_seconds(exp / "vit.onnx", x, repeats=reps, threads=threads))
            t["int8"].append(onnx_median_seconds(exp / "vit.int8.onnx", x, repeats=reps, threads=threads))
        m = {k: float(np.median(v)) for k, v in t.items()}
        rows.append([b, *(f"{b / m[k]:.1f}" for k in t), f"{m['pt'] / m['fp32']:.2f}x", f"{m['pt'] / m['int8']:.2f}x",
                     f"{m['pt_lean'] / m['fp32']:.2f}x"])
    images = np.stack([load(p) for p in val[:n_agree]])
    agree = {"top1_agreement": [], "rollout_correlation": [], "heatmap_correlation": []}
    for i in range(0, len(images), 32):
        a = agreement(exp / "vit.onnx", exp / "vit.int8.onnx", images[i:i + 32])
        for k in agree:
            agree[k].append(a[k] * a["images"])
    n = len(images)
    top1, corr, heat = (sum(agree[k]) / n for k in ("top1_agreement", "rollout_correlation", "heatmap_correlation"))
    if tmp:
        tmp.cleanup()
    return ("### Home-made ViT: PyTorch vs onnxruntime fp32 vs INT8 (img/s)\n\n"
            + table(["batch", "PyTorch eager fp32", "PyTorch, lean path", "ORT fp32 + attentions", "ORT INT8",
                     "ORT fp32 / PyTorch", "INT8 / PyTorch", "ORT fp32 / PyTorch lean"], rows)
            + "\n\nAll return logits, attentions and rollout. PyTorch runs the model's own attention path; the lean "
              "path is the exported graph's computation in PyTorch (q/k/v head-major, last block for the prefix tokens "
              f"only; `ExportWrapper(lean=True)`, same numbers). Medians over {rounds} interleaved rounds of the medians "
              f"of 9-20 runs, one process, one onnxruntime session alive at a time (`brisc.timing.onnx_median_seconds`). INT8 vs fp32 on "
              f"{n} real BRISC validation images: top-1 agreement {top1:.4f}, rollout correlation {corr:.4f}, "
              f"heatmap correlation {heat:.4f}. "
              f"Model: `{run_path}/vit`.\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a brisc-train run folder with a vit")
    ap.add_argument("--export", default=None, help="its brisc-export folder (with vit.int8.onnx); else exported to a temp dir")
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print(run(a.run, a.export, a.images, rounds=a.rounds))
