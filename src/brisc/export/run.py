"""What `brisc-export` does, as functions a user can import: a trained run -> self-checking ONNX (+ INT8),
TorchScript or torch.export files, each with its model card (sidecar). ``export_run`` is the entry point; the CLI
(brisc.export.cli) only parses options into ``ExportOptions``."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from brisc.ood import DEFAULT_SCORE, SCORES

SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript.pt", "pt2": ".pt2"}


RUNS_ROOT = Path("artifacts/runs")  # where brisc-train puts runs by default; brisc-export takes the newest
EXPORT_ROOT = Path("artifacts/export")


def newest_run(root: Path = RUNS_ROOT) -> Path:
    """The run folder under ``root`` whose best checkpoint was written last."""
    from brisc.export.loading import ExportInputError
    from brisc.runfolder import RunFolder

    runs = [(max(RunFolder(d).weights(k).stat().st_mtime for k in RunFolder(d).trained_kinds()), d)
            for d in (sorted(root.iterdir()) if root.is_dir() else []) if d.is_dir() and RunFolder(d).trained_kinds()]
    if not runs:
        raise ExportInputError(f"no trained run under {root}: train one with brisc-train, or pass --run RUN")
    return max(runs)[1]


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    run: Path
    out: Path
    models: tuple[str, ...] | None = None  # None: every model in the run
    format: str = "onnx"
    quantize: str | None = None
    opset: int = 18
    full_attention: bool = False
    heatmap: str | None = None  # the ViTs' recommended map (HeatmapSpec); None: the model's own best (default_heatmap)
    ood_score: str = DEFAULT_SCORE  # brisc.ood.SCORES, or "none" for a graph without ood_score (brisc.export.ood)
    checkpoint: str = "best"  # brisc.runfolder.CHECKPOINTS


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
        HeatmapSpec.parse(opts.heatmap or "rollout")
    except ValueError as e:
        raise ExportInputError(f"--heatmap: {e}") from None
    if opts.ood_score not in (*SCORES, "none"):
        raise ExportInputError(f"--ood-score {opts.ood_score}: one of {', '.join(SCORES)} or none")
    if opts.format == "onnx" and not MIN_OPSET <= opts.opset <= MAX_OPSET:
        raise ExportInputError(f"opset {opts.opset} is not supported (use {MIN_OPSET} to {MAX_OPSET})")
    return kinds


def _claim_out(out: Path) -> None:
    """Create --out (once every model has loaded: a broken run leaves nothing behind) and check it is writable."""
    from brisc.export.loading import ExportInputError

    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ExportInputError(f"{out}: cannot write here ({e.strerror or e})") from None


def default_heatmap(tm) -> str:
    """The model's own best map: the [CLS] attention of the last guided layer for a mask-guided ViT (its
    training config says which), plain rollout for an unguided one."""
    train = tm.config.get("train", {})
    if not tm.model.has_attention or not train.get("guide_weight"):
        return "rollout"
    from brisc.train.guidance import resolve_layers

    return f"cls:layer={resolve_layers(tuple(train.get('guide_layers', (-1,))), tm.model.depth)[-1] + 1}"


def check_set(val: np.ndarray) -> np.ndarray:
    """The self-check's images: validation scans plus two outliers (black, noise), so that every output is also
    compared where it is far from the training data."""
    noise = np.random.default_rng(0).uniform(-1, 1, (1, *val.shape[1:])).astype(np.float32)
    return np.concatenate([val, np.full_like(noise, -1.0), noise])


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
        heatmap=(opts.heatmap or default_heatmap(tm)) if tm.model.has_attention else "saliency",
        heatmap_method=heatmap_method(tm.model, spec),
        explain_methods=KINDS[tm.kind].explain_methods,
        validation_metrics={k: val.get(k) for k in ("n", "accuracy", "macro_f1", "macro_auc", "ece", "ece_uncalibrated")},
        training_data=training | {"data": Path(str(tm.config.get("data", ""))).name,  # the folder's name only
                                  "checkpoint": tm.config.get("checkpoint", f"best (epoch {tm.metrics.get('best_epoch')})")},
        checkpoint_sha256=tm.checkpoint_sha256, brisc_version=brisc.__version__, torch=torch.__version__,
        opset=opts.opset if opts.format == "onnx" else None)


def ood_head(tm, opts: ExportOptions, temperature: float, log):
    """The graph's OOD head, its Gaussians fitted on the run's training split; None with --ood-score none."""
    from brisc.export.loading import ExportInputError
    from brisc.export.ood import OODHead, fit_run
    from brisc.ood import FEATURE_SCORES

    if opts.ood_score == "none":
        return None
    stats = None
    if opts.ood_score in FEATURE_SCORES:
        try:
            stats = fit_run(tm.model, opts.run)
        except (ValueError, KeyError, OSError) as e:
            raise ExportInputError(f"{opts.run}: cannot fit the {opts.ood_score} statistics on the run's training "
                                   f"images ({e}); --ood-score energy needs none") from None
        log(f"[{tm.kind}] ood_score: {opts.ood_score} on {stats.dim}-d features, Gaussians fitted on the training split")
    return OODHead(opts.ood_score, stats, temperature)


def calibrated(runner, opts: ExportOptions, kind: str, val_images, log) -> dict | None:
    """The card's ood entry: threshold from this graph's validation scores, AUROC on the OOD evaluation set."""
    from brisc.export.ood import calibrate, cached_evaluation_set

    if opts.ood_score == "none":
        return None
    if val_images is None or not len(val_images):
        log(f"[{kind}] warning: no validation images reachable: the card gets no OOD threshold")
        return {"score": opts.ood_score, "threshold": None}
    c = calibrate(runner, opts.ood_score, kind, val_images, cached_evaluation_set())
    ev = c.get("evaluation_set", {})
    log(f"[{kind}] ood threshold {c['threshold']:.4g}: flags {c['validation']['flag_rate']:.1%} of "
        f"{c['validation']['n']} validation scans" + (f", {ev['flag_rate']:.1%} of the {ev['n']} OOD evaluation "
                                                       f"images (AUROC {ev['auroc']:.3f})" if ev else ""))
    return c


def export_run(opts: ExportOptions, log=print) -> list[Path]:
    """Export the run's models; every file is checked before it appears. Returns the files written."""
    import numpy as np

    from brisc.export.loading import ExportInputError, calibration_images, check_images, load_trained
    from brisc.export import ood
    from brisc.export.onnx import export_onnx, metadata_props
    from brisc.export.selfcheck import ort_runner, torch_outputs
    from brisc.runfolder import RunFolder
    from brisc.export.quantize import QUANTIZATION, agreement, quantize_int8
    from brisc.export.torchscript import export_pt2, export_torchscript
    from brisc.export.wrapper import ExportWrapper, HeatmapSpec
    from brisc.imageio import load
    from brisc.sidecar import write_sidecar

    kinds = _validate(opts)
    trained = {kind: load_trained(opts.run, kind, opts.checkpoint) for kind in kinds}  # every file read before anything is created
    _claim_out(opts.out)
    paths = check_images(opts.run)
    if paths:
        images = np.stack([load(p) for p in paths])
    else:
        log("warning: the run's validation images are not reachable; checking on random inputs instead")
        images = np.random.default_rng(0).uniform(-1, 1, (4, 3, 224, 224)).astype(np.float32)
    images = check_set(images)
    val_images = ood.load_images(RunFolder(opts.run).val_paths())[0] if opts.ood_score != "none" else None
    calibration = None
    if opts.quantize == "int8":
        train = calibration_images(opts.run)
        if not train:
            log("warning: the run's training images are not reachable; INT8 is calibrated on the check images")
        # With the self-check's outliers (black, noise): scales fitted to scans alone clip the activations of a
        # non-scan, and the OOD score is read from exactly those.
        calibration = check_set(np.stack([load(p) for p in train])) if train else images
    written: list[Path] = []
    for kind, tm in trained.items():
        temperature = float(tm.config.get("temperature", tm.metrics.get("temperature", 1.0)))
        spec = HeatmapSpec.parse(opts.heatmap or default_heatmap(tm))
        head = ood_head(tm, opts, temperature, log)
        try:
            wrapper = ExportWrapper(tm.model, temperature=temperature, full_attention=opts.full_attention, heatmap=spec,
                                    ood=head)
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
        runner = ort_runner(path) if opts.format == "onnx" else (lambda x, w=wrapper: torch_outputs(w, x))
        card = replace(card, ood=calibrated(runner, opts, kind, val_images, log))
        write_sidecar(path, replace(card, self_check=check))
        written.append(path)
        worst = max(check["max_abs_diff"].values())
        log(f"[{kind}] {path} ({path.stat().st_size / 1e6:.1f} MB): checked on {check['images']} images, "
            f"max abs diff {worst:.1e}")
        if opts.quantize == "int8":
            qpath = opts.out / f"{kind}.int8.onnx"
            quantize_int8(path, qpath, calibration)
            q = agreement(path, qpath, images) | {"calibration_images": len(calibration)}
            qcard = replace(card, ood=calibrated(ort_runner(qpath), opts, kind, val_images, log))  # its own scores
            write_sidecar(qpath, replace(qcard, quantization={"type": QUANTIZATION, **q}))
            written.append(qpath)
            log(f"[{kind}] {qpath} ({qpath.stat().st_size / 1e6:.1f} MB): top-1 agreement with fp32 "
                f"{q['top1_agreement']:.3f}, heatmap correlation {q['heatmap_correlation']:.3f}"
                + (f", rollout correlation {q['rollout_correlation']:.3f}" if "rollout_correlation" in q else "")
                + f" on {q['images']} images")
    return written
