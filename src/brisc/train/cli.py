"""`brisc-train`: train and compare the home-made ViT, the HF ViT and the stacked autoencoders.

A thin shell over ``run_training``; runs as is or under ``torchrun --nproc_per_node=N``. Long on purpose: every check
that runs before training (options, data, resume, recipes, models) refuses bad input here, by name, before anything
is written.
"""

from __future__ import annotations

from brisc.errors import BriscError

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click

from brisc.errors import one_line_errors
from brisc.data import DataError, discover, make_splits
from brisc.fsio import interrupted, raise_on_sigterm
from brisc.kinds import MODEL_KINDS, PRESET_NAMES
from brisc.options import (bf16_option, data_folder, data_input, device_option, recipe_overrides, resume_option,
                           split_options, wandb_option)
from brisc.runfolder import RunFolder


class UsageError(BriscError):
    """Bad input: one line, exit code 2, nothing written."""


RUNS_ROOT = Path("artifacts/runs")  # where a run goes without --out (and where brisc-export looks for the newest)
ENCODER = "mae-encoder"  # the in-domain MAE encoder pretrained for the HF ViT when no checkpoint is given or reachable


def default_out() -> Path:
    """A new run folder named by the time it started."""
    return RUNS_ROOT / time.strftime("%Y%m%d-%H%M%S")


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    data: Path
    out: Path
    models: tuple[str, ...] = MODEL_KINDS  # the three models it exists to compare
    preset: str | None = None  # None: gpu on CUDA, cpu elsewhere
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    device: str = "auto"
    seed: int = 0
    resume: bool = False
    wandb: str = "offline"
    hf_model: str | None = None  # None: the hub's ImageNet-21k ViT when reachable, else MAE pretraining in-domain
    val_fraction: float = 0.1
    split: str = "group"  # brisc.kinds.SPLIT_METHODS: group keeps look-alike slices of one patient on one side
    workers: int | None = None
    bf16: bool | None = None
    overrides: tuple[str, ...] = ()  # "vit.depth=8", "vit.augment.rotation=5": see brisc.train.overrides
    init: Path | None = None  # a run folder whose <model>/model.safetensors each model starts from (same architecture)


MIN_PER_CLASS = 5  # below this a class's validation share is a handful of images: warned, not refused


def check_classes(splits, data: Path, log) -> None:
    """Refuse data with fewer than two classes (nothing to classify); warn on a class with very few images."""
    from collections import Counter

    from brisc import CLASSES

    counts = Counter(s.label for s in splits.train + splits.val)
    if len(counts) < 2:
        have = ", ".join(CLASSES[k] for k in counts) or "none"
        raise UsageError(f"{data}: images of {len(counts)} class ({have}); brisc-train needs at least two classes")
    for k, n in sorted(counts.items()):
        if n < MIN_PER_CLASS:
            log(f"warning: {data}: class {CLASSES[k]} has only {n} image(s); its validation figures will mean little")


def check_resumable(opts: RunOptions, log) -> None:
    """--resume continues the split it started with: another --seed, --val-fraction or --split is refused, by name."""
    rf = RunFolder(opts.out)
    if not rf.split_path.is_file():
        log(f"note: --resume: no run in {opts.out} yet; starting a new one")
        return
    saved = {"method": "random"} | rf.split()  # runs before group splits were random
    changed = [f"--{flag} {saved.get(k)} -> {v}" for flag, k, v in
               (("seed", "seed", opts.seed), ("val-fraction", "val_fraction", opts.val_fraction),
                ("split", "method", opts.split)) if saved.get(k) != v]
    if changed:
        raise UsageError(f"{opts.out}: the run was started on another split ({'; '.join(changed)}); resume with the "
                         "same --seed, --val-fraction and --split, or choose a new --out")


def check_options(opts: RunOptions) -> None:
    unknown = [m for m in opts.models if m not in MODEL_KINDS]
    if unknown or not opts.models:
        raise UsageError(f"unknown model '{','.join(unknown) or '(none)'}' (choose from {', '.join(MODEL_KINDS)})")
    for name, value in (("--epochs", opts.epochs), ("--batch-size", opts.batch_size)):
        if value is not None and value < 1:
            raise UsageError(f"{name} {value}: must be at least 1")
    if opts.lr is not None and not opts.lr > 0:
        raise UsageError(f"--lr {opts.lr}: must be positive")
    if not 0 < opts.val_fraction < 1:
        raise UsageError(f"--val-fraction {opts.val_fraction}: must lie between 0 and 1")


