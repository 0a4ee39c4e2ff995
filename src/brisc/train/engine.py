"""Training and evaluation: ``train_one_epoch``, ``evaluate``, ``fit`` (one model), ``run`` (a comparison).

Resume is exact: every epoch draws its randomness (shuffling, augmentation, dropout) from seeds
derived from (seed, epoch) alone, and the end of every epoch writes the last weights and the
optimizer/scheduler state atomically. A run killed anywhere and resumed with ``--resume`` redoes
the interrupted epoch and ends with the same weights as an uninterrupted run.

Long on purpose (~380 lines), like torchvision's reference scripts: the epoch loop, its evaluation and the
exact resume are read together. The recipe (``TrainConfig``, presets) is in ``brisc.train.config``.
"""

from __future__ import annotations

from brisc.errors import BriscError

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

import brisc
from brisc import CLASSES
from brisc.data import Splits
from brisc.fsio import write_npy_atomic
from brisc.imageio import DEFAULT as PREP
from brisc.metrics import classification_metrics, cross_fitted_ece, ece_floors, fit_temperature, softmax
from brisc.runfolder import CONFIG, LAST, METRICS, STATE, VAL_LOGITS, VAL_LOGITS_MIRROR, WEIGHTS
from brisc.selection import cross_selection, validation_halves
from brisc.train import checkpoint as ckpt
from brisc.train.batches import TensorBatches
from brisc.train.config import TrainConfig
from brisc.train.dataset import ScanDataset, eval_transform, train_transform
from brisc.train.distributed import DistEnv, barrier
from brisc.train.ema import WeightAverage
from brisc.train.explain import explanation_quality
from brisc.train.distill import distillation_loss, load_teacher
from brisc.train.guidance import excluded_masks, guidance_loss, resolve_layers, without_masks
from brisc.train.mixing import CUTMIX_PATCH, mixed_cross_entropy, patch_cutmix
from brisc.train import outliers
from brisc.train.models import model_config_dict
from brisc.train.tracking import Tracker


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def autocast_ctx(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DDP) else model


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms, positions and the [CLS] token."""
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad or name.startswith("decoders."):
            continue
        (no_decay if p.ndim <= 1 or name in skip else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Linear warmup, then cosine down to ``min_lr_ratio``; stepped every batch."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def make_loader(ds, cfg: TrainConfig, env: DistEnv, epoch: int, seed: int) -> DataLoader:
    """A loader whose order and worker seeds depend on (seed, epoch) only."""
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch))
    if env.distributed:
        sampler = DistributedSampler(ds, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
        return DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                          generator=g, drop_last=True)
    return DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers, generator=g,
                      drop_last=len(ds) > cfg.batch_size)


def epoch_feed(ds, cfg: TrainConfig, env: DistEnv, seed: int):
    """-> a function epoch -> that epoch's batches: the DataLoader over ``ds`` (loader "pil"), or whole batches
    augmented on the training device from images stacked there once (loader "tensor", brisc.train.batches)."""
    if cfg.loader != "tensor":
        return lambda epoch: make_loader(ds, cfg, env, epoch, seed)
    batches = TensorBatches(ds, cfg.augment, PREP, device=env.device, batch_size=cfg.batch_size, rank=env.rank,
                            world_size=env.world_size)
    return lambda epoch: batches.epoch(epoch_seed(seed, epoch))


def guided(model: torch.nn.Module, cfg: TrainConfig) -> bool:
    return cfg.guide_weight > 0 and getattr(unwrap(model), "has_attention", False)


def train_one_epoch(model, loader, optimizer, scheduler, *, cfg: TrainConfig, env: DistEnv, desc: str,
                    teacher: torch.nn.Module | None = None, ema: WeightAverage | None = None) -> dict:
    """One pass over ``loader``: cross-entropy (half of it toward ``teacher``'s predictions for a distillation
    ViT), plus ``guide_weight`` x the mask-guidance loss when the batches carry pooled masks (x, y, masks);
    ``ema`` follows every step."""
    model.train()
    guide = guided(model, cfg)
    layers = resolve_layers(cfg.guide_layers, unwrap(model).depth) if guide else []
    total_loss, total_guide, correct, seen, total_uniform, seen_out = 0.0, 0.0, 0, 0, 0.0, 0
    t0 = time.perf_counter()
    # Closed (its line cleared) even when Ctrl-C or SIGTERM ends the epoch, so the one-line report stands alone.
    with tqdm(loader, desc=desc, leave=False, disable=not env.is_main, file=sys.stderr) as bar:
        for batch in bar:
            x, y = batch[0].to(env.device, non_blocking=True), batch[1].to(env.device, non_blocking=True)
            masks = batch[2].to(env.device) if guide else None
            partner, lam = None, 1.0
            if cfg.cutmix and float(torch.rand(())) < cfg.cutmix:
                x, masks, partner, lam = patch_cutmix(x, masks, patch=CUTMIX_PATCH)
            B = len(y)
            n_out = outliers.count(B, cfg.outliers)
            with autocast_ctx(env.device, cfg.bf16):
                # One forward for scans and outliers: the conv stem's BatchNorm sees the same mix every step.
                out = model(torch.cat([x, outliers.make_outliers(x, n_out)]) if n_out else x, output_attentions=guide)
            logits = out.logits[:B]
            if teacher is not None:
                with torch.no_grad(), autocast_ctx(env.device, cfg.bf16):
                    taught = teacher(x).logits.float()
                heads = tuple(h[:B] for h in out.head_logits)
                loss = distillation_loss(heads, y, taught, partner, lam, cfg.label_smoothing, cfg.distill_tau)
            else:
                loss = mixed_cross_entropy(logits.float(), y, partner, lam, cfg.label_smoothing)
            if n_out:
                u = outliers.uniform_loss(out.logits[B:])
                loss = loss + cfg.outlier_weight * u
                total_uniform += u.item() * n_out
                seen_out += n_out
            if guide:
                g = guidance_loss(tuple(a[:B] for a in out.attentions), masks, layers=layers,
                                  prefix=unwrap(model).num_prefix_tokens, blur=cfg.guide_blur, floor=cfg.guide_floor)
                loss = loss + cfg.guide_weight * g
                total_guide += g.item() * len(y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update(unwrap(model))
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
    stats = torch.tensor([total_loss, total_guide, correct, seen, total_uniform, seen_out], dtype=torch.float64)
    if env.distributed:
        dist.all_reduce(stats)
    total_loss, total_guide, correct, seen, total_uniform, seen_out = stats.tolist()
    dt = time.perf_counter() - t0
    out = {"loss": total_loss / max(seen, 1), "acc": correct / max(seen, 1), "img_s": seen / dt, "seconds": dt}
    if seen_out:  # log C at a perfectly uniform answer on every outlier
        out["outlier_loss"] = total_uniform / seen_out
    return out | ({"guide_loss": total_guide / max(seen, 1)} if guide else {})


@torch.no_grad()
def evaluate(model, ds, *, cfg: TrainConfig, env: DistEnv, mirror: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """-> (logits [N, C], labels [N], img/s); ``mirror``: of the scans' left-right mirrors. Under DDP each rank takes
    every world_size-th item (no padding, so no duplicates) and the pieces are gathered back in order."""
    model = unwrap(model)
    model.eval()
    idx = list(range(env.rank, len(ds), env.world_size))
    loader = DataLoader(Subset(ds, idx), batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers)
    outs, labels = [], []
    t0 = time.perf_counter()
    for x, y in loader:
        with autocast_ctx(env.device, cfg.bf16):
            x = x.to(env.device)
            outs.append(model(x.flip(-1) if mirror else x).logits.float().cpu())
        labels.append(y)
    img_s = len(idx) / max(time.perf_counter() - t0, 1e-9)
    logits = torch.cat(outs).numpy() if outs else np.zeros((0, len(CLASSES)), np.float32)
    y = torch.cat(labels).numpy() if labels else np.zeros(0, np.int64)
    if env.distributed:
        parts = [None] * env.world_size
        dist.all_gather_object(parts, (idx, logits, y))
        full_logits = np.zeros((len(ds), logits.shape[1]), np.float32)
        full_y = np.zeros(len(ds), np.int64)
        for i, lg, yy in parts:
            full_logits[i], full_y[i] = lg, yy
        return full_logits, full_y, img_s
    return logits, y, img_s


def pretrain_sae(model, ds, *, cfg: TrainConfig, env: DistEnv, seed: int, tracker: Tracker, log) -> list[dict]:
    """Greedy layer-wise denoising pretraining (every rank does the same, deterministic, work)."""
    history = []
    for layer in range(len(model.encoders)):
        params = [*model.encoders[layer].parameters(), *model.decoders[layer].parameters()]
        opt = torch.optim.Adam(params, lr=cfg.pretrain_lr)
        for ep in range(cfg.pretrain_epochs):
            torch.manual_seed(epoch_seed(seed, 10_000 + 100 * layer + ep))
            loader = make_loader(ds, cfg, DistEnv(device=env.device), 10_000 + 100 * layer + ep, seed)
            model.train()
            tot, n, t0 = 0.0, 0, time.perf_counter()
            for x, _ in loader:
                loss = model.pretrain_loss(x.to(env.device), layer)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                tot, n = tot + loss.item() * len(x), n + len(x)
            rec = {"layer": layer, "epoch": ep + 1, "reconstruction_loss": tot / max(n, 1),
                   "seconds": time.perf_counter() - t0}
            history.append(rec)
            tracker.log({f"pretrain/layer{layer}_loss": rec["reconstruction_loss"]})
            log(f"  pretrain layer {layer + 1}/{len(model.encoders)} epoch {ep + 1}/{cfg.pretrain_epochs}: "
                f"reconstruction loss {rec['reconstruction_loss']:.4f}")
    for d in model.decoders:  # pretraining only: frozen so DDP and the optimizer ignore them
        d.requires_grad_(False)
    return history


@dataclass
class FitResult:
    kind: str
    metrics: dict
    history: list[dict]
    model: torch.nn.Module


class ResumeError(BriscError, ValueError):
    """--resume with an architecture or recipe other than the one the run was started with."""


def _recipe(config: dict) -> dict:
    """What a resumed run must share with its start, flattened to "model.depth" -> 6 (JSON types, so 5 == 5.0)."""
    return {f"{group}.{k}": json.loads(json.dumps(v)) for group in ("model", "train") for k, v in config[group].items()
            if k not in ("num_workers", "eval_batch_size", "bf16")}  # how fast (bf16 follows the CPU), not what is trained


def check_same_recipe(saved: dict, recipe: dict, where: Path) -> None:
    """Refuse to continue (or to keep, for a finished model) a run under settings other than its own, by name."""
    # A field added to TrainConfig after a run was started reads as its default (off) in that run's recipe.
    default = {f"train.{k}": json.loads(json.dumps(v)) for k, v in TrainConfig().to_dict().items()}
    changed = sorted(k for k in set(recipe) | set(saved) if saved.get(k, default.get(k)) != recipe.get(k, default.get(k)))
    if changed:
        raise ResumeError(f"{where}: the run was started with other settings ({', '.join(changed)}); "
                          "resume with the same --preset/--set/--epochs/--lr/--batch-size, or choose a new --out")


def current_recipe(model, cfg: TrainConfig) -> dict:
    """What ``fit`` would record for this model and recipe (``_recipe`` of its config)."""
    return _recipe({"model": model_config_dict(model), "train": cfg.to_dict()})


def fit(model, kind: str, splits: Splits, out_dir: Path, *, cfg: TrainConfig, env: DistEnv, seed: int,
        resume: bool, tracker: Tracker, run_info: dict, log=print) -> FitResult:
    """Train one model into ``out_dir`` (its own folder of the run) and evaluate it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model.to(env.device)
    grid = PREP.size // 16 if guided(model, cfg) else 0  # every brisc ViT has 16x16 patches
    train = splits.train
    if grid and cfg.guide_exclude:
        train = without_masks(train, excluded_masks(cfg.guide_exclude))
        log(f"[{kind}] guidance leaves out the masks of {sum(a.mask != b.mask for a, b in zip(train, splits.train))} "
            f"training images listed in {cfg.guide_exclude}")
    train_ds = ScanDataset(train, train_transform(cfg.augment, PREP), PREP, cache=True, mask_grid=grid)
    val_ds = ScanDataset(splits.val, eval_transform(PREP), PREP, cache=True)
    steps = len(train_ds) // (cfg.batch_size * env.world_size) or 1
    config = {"kind": kind, "model": model_config_dict(model), "train": cfg.to_dict(), "seed": seed,
              "preprocessing": PREP.to_dict(), "classes": list(CLASSES), "brisc_version": brisc.__version__, **run_info}
    tracker.start(kind, config)

    state_path, last_path, best_path = out_dir / STATE, out_dir / LAST, out_dir / WEIGHTS
    start_epoch, history, pretrain_history, best = 0, [], [], {"epoch": 0, "macro_f1": -1.0}
    epoch_logits: list[torch.Tensor] = []  # every epoch's validation logits (brisc.selection)
    mirror_logits: list[torch.Tensor] = []  # and of the mirrored scans: flip averaging's choice scored honestly
    recipe = _recipe(config)
    state = ckpt.load_state(state_path) if resume and state_path.exists() else None
    if state is not None and "recipe" in state:  # older states carry no recipe: nothing to compare
        check_same_recipe(state["recipe"], recipe, state_path)
        if getattr(model, "decoders", None) is not None:
            for d in model.decoders:
                d.requires_grad_(False)
        ckpt.load_weights(last_path, model)
        start_epoch, history, pretrain_history, best = state["epoch"], state["history"], state["pretrain"], state["best"]
        # A state from before the logits were kept: its epochs' logits are unknown (NaN), never chosen.
        unknown = [torch.full((len(splits.val), len(CLASSES)), math.nan)] * start_epoch
        epoch_logits = list(state.get("val_logits", unknown))
        mirror_logits = list(state.get("val_logits_mirror", unknown))
        log(f"[{kind}] resuming after epoch {start_epoch}")
    elif cfg.pretrain_epochs and hasattr(model, "pretrain_loss"):
        pretrain_history = pretrain_sae(model, train_ds, cfg=cfg, env=env, seed=seed, tracker=tracker, log=log)

    ddp_model = DDP(model) if env.distributed else model
    ema = WeightAverage(model, cfg.ema) if cfg.ema else None
    if ema is not None and state is not None:
        ema.load_state_dict(state["ema"])
    scored = ema.model if ema is not None else model  # what is evaluated, selected and shipped
    optimizer = make_optimizer(model, cfg)
    scheduler = make_scheduler(optimizer, cfg, steps)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])

    teacher = load_teacher(cfg.distill_from, env.device) if cfg.distill_from else None
    feed = epoch_feed(train_ds, cfg, env, seed)
    for epoch in range(start_epoch, cfg.epochs):
        torch.manual_seed(epoch_seed(seed, epoch))  # dropout, drop-path and augmentation in the main process
        tr = train_one_epoch(ddp_model, feed(epoch), optimizer, scheduler, cfg=cfg, env=env, teacher=teacher, ema=ema,
                             desc=f"[{kind}] epoch {epoch + 1}/{cfg.epochs}")
        logits, y, _ = evaluate(scored, val_ds, cfg=cfg, env=env)
        mirrored, _, _ = evaluate(scored, val_ds, cfg=cfg, env=env, mirror=True)
        m = classification_metrics(logits, y)
        rec = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_acc": tr["acc"], "val_acc": m["accuracy"],
               "val_macro_f1": m["macro_f1"], "val_nll": m["nll"], "lr": optimizer.param_groups[0]["lr"],
               "train_img_s": tr["img_s"], "seconds": tr["seconds"]} | {k: tr[k] for k in ("guide_loss", "outlier_loss") if k in tr}
        if ema is not None:
            raw_logits, _, _ = evaluate(ddp_model, val_ds, cfg=cfg, env=env)
            rec["val_acc_raw"] = classification_metrics(raw_logits, y)["accuracy"]
        history.append(rec)
        epoch_logits.append(torch.from_numpy(np.asarray(logits, np.float32)))
        mirror_logits.append(torch.from_numpy(np.asarray(mirrored, np.float32)))
        if env.is_main:
            write_npy_atomic(out_dir / VAL_LOGITS, torch.stack(epoch_logits).numpy())
            write_npy_atomic(out_dir / VAL_LOGITS_MIRROR, torch.stack(mirror_logits).numpy())
            if m["macro_f1"] > best["macro_f1"]:
                best = {"epoch": epoch + 1, "macro_f1": m["macro_f1"]}
                ckpt.save_weights(best_path, scored, {"epoch": epoch + 1, "val_macro_f1": m["macro_f1"]})
            ckpt.save_weights(last_path, model, {"epoch": epoch + 1})
            ckpt.save_state(state_path, {"epoch": epoch + 1, "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "history": history,
                                         "pretrain": pretrain_history, "best": best, "recipe": recipe,
                                         "val_logits": epoch_logits, "val_logits_mirror": mirror_logits}
                                        | ({"ema": ema.state_dict()} if ema is not None else {}))
            tracker.log({f"train/{k}": v for k, v in rec.items() if k != "epoch"} | {"epoch": epoch + 1})
            log(f"[{kind}] epoch {epoch + 1}/{cfg.epochs}  loss {tr['loss']:.4f}  train acc {tr['acc']:.3f}  "
                f"val acc {m['accuracy']:.3f}  " + (f"(raw {rec['val_acc_raw']:.3f})  " if ema is not None else "")
                + f"val F1 {m['macro_f1']:.3f}  lr {rec['lr']:.2e}  "
                + (f"guide {tr['guide_loss']:.3f}  " if "guide_loss" in tr else "")
                + (f"outliers {tr['outlier_loss']:.3f}  " if "outlier_loss" in tr else "") +
                f"{tr['img_s']:.0f} img/s  {tr['seconds']:.1f} s")
        barrier(env)

    # Final evaluation of the best checkpoint (all ranks load the same file).
    ckpt.load_weights(best_path, model)
    metrics = final_evaluation(model, splits, val_ds, cfg=cfg, env=env, history=history, pretrain=pretrain_history,
                               best=best, tracker=tracker, epoch_logits=epoch_logits, mirror_logits=mirror_logits)
    if env.is_main:
        ckpt.write_json(out_dir / CONFIG, {**config, "temperature": metrics["temperature"]})
        ckpt.write_json(out_dir / METRICS, metrics)
    return FitResult(kind=kind, metrics=metrics, history=history, model=model)


