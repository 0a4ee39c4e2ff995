"""Ship an exported model as brisc-infer's default (package data, at most 25 MB).

    python -m brisc.export.ship artifacts/export/brisc-cpu/vit.int8.onnx --run artifacts/runs/brisc-cpu

Before it is copied, an INT8 graph is checked on the run's whole validation split against its fp32
graph (top-1 agreement, heatmap correlation) and timed against PyTorch and the fp32 graph at batch 32;
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


def int8_report(int8: Path, fp32: Path, run: Path, batch: int = 32) -> dict:
    """Agreement with fp32 on every validation image, and img/s of PyTorch eager, ORT fp32 and ORT INT8."""
    import torch

    from brisc.export.loading import load_trained
    from brisc.export.quantize import agreement
    from brisc.export.wrapper import ExportWrapper
    from brisc.imageio import load

    val = RunFolder(run).val_paths()
    images = np.stack([load(p) for p in val])
    kind = read_sidecar(fp32).model_kind
    tm = load_trained(run, kind)
    wrapper = ExportWrapper(tm.model, temperature=tm.config["temperature"], lean=False)  # the model's own path
    x = images[:batch]

    def eager():
        with torch.no_grad():
            wrapper(torch.from_numpy(x))

    t_pt = median_seconds(eager)
    t32, t8 = onnx_median_seconds(fp32, x), onnx_median_seconds(int8, x)
    parts = [agreement(fp32, int8, images[i:i + 64]) for i in range(0, len(images), 64)]
    n = len(images)
    agree = {k: sum(p[k] * p["images"] for p in parts) / n for k in ("top1_agreement", "heatmap_correlation")}
    return {"images": n, **agree, "batch": batch, "pytorch_fp32_img_s": batch / t_pt, "ort_fp32_img_s": batch / t32,
            "ort_int8_img_s": batch / t8, "int8_speedup_vs_pytorch": t_pt / t8, "int8_speedup_vs_ort_fp32": t32 / t8}


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