def load_splits(opts: RunOptions, log):
    """The data and its split, checked; refuses to start over a run unless resuming it on the same split."""
    try:
        disc = discover(opts.data)
        splits = make_splits(disc, val_fraction=opts.val_fraction, seed=opts.seed, method=opts.split)
    except DataError as e:
        raise UsageError(str(e)) from None
    check_classes(splits, opts.data, log)
    if not splits.val:
        raise UsageError(f"{opts.data}: too few images to carve a validation split")
    existing = RunFolder(opts.out).started_kinds(opts.models)
    if existing and not opts.resume:
        raise UsageError(f"{opts.out} already holds a run of {', '.join(existing)}: pass --resume to continue it, "
                         "or choose a new --out")
    if opts.resume:
        check_resumable(opts, log)
    return disc, splits


def recipes(opts: RunOptions, device_type: str) -> dict:
    """kind -> (architecture config, TrainConfig, why bf16 is on or off): preset, then flags, then --set. The HF ViT's
    preset is for a brisc-pretrain encoder; another checkpoint gets ``HF_PRETRAINED_ELSEWHERE`` over it."""
    from brisc.hardware import choose_bf16
    from brisc.train.config import HF_PRETRAINED_ELSEWHERE, LOADERS, TRAIN_PRESETS
    from brisc.train.models import preset_config
    from brisc.train.overrides import OverrideError, apply_overrides, parse_item
    from brisc.train.pretrain import is_brisc_pretrain

    try:
        items = [parse_item(i) for i in opts.overrides]
        for kind, path, _ in items:
            if kind not in opts.models:
                raise OverrideError(f"--set {kind}.{path}: '{kind}' is not one of --models ({','.join(opts.models)})")
        out = {}
        for kind in opts.models:
            cfg = TRAIN_PRESETS[opts.preset][kind]
            if kind == "hf_vit" and not is_brisc_pretrain(opts.hf_model):
                cfg = replace(cfg, **HF_PRETRAINED_ELSEWHERE.get(opts.preset, {}))
            cfg = replace(cfg, **{k: v for k, v in (("epochs", opts.epochs), ("batch_size", opts.batch_size),
                                                    ("lr", opts.lr), ("num_workers", opts.workers)) if v is not None})
            model_cfg, cfg = apply_overrides(kind, preset_config(kind, opts.preset), cfg, items)
            if cfg.loader not in LOADERS:
                raise OverrideError(f"--set {kind}.loader={cfg.loader}: choose from {', '.join(LOADERS)}")
            bf16, why = choose_bf16(opts.bf16, cfg.bf16, device_type)
            out[kind] = (model_cfg, replace(cfg, bf16=bf16), why)
        return out
    except OverrideError as e:
        raise UsageError(str(e)) from None


def train_seed(opts: RunOptions, cfg) -> int:
    """The seed of a model's training: its own ``--set KIND.seed``, else --seed (which also draws the split)."""
    return cfg.seed if cfg.seed >= 0 else opts.seed


def build_models(opts: RunOptions, configs: dict) -> dict:
    """Every model built (and --init loaded) before anything is written: an unreachable hub id fails first."""
    import torch

    from brisc.train.distill import check_distillation
    from brisc.train.guidance import excluded_masks, resolve_layers
    from brisc.train.models import ModelLoadError, build_model

    models = {}
    for kind in opts.models:
        model_cfg, cfg, _ = configs[kind]
        if cfg.seed >= 0:  # its own initialisation; otherwise the draws follow --seed as they always have
            torch.manual_seed(cfg.seed)
        try:
            models[kind] = build_model(kind, model_cfg, hf_model=opts.hf_model)
        except ModelLoadError as e:
            raise UsageError(str(e)) from None
        except ValueError as e:  # an impossible architecture from --set, e.g. dim not divisible by heads
            raise UsageError(f"{kind}: {e}") from None
        if opts.init is not None:
            init_weights(models[kind], kind, opts.init)
        try:
            check_distillation(models[kind], cfg.distill_from)
        except ValueError as e:
            raise UsageError(f"--set {kind}.distill_from: {e}") from None
        if cfg.guide_weight:
            if not models[kind].has_attention:
                raise UsageError(f"--set {kind}.guide_weight: mask guidance needs attention; {kind} has none")
            try:
                resolve_layers(cfg.guide_layers, models[kind].depth)
            except ValueError as e:
                raise UsageError(f"--set {kind}.guide_layers: {e}") from None
        if cfg.guide_exclude:
            try:
                excluded_masks(cfg.guide_exclude)
            except ValueError as e:
                raise UsageError(f"--set {kind}.guide_exclude: {e}") from None
    return models


