"""Ship an exported model as brisc-infer's default (package data, at most 25 MB).

    python -m brisc.export.ship artifacts/export/brisc-cpu/vit.int8.onnx --run artifacts/runs/brisc-cpu

Before it is copied, an INT8 graph is checked on the run's whole validation split against its fp32
graph (top-1 agreement, heatmap correlation) and timed against PyTorch (fp32 and bf16) and the fp32 graph at
batch 1, 8 and 32;
those numbers go into the shipped sidecar beside the validation metrics. An INT8 graph that disagrees with
fp32 on more than 0.5% of the images is not shipped: its fp32 graph is, with the INT8 numbers and the reason.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from brisc.fsio import atomic_path
from brisc.runfolder import RunFolder
from brisc.sidecar import read_sidecar, write_sidecar
from brisc.timing import median_seconds, onnx_median_seconds

MAX_BYTES = 25 * 1024 * 1024
MIN_AGREEMENT = 0.995  # INT8 top-1 agreement with fp32 on the validation split, below which fp32 is shipped


BATCHES = (1, 8, 32)


def speeds(wrapper, graphs: dict[str, Path], images: np.ndarray, *, batches=BATCHES, rounds: int = 3) -> dict:
    """-> {batch: {engine: img/s}}: the model's own PyTorch path in fp32 and under bf16 autocast (the fastest
    PyTorch path on a CPU with AVX-512 BF16 or AMX; emulated and slow elsewhere, measured all the same, so the
    faster of the two is the bar), and each ONNX graph. Rounds interleave the engines so that a slow spell of a
    shared machine hits them all alike; each figure is the median over rounds of medians of 9 runs."""
    import torch

    def pytorch(x: np.ndarray, bf16: bool) -> float:
        xt = torch.from_numpy(x)

        def step():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                wrapper(xt)

        return median_seconds(step, repeats=9, warmup=2)

    out = {}
    for b in batches:
        x = images[:b]
        engines = {"pytorch_fp32": lambda: pytorch(x, False), "pytorch_bf16": lambda: pytorch(x, True),
                   **{name: (lambda g=g: onnx_median_seconds(g, x, repeats=9)) for name, g in graphs.items()}}
        times = {name: [] for name in engines}
        for _ in range(rounds):
            for name, timed in engines.items():
                times[name].append(timed())
        out[str(b)] = {name: b / float(np.median(t)) for name, t in times.items()}
    return out


def fastest_pytorch(row: dict) -> float:
    return max(row["pytorch_fp32"], row["pytorch_bf16"])


def int8_report(int8: Path, fp32: Path, run: Path) -> dict:
    """Agreement with fp32 on every validation image, and ``speeds`` at batch 1, 8 and 32 of PyTorch, ORT fp32 and
    ORT INT8; ``int8_speedup_vs_pytorch`` is the smallest ratio of INT8 to the faster PyTorch path."""
    from brisc.export.loading import load_trained
    from brisc.export.quantize import agreement
    from brisc.export.wrapper import ExportWrapper
    from brisc.hardware import describe
    from brisc.imageio import load

    val = RunFolder(run).val_paths()
    images = np.stack([load(p) for p in val])
    card = read_sidecar(fp32)
    tm = load_trained(run, card.model_kind, card.training_data.get("checkpoint", "best").split()[0])
    wrapper = ExportWrapper(tm.model, temperature=tm.config["temperature"], lean=False)  # the model's own path
    speed = speeds(wrapper, {"ort_fp32": fp32, "ort_int8": int8}, images)
    parts = [agreement(fp32, int8, images[i:i + 64]) for i in range(0, len(images), 64)]
    n = len(images)
    agree = {k: sum(p[k] * p["images"] for p in parts) / n for k in ("top1_agreement", "heatmap_correlation")}
    speedup = min(v["ort_int8"] / fastest_pytorch(v) for v in speed.values())
    return {"images": n, **agree, "img_s": speed, "int8_speedup_vs_pytorch": speedup, "timed_on": describe()}


def ship_default(model: Path, *, report: dict | None = None, dest_dir: Path | None = None) -> Path:
    from brisc.inference.session import DEFAULT_MODEL

    card = read_sidecar(model)  # only a verified model is shipped
    if model.stat().st_size > MAX_BYTES:
        raise ValueError(f"{model}: {model.stat().st_size / 1e6:.1f} MB is over the 25 MB limit for package data")
    dest = (dest_dir / DEFAULT_MODEL.name) if dest_dir else DEFAULT_MODEL
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(model, tmp)
    if report:
        card = replace(card, quantization={**(card.quantization or {}), **report})
    write_sidecar(dest, replace(card, shipped_from=model.name))
    return dest


def ship(model: Path, *, run: Path | None = None, dest_dir: Path | None = None, log=print) -> Path:
    """Ship ``model`` (an INT8 graph is checked on ``run``'s validation split first, and replaced by its fp32
    graph when it disagrees on more than 0.5% of the images). Returns the shipped file."""
    chosen, report = model, None
    if run is not None and model.name.endswith(".int8.onnx"):
        fp32 = model.with_name(model.name.replace(".int8.onnx", ".onnx"))
        report = int8_report(model, fp32, run)
        log(json.dumps(report, indent=2))
        if report["top1_agreement"] < MIN_AGREEMENT:  # the INT8 numbers stay in the sidecar, beside the reason
            log(f"{model}: top-1 agreement with fp32 {report['top1_agreement']:.4f} < {MIN_AGREEMENT}: "
                f"shipping the fp32 graph {fp32.name} instead")
            chosen = fp32
        report["shipped"] = "int8" if chosen is model else "fp32"
    dest = ship_default(chosen, report=report, dest_dir=dest_dir)
    log(f"shipped {chosen} as {dest}")
    return dest


@click.command(help=__doc__.splitlines()[0])
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--run", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The brisc-train run it came from (checks an INT8 graph on its validation split).")
def main(model: Path, run: Path | None) -> None:
    ship(model, run=run, log=click.echo)


if __name__ == "__main__":
    main()