def held_apart(splits: Splits, epoch_logits: list[torch.Tensor]) -> dict | None:
    """The best-epoch choice scored honestly (``brisc.selection.cross_selection``) on validation halves made of
    whole look-alike groups; None with fewer than two epochs or a validation split that cannot be halved."""
    y = [s.label for s in splits.val]
    half = validation_halves([s.path for s in splits.val], y) if len(epoch_logits) >= 2 else None
    return None if half is None else cross_selection(torch.stack(epoch_logits).numpy(), np.asarray(y), half)


def final_evaluation(model, splits: Splits, val_ds: ScanDataset, *, cfg: TrainConfig, env: DistEnv, history: list,
                     pretrain: list, best: dict, tracker: Tracker, epoch_logits: list | None = None,
                     mirror_logits: list | None = None) -> dict:
    logits, y, img_s = evaluate(model, val_ds, cfg=cfg, env=env)
    temperature = fit_temperature(logits, y)
    raw = classification_metrics(logits, y)
    cal = classification_metrics(logits, y, temperature)
    metrics = {
        "complete": True,
        "best_epoch": best["epoch"],
        "parameters": sum(p.numel() for n, p in model.named_parameters() if not n.startswith("decoders.")),
        "train_seconds": float(sum(h["seconds"] for h in history + pretrain)),
        "train_img_s": float(np.median([h["train_img_s"] for h in history])) if history else None,
        "infer_img_s": img_s,
        "temperature": temperature,
        "val": {**cal, "ece_uncalibrated": raw["ece"], "nll_uncalibrated": raw["nll"],
                "ece_cross_fitted": cross_fitted_ece(logits, y),  # temperature fitted on the other half
                **ece_floors(softmax(logits, temperature), y),
                "held_apart": held_apart(splits, epoch_logits or []),
                # the mean of the scan's and its mirror's logits: brisc.export.ensemble --mirror of one graph
                "held_apart_mirror": held_apart(splits, [(a + b) / 2 for a, b in zip(epoch_logits or [],
                                                                                       mirror_logits or [])])},
        "history": history,
        "pretrain": pretrain,
    }
    if splits.test:
        t_logits, t_y, _ = evaluate(model, ScanDataset(splits.test, val_ds.transform, PREP), cfg=cfg, env=env)
        metrics["test"] = classification_metrics(t_logits, t_y, temperature)  # reported, never used to select
    if env.is_main:
        metrics["explanations"] = explanation_quality(model, splits.val, device=env.device)
        tracker.summary({"val/accuracy": cal["accuracy"], "val/macro_f1": cal["macro_f1"], "val/ece": cal["ece"],
                         "temperature": temperature})
        tracker.log_confusion("val/confusion", y, logits.argmax(1), CLASSES)
    return metrics