def init_weights(model, kind: str, init: Path) -> None:
    """--init: a brisc-train run folder (that run's model of this kind), or a brisc-pretrain output (a transformers
    ViT encoder: the home-made ViT through the parity mapping, its head and registers left as initialised)."""
    from brisc.train import checkpoint as ckpt
    from brisc.train.models.vit import VisionTransformer, load_hf_vit_state
    from brisc.train.pretrain import encoder_weights, is_pretrained_dir

    try:
        if is_pretrained_dir(init):
            if not isinstance(model, VisionTransformer):
                raise UsageError(f"--init {init}: a pretrained ViT encoder starts the home-made ViT only, not {kind} "
                                 "(the HF ViT takes it with --hf-model)")
            load_hf_vit_state(model, encoder_weights(init))
        else:
            ckpt.load_weights(RunFolder(init).weights(kind), model)
    except (OSError, RuntimeError, KeyError) as e:  # missing file, or another architecture
        raise UsageError(f"--init {init}: cannot start {kind} from it ({str(e).splitlines()[0][:160]})") from None


def hub_answers(model_id: str, timeout: float = 5.0) -> bool:
    """Whether the Hugging Face hub can serve ``model_id`` now (never with HF_HUB_OFFLINE set)."""
    import os

    if os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE"):
        return False
    try:
        from huggingface_hub import model_info

        model_info(model_id, timeout=timeout)
        return True
    except Exception:  # noqa: BLE001 - no network, no such id, or the hub's own errors: all mean "not from the hub"
        return False


def matching_encoder(opts: RunOptions) -> Path | None:
    """An in-domain MAE encoder pretrained earlier on the same data, split and preset (this run's first, then the
    newest other run's), to reuse instead of pretraining again."""
    import json

    want = {"data": Path(opts.data).name, "preset": opts.preset,
            "split": (opts.split, opts.val_fraction, opts.seed)}
    here = opts.out / ENCODER
    others = sorted(RUNS_ROOT.glob(f"*/{ENCODER}"), key=lambda p: p.stat().st_mtime, reverse=True) if RUNS_ROOT.is_dir() else []
    for d in [here] + [o for o in others if o.resolve() != here.resolve()]:
        try:
            info = json.loads((d / "pretrain.json").read_text())
        except (OSError, ValueError):
            continue
        got = {"data": info.get("data"), "preset": info.get("preset"),
               "split": (info["split"]["method"], info["split"]["val_fraction"], info["split"]["seed"])}
        if got == want and (d / "model.safetensors").is_file() and info.get("complete", True):
            return d
    return None


def resolve_hf_model(opts: RunOptions, log) -> tuple[str, str]:
    """-> (the HF ViT's checkpoint, where it came from). --hf-model when given; else the hub's ImageNet-21k ViT when
    the hub answers; else an in-domain MAE encoder from brisc-pretrain, reused or pretrained into the run now."""
    from brisc.train.models.hf_vit import DEFAULT_HF_MODEL
    from brisc.train.pretrain import PretrainOptions, pretrain

    if opts.hf_model:
        return opts.hf_model, "given (--hf-model)"
    if hub_answers(DEFAULT_HF_MODEL):
        return DEFAULT_HF_MODEL, "the Hugging Face hub (ImageNet-21k)"
    found = matching_encoder(opts)
    note = "pretrained in-domain with MAE on this split's training images, not on ImageNet"
    if found is not None:
        log(f"[hf_vit] no --hf-model and no hub: reusing the MAE encoder {found} ({note})")
        return str(found), note
    enc = opts.out / ENCODER
    log(f"[hf_vit] no --hf-model and no hub: pretraining an encoder with brisc-pretrain into {enc} first ({note})")
    pretrain(PretrainOptions(data=opts.data, out=enc, preset=opts.preset, seed=opts.seed, val_fraction=opts.val_fraction,
                             split=opts.split, resume=(enc / "mae").exists(), bf16=opts.bf16, wandb=opts.wandb), log=log)
    return str(enc), note


