"""`brisc-export`: trained run -> self-checking ONNX (+ INT8), TorchScript or torch.export files with sidecars."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import click

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    run: Path
    out: Path
    models: tuple[str, ...] | None = None  # None: every model in the run
    format: str = "onnx"
    quantize: str | None = None
    opset: int = 18
    full_attention: bool = False
    heatmap: str = "rollout"  # the ViTs' recommended map, see HeatmapSpec


def _validate(opts: ExportOptions) -> list[str]:
    from brisc.export.loading import ExportInputError
    from brisc.runfolder import RunFolder
    from brisc.export.onnx import MAX_OPSET, MIN_OPSET

    if not opts.run.is_dir():
        raise ExportInputError(f"{opts.run}: run folder not found (train one with brisc-train --out)")
    have = RunFolder(opts.run).trained_kinds()
    kinds = list(opts.models) if opts.models else have
    missing = [k for k in kinds if k not in have]
    if missing or not kinds:
        raise ExportInputError(f"{opts.run}: no trained '{','.join(missing) or 'model'}' in this run "
                               f"(it has: {', '.join(have) or 'none'})")
    if opts.format != "onnx" and (opts.quantize or opts.full_attention):
        raise ExportInputError("--quantize and --full-attention apply to --format onnx only")
    from brisc.export.wrapper import HeatmapSpec

    try:
        HeatmapSpec.parse(opts.heatmap)
    except ValueError as e:
        raise ExportInputError(f"--heatmap: {e}") from None
    if opts.format == "onnx" and not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise ExportInputError(f"opset {opts.opset} is not supported (use {MIN_OPSET} to {MAX_OPSET})")
    try:
        opts.out.mkdir(parents=True, exist_ok=True)
        probe = opts.out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportInputError(f"{opts.out}: cannot write here ({e.strerror or e})") from None
    return kinds


def model_card(tm, wrapper, spec, opts: ExportOptions, temperature: float):
    """The card of one exported model: what it is, how it was trained and checked, how to drive it."""
    import torch

    import brisc
    from brisc import CLASSES
    from brisc.export.wrapper import heatmap_method
    from brisc.imageio import DEFAULT as PREP
    from brisc.kinds import KINDS, display_name
    from brisc.sidecar import ModelCard

    val = tm.metrics.get("val", {})
    training = {k: tm.config.get(k) for k in ("layout", "split_seed", "val_fraction", "split_method", "train_images",
                                               "val_images", "test_images", "preset", "hf_model")}
    return ModelCard(
        model_kind=tm.kind, model_name=display_name(tm.kind), classes=tuple(CLASSES), preprocessing=PREP,
        outputs=tuple(wrapper.names), format=opts.format, temperature=temperature,
        heatmap=opts.heatmap if tm.model.has_attention else "saliency", heatmap_method=heatmap_method(tm.model, spec),
        explain_methods=KINDS[tm.kind].explain_methods,
        validation_metrics={k: val.get(k) for k in ("n", "accuracy", "macro_f1", "macro_auc", "ece", "ece_uncalibrated")},
        training_data=training | {"data": Path(str(tm.config.get("data", ""))).name},  # the folder's name only
        checkpoint_sha256=tm.checkpoint_sha256, brisc_version=brisc.__version__, torch=torch.__version__,
        opset=opts.opset if opts.format == "onnx" else None)


def export_run(opts: ExportOptions, log=print) -> list[Path]:
    """Export the run's models; every file is checked before it appears. Returns the files written."""
    import numpy as np

    from brisc.export.loading import ExportInputError, check_images, load_trained
    from brisc.export.onnx import export_onnx, metadata_props
    from brisc.export.quantize import QUANTIZATION, agreement, quantize_int8
    from brisc.export.torchscript import export_pt2, export_torchscript
    from brisc.export.wrapper import ExportWrapper, HeatmapSpec
    from brisc.imageio import load
    from brisc.sidecar import write_sidecar

    kinds = _validate(opts)
    paths = check_images(opts.run)
    if paths:
        images = np.stack([load(p) for p in paths])
    else:
        log("warning: the run's validation images are not reachable; checking on random inputs instead")
        images = np.random.default_rng(0).uniform(-1, 1, (4, 3, 224, 224)).astype(np.float32)
    written: list[Path] = []
    for kind in kinds:
        tm = load_trained(opts.run, kind)
        temperature = float(tm.config.get("temperature", tm.metrics.get("temperature", 1.0)))
        spec = HeatmapSpec.parse(opts.heatmap)
        try:
            wrapper = ExportWrapper(tm.model, temperature=temperature, full_attention=opts.full_attention, heatmap=spec)
        except ValueError as e:
            raise ExportInputError(f"{kind}: {e}") from None
        card = model_card(tm, wrapper, spec, opts, temperature)
        path = opts.out / f"{kind}{SUFFIX[opts.format]}"
        if opts.format == "onnx":
            check = export_onnx(wrapper, path, images=images, opset=opts.opset, metadata=metadata_props(card))
        elif opts.format == "torchscript":
            check = export_torchscript(wrapper, path, images=images, metadata=card.to_json())
        else:
            check = export_pt2(wrapper, path, images=images, metadata=card.to_json())
        write_sidecar(path, replace(card, self_check=check))
        written.append(path)
        worst = max(check["max_abs_diff"].values())
        log(f"[{kind}] {path} ({path.stat().st_size / 1e6:.1f} MB): checked on {check['images']} images, "
            f"max abs diff {worst:.1e}")
        if opts.quantize == "int8":
            qpath = opts.out / f"{kind}.int8.onnx"
            quantize_int8(path, qpath)
            q = agreement(path, qpath, images)
            write_sidecar(qpath, replace(card, quantization={"type": QUANTIZATION, **q}))
            written.append(qpath)
            log(f"[{kind}] {qpath} ({qpath.stat().st_size / 1e6:.1f} MB): top-1 agreement with fp32 "
                f"{q['top1_agreement']:.3f}, heatmap correlation {q['heatmap_correlation']:.3f}"
                + (f", rollout correlation {q['rollout_correlation']:.3f}" if "rollout_correlation" in q else "")
                + f" on {q['images']} images")
    return written


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run", type=click.Path(path_type=Path), required=True, help="A brisc-train run folder.")
@click.option("--models", default=None, help="Comma-separated subset of vit, hf_vit, sae [default: all in the run].")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "pt2"]), default="onnx", show_default=True,
              help="onnx; torchscript (torch.jit.trace, which PyTorch deprecates); pt2 (torch.export).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write a dynamic-INT8 graph (weight MatMul/Gemm only; attention stays fp32).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (18 to 23).")