def check_finished(run: RunFolder, models: dict, configs: dict, opts: RunOptions) -> None:
    """--resume keeps a finished model only under the settings it was trained with (and the same preset), so that
    comparison.json never names settings the models were not trained with."""
    from brisc.train.engine import ResumeError, _recipe, check_same_recipe, current_recipe

    for kind, model in models.items():
        if not run.complete(kind):
            continue
        saved = run.config(kind)
        if saved.get("preset") not in (None, opts.preset):
            raise UsageError(f"{run.config_path(kind)}: the run was trained with --preset {saved['preset']}, not "
                             f"{opts.preset}; resume with the same preset, or choose a new --out")
        try:
            check_same_recipe(_recipe(saved), current_recipe(model, configs[kind][1]), run.config_path(kind))
        except ResumeError as e:
            raise UsageError(str(e)) from None


def run_training(opts: RunOptions, log=print) -> dict:
    """Validate everything, then train each model and write the comparison. Returns comparison.json."""
    import torch

    from brisc.hardware import describe
    from brisc.train import checkpoint as ckpt
    from brisc.train.distributed import DeviceError, broadcast_object, cleanup, init_distributed
    from brisc.train.engine import ResumeError, fit
    from brisc.train.report import plot_attention, publish
    from brisc.train.tracking import make_tracker

    check_options(opts)
    try:
        env = init_distributed(opts.device)
    except DeviceError as e:
        raise UsageError(str(e)) from None
    if opts.preset is None:
        opts = replace(opts, preset="gpu" if env.device.type == "cuda" else "cpu")
    disc, splits = load_splits(opts, log)
    hf_source = None
    if "hf_vit" in opts.models:
        hf_model, hf_source = resolve_hf_model(opts, log)
        opts = replace(opts, hf_model=hf_model)
    configs = recipes(opts, env.device.type)
    torch.manual_seed(opts.seed)
    models = build_models(opts, configs)

    run = RunFolder(opts.out)
    if opts.resume:
        check_finished(run, models, configs, opts)
    run_info = {"name": opts.out.name, "data": str(opts.data), "layout": disc.layout, "split_seed": opts.seed,
                "val_fraction": opts.val_fraction, "split_method": opts.split, "split_groups": splits.groups,
                "train_images": len(splits.train), "val_images": len(splits.val),
                "test_images": len(splits.test), "dropped_duplicates": splits.duplicates["dropped_from_train"],
                "preset": opts.preset, "device": str(env.device), "world_size": env.world_size,
                "hf_model": opts.hf_model if "hf_vit" in opts.models else None, "hf_model_source": hf_source,
                "torch": torch.__version__, "cpu": describe(), "init": str(opts.init) if opts.init else None}
    if env.is_main:
        opts.out.mkdir(parents=True, exist_ok=True)
        ckpt.write_json(run.split_path, {"seed": opts.seed, "val_fraction": opts.val_fraction, "method": opts.split,
                                         "groups": splits.groups,
                                         **{k: [s.path for s in getattr(splits, k)] for k in ("train", "val", "test")}})
    group = broadcast_object(env, f"{opts.out.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    tracker = make_tracker(opts.wandb, out_dir=opts.out, group=group, is_main=env.is_main)
    results = {}
    try:
        for kind, model in models.items():
            _, cfg, why_bf16 = configs[kind]
            if opts.resume and run.complete(kind):
                log(f"[{kind}] already complete: kept")
                results[kind] = run.metrics(kind)
                continue
            log(f"[{kind}] {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
                f"{cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, bf16 {cfg.bf16} ({why_bf16}), "
                f"device {env.device}" + (f", {env.world_size} processes" if env.distributed else ""))
            try:
                res = fit(model, kind, splits, run.model_dir(kind), cfg=cfg, env=env, seed=train_seed(opts, cfg),
                          resume=opts.resume, tracker=tracker, run_info=run_info, log=log if env.is_main else (lambda *a: None))
            except ResumeError as e:
                raise UsageError(str(e)) from None
            results[kind] = res.metrics
            if env.is_main:
                img = plot_attention(res.model, splits.val, opts.out / f"attention_{kind}.png", device=env.device)
                if img is not None:
                    tracker.log_images("val/attention", [(img, f"{kind}: maps on validation tumour images")])
        return publish(opts.out, results, run_info, tracker, log) if env.is_main else {}
    finally:
        tracker.finish()
        cleanup(env)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@data_input
@click.option("--models", default=",".join(MODEL_KINDS), show_default=True, help="Comma-separated: vit, hf_vit, sae.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Run folder [default: a new artifacts/runs/<date>-<time>, printed].")
@click.option("--preset", type=click.Choice(list(PRESET_NAMES)), default=None,
              help="Model sizes and recipes: tiny (tests), cpu (2 cores: the ViT ~55-80 min, the HF ViT ~75 after "
                   "~30 min of MAE pretraining, the SAE ~12), gpu (ViT-S) [default: gpu on CUDA, else cpu].")
@recipe_overrides
@device_option
@split_options
@resume_option
@wandb_option
@click.option("--hf-model", default=None,
              help="Pretrained HF ViT: hub id or local directory [default: google/vit-base-patch16-224-in21k when the "
                   "hub answers, else an MAE encoder pretrained in-domain into the run first, or one made earlier for "
                   "the same data and split]. A brisc-pretrain output trains with the preset's guided recipe (cpu: 40 "
                   "epochs, lr 1e-3); any other checkpoint is fine-tuned gently (cpu: 5 epochs, lr 5e-5).")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes [default: preset].")
@bf16_option
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Start each model from the best weights of this run folder (same architecture), e.g. to fine-tune; "
                   "or start the home-made ViT from a brisc-pretrain output (its encoder; head and registers new).")