@click.option("--full-attention", is_flag=True, help="Also output the full [B, L, H, 197, 197] attention stack.")
@click.option("--heatmap", default="rollout", show_default=True,
              help="The ViTs' recommended `heatmap` output: rollout, rollout:start=K, rollout:max, cls, cls:layer=K, "
                   "cls:layer=K:max (layers from 1). The `rollout` output stays plain rollout.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder, e.g. artifacts/export/NAME.")
def main(run, models, fmt, quantize, opset, full_attention, heatmap, out) -> None:
    """Export a brisc-train run's models with attention and heatmaps as named outputs, checked against PyTorch.

    Each file gets a JSON sidecar (<file>.json) that brisc-infer verifies. Research use only."""
    from brisc.export.loading import ExportInputError
    from brisc.export.onnx import ExportCheckError

    opts = ExportOptions(run=run, out=out, models=tuple(m.strip() for m in models.split(",")) if models else None,
                         format=fmt, quantize=quantize, opset=opset, full_attention=full_attention, heatmap=heatmap)
    try:
        export_run(opts)
    except ExportInputError as e:
        click.echo(f"brisc-export: error: {e}", err=True)
        sys.exit(2)
    except ExportCheckError as e:
        click.echo(f"brisc-export: self-check failed, nothing written: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