@click.option("--set", "overrides", multiple=True, metavar="MODEL.KEY=VALUE",
              help="Change one field of the preset's architecture or recipe (repeatable), e.g. --set vit.depth=8 "
                   "--set vit.drop_path=0 --set vit.augment.rotation=5 --set vit.augment.scale=0.8,1.2.")
def main(data_arg, data, models, out, preset, epochs, batch_size, lr, device, seed, resume, wandb_mode, hf_model,
         val_fraction, split, workers, bf16, init, overrides) -> None:
    """Train and compare brisc's models on BRISC 2025; writes checkpoints, comparison.md/json and figures to --out.

    \b
    brisc-train                                   # all three models, default data, a new run folder
    brisc-train --models vit --preset cpu --out artifacts/runs/vit
    torchrun --nproc_per_node=2 -m brisc.train.cli --models vit --out artifacts/runs/ddp

    With no arguments on 2 CPU cores: about 3 to 3.5 hours (ViT, MAE pretraining, HF ViT, SAE). Research use only:
    not a medical device."""
    if out is None:
        out = default_out()
        click.echo(f"brisc-train: run folder {out}", err=True)
    opts = RunOptions(data=data_folder(data_arg, data), out=out, models=tuple(m.strip() for m in models.split(",") if m.strip()),
                      preset=preset, epochs=epochs, batch_size=batch_size, lr=lr, device=device, seed=seed,
                      resume=resume, wandb=wandb_mode, hf_model=hf_model, val_fraction=val_fraction, split=split,
                      workers=workers, bf16=bf16, overrides=overrides, init=init)
    raise_on_sigterm()  # a kill between or inside epochs leaves no temporary file; --resume continues
    try:
        with one_line_errors("brisc-train"):
            run_training(opts)
    except KeyboardInterrupt as e:
        sys.exit(interrupted("brisc-train", e, f"the epochs completed are saved in {out}"))


if __name__ == "__main__":
    main()
