"""Masked-autoencoder pretraining (He et al. 2022) on the training split's images, offline, with transformers'
``ViTMAEForPreTraining``: the way to a pretrained ViT where the hub cannot be reached.

The output folder is a Hugging Face ViT directory (``config.json`` + ``model.safetensors``: the encoder alone,
``model_type`` vit), so ``brisc-train --models hf_vit --hf-model OUT`` fine-tunes it unchanged and
``brisc-train --models vit --init OUT`` starts the home-made ViT from it (same dims: the presets match). Beside it:

    OUT/pretrain.json          recipe, split, per-epoch loss, seconds
    OUT/mae/model.safetensors  the whole MAE (encoder + decoder), after the last epoch
    OUT/mae/state.pt           optimizer, scheduler, history: the exact resume point
    OUT/reconstructions/epoch_NNN.png   original | masked | reconstruction, 4 training images

Only the training split is seen (the split is carved exactly as brisc-train carves it, same seed, fraction and
method), and no label is used. Resume is exact, as in ``brisc.train.engine``: every epoch draws its randomness
(order, augmentation, masks) from (seed, epoch) alone.
"""

from __future__ import annotations

from brisc.errors import BriscError

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from brisc.data import discover, make_splits
from brisc.fsio import atomic_path, write_json_atomic
from brisc.imageio import DEFAULT as PREP
from brisc.runfolder import STATE, WEIGHTS
from brisc.train import checkpoint as ckpt
from brisc.train.config import LOADERS, TrainConfig
from brisc.train.dataset import AugmentConfig, ScanDataset, train_transform
from brisc.train.distributed import DistEnv
from brisc.train.engine import autocast_ctx, epoch_feed, epoch_seed, make_optimizer, make_scheduler


@dataclass(frozen=True, kw_only=True)
class MAEPreset:
    """Encoder dims equal the home-made ViT preset of the same name, so ``--init`` maps one onto the other."""
    hidden: int
    depth: int
    heads: int
    decoder_hidden: int
    decoder_depth: int
    decoder_heads: int
    epochs: int
    batch_size: int
    lr: float  # for the batch size given (the MAE paper's 1.5e-4 x batch / 256, rounded up for short runs)
    warmup_epochs: float
    mask_ratio: float = 0.75


PRESETS = {
    "tiny": MAEPreset(hidden=32, depth=2, heads=2, decoder_hidden=32, decoder_depth=1, decoder_heads=2, epochs=2,
                      batch_size=8, lr=1e-3, warmup_epochs=0.5),
    # ViT dim 192 x 6 (the cpu ViT), 75% of patches hidden: ~53 s an epoch (84 img/s) on 2 Xeon cores, fp32; 30 epochs ~27 min.
    "cpu": MAEPreset(hidden=192, depth=6, heads=3, decoder_hidden=128, decoder_depth=2, decoder_heads=4, epochs=30,
                     batch_size=64, lr=1.5e-3, warmup_epochs=3),
    "gpu": MAEPreset(hidden=384, depth=12, heads=6, decoder_hidden=256, decoder_depth=4, decoder_heads=8, epochs=200,
                     batch_size=256, lr=1.5e-3, warmup_epochs=10),
}
HF_CONFIG, HF_WEIGHTS = "config.json", "model.safetensors"  # a transformers model directory, as from_pretrained reads it
SUMMARY = "pretrain.json"  # beside the encoder: recipe, split, per-epoch loss; marks the directory as brisc-pretrain's
MLP_RATIO = {"tiny": 2, "cpu": 4, "gpu": 4}  # as VIT_PRESETS
LAYER_NORM_EPS = 1e-6  # the home-made ViT's (timm's) value, so the two encoders compute the same function


def mae_config(preset: str):
    from transformers import ViTMAEConfig

    p = PRESETS[preset]
    return ViTMAEConfig(hidden_size=p.hidden, num_hidden_layers=p.depth, num_attention_heads=p.heads,
                        intermediate_size=MLP_RATIO[preset] * p.hidden, decoder_hidden_size=p.decoder_hidden,
                        decoder_num_hidden_layers=p.decoder_depth, decoder_num_attention_heads=p.decoder_heads,
                        decoder_intermediate_size=4 * p.decoder_hidden, image_size=PREP.size, patch_size=16,
                        num_channels=3, qkv_bias=True, mask_ratio=p.mask_ratio, norm_pix_loss=True,
                        layer_norm_eps=LAYER_NORM_EPS)


class MAE(nn.Module):
    """``ViTMAEForPreTraining`` with the hooks ``brisc.train.engine`` expects (``no_weight_decay``)."""

    def __init__(self, config):
        super().__init__()
        from transformers import ViTMAEForPreTraining

        self.mae = ViTMAEForPreTraining(config)

    def no_weight_decay(self) -> set[str]:
        return {"mae.vit.embeddings.cls_token", "mae.vit.embeddings.position_embeddings", "mae.decoder.mask_token",
                "mae.decoder.decoder_pos_embed"}

    def forward(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None):
        return self.mae(pixel_values=pixel_values, noise=noise)


@dataclass(frozen=True, kw_only=True)
class PretrainOptions:
    data: Path
    out: Path
    preset: str = "cpu"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0  # also the seed of the split: use brisc-train's --seed, --val-fraction and --split
    val_fraction: float = 0.1
    split: str = "group"
    resume: bool = False
    bf16: bool | None = None
    wandb: str = "offline"
    loader: str | None = None  # brisc.train.config.LOADERS; None: "tensor" on a GPU (no PIL workers to starve it), else "pil"


class PretrainError(BriscError, ValueError):
    """Bad input to brisc-pretrain: one line, exit 2."""


def recipe(opts: PretrainOptions) -> tuple[MAEPreset, TrainConfig]:
    p = PRESETS[opts.preset]
    p = replace(p, **{k: v for k, v in (("epochs", opts.epochs), ("batch_size", opts.batch_size), ("lr", opts.lr))
                      if v is not None})
    cfg = TrainConfig(epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, warmup_epochs=p.warmup_epochs,
                      weight_decay=0.05, min_lr_ratio=0.0, bf16=False, num_workers=0,
                      augment=AugmentConfig(hflip=0.5, rotation=0.0, brightness=0.0, contrast=0.0, scale=(0.9, 1.0)))
    return p, cfg


def encoder_state(model: MAE) -> dict[str, torch.Tensor]:
    """The MAE's encoder as a transformers ``ViTModel`` state dict (no ``vit.`` prefix, no pooler)."""
    return {k[len("vit."):]: v.detach().contiguous().cpu() for k, v in model.mae.state_dict().items()
            if k.startswith("vit.")}


def save_encoder(model: MAE, out: Path) -> None:
    """OUT/config.json + OUT/model.safetensors: a ViT directory ``from_pretrained`` reads (the classifier is new)."""
    from safetensors.torch import save_file
    from transformers import ViTConfig

    c = model.mae.config
    vit = ViTConfig(hidden_size=c.hidden_size, num_hidden_layers=c.num_hidden_layers,
                    num_attention_heads=c.num_attention_heads, intermediate_size=c.intermediate_size,
                    image_size=c.image_size, patch_size=c.patch_size, num_channels=c.num_channels, qkv_bias=c.qkv_bias,
                    layer_norm_eps=c.layer_norm_eps, architectures=["ViTModel"])
    with atomic_path(out / HF_WEIGHTS) as tmp:
        save_file(encoder_state(model), str(tmp), metadata={"format": "pt"})
    with atomic_path(out / HF_CONFIG) as tmp:
        tmp.write_text(vit.to_json_string())


@torch.no_grad()
def reconstructions(model: MAE, images: torch.Tensor, path: Path, seed: int) -> None:
    """original | masked | reconstruction (visible patches kept), one row per image, in display range."""
    model.eval()
    noise = torch.rand(images.shape[0], (images.shape[-1] // 16) ** 2, generator=torch.Generator().manual_seed(seed))
    out = model(images, noise=noise)
    mae = model.mae
    target = mae.patchify(images)
    mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
    pred = out.logits * (var + 1e-6) ** 0.5 + mean  # undo the per-patch normalisation of norm_pix_loss
    m = out.mask[..., None]  # 1 = hidden
    recon = mae.unpatchify(pred * m + target * (1 - m))
    masked = mae.unpatchify(target * (1 - m))
    rows = [torch.cat([images[i], masked[i], recon[i]], -1) for i in range(images.shape[0])]
    grid = torch.cat(rows, -2)  # [3, rows * 224, 3 * 224]
    arr = ((grid * 0.5 + 0.5).clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
    model.train()


def pretrain(opts: PretrainOptions, log=print) -> dict:
    """Run (or resume) MAE pretraining; returns pretrain.json's content."""
    from brisc.hardware import choose_bf16
    from brisc.train.tracking import make_tracker

    if opts.preset not in PRESETS:
        raise PretrainError(f"unknown preset '{opts.preset}' (choose from {', '.join(PRESETS)})")
    preset, cfg = recipe(opts)
    if preset.epochs < 1 or preset.batch_size < 1 or not preset.lr > 0:
        raise PretrainError("--epochs and --batch-size must be at least 1 and --lr positive")
    splits = make_splits(discover(opts.data), val_fraction=opts.val_fraction, seed=opts.seed, method=opts.split)
    state_path, weights_path = opts.out / "mae" / STATE, opts.out / "mae" / WEIGHTS
    if state_path.exists() and not opts.resume:
        raise PretrainError(f"{opts.out} already holds a pretraining run: pass --resume to continue it, or choose a new --out")
    env = DistEnv(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    bf16, why = choose_bf16(opts.bf16, True, env.device.type)
    loader = opts.loader or ("tensor" if env.device.type == "cuda" else "pil")
    if loader not in LOADERS:
        raise PretrainError(f"--loader {loader}: choose from {', '.join(LOADERS)}")
    cfg = replace(cfg, bf16=bf16, loader=loader)
    info = {"preset": opts.preset, "mae": asdict(preset), "train": cfg.to_dict(), "seed": opts.seed,
            "split": {"method": opts.split, "val_fraction": opts.val_fraction, "seed": opts.seed,
                      "train_images": len(splits.train), "val_images_never_seen": len(splits.val)},
            "data": Path(opts.data).name, "labels_used": False}
    torch.manual_seed(opts.seed)
    model = MAE(mae_config(opts.preset)).to(env.device)
    ds = ScanDataset(splits.train, train_transform(cfg.augment, PREP), PREP, cache=True)
    feed = epoch_feed(ds, cfg, env, opts.seed)
    steps = len(ds) // cfg.batch_size or 1
    optimizer, start, history = make_optimizer(model, cfg), 0, []
    scheduler = make_scheduler(optimizer, cfg, steps)
    if opts.resume and state_path.exists():
        state = ckpt.load_state(state_path)
        if state["recipe"] != info:
            raise PretrainError(f"{opts.out}: started with another recipe or split; resume with the same options")
        ckpt.load_weights(weights_path, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, history = state["epoch"], state["history"]
        log(f"[mae] resuming after epoch {start}")
    state_path.parent.mkdir(parents=True, exist_ok=True)
    show = torch.stack([ds[i][0] for i in range(min(4, len(ds)))]).to(env.device)  # training images only
    tracker = make_tracker(opts.wandb, out_dir=opts.out, group=f"{opts.out.name}-pretrain")
    tracker.start("mae", info)
    log(f"[mae] {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, {len(ds)} training images "
        f"(validation never seen), {cfg.epochs} epochs, batch {cfg.batch_size}, lr {cfg.lr:g}, bf16 {bf16} ({why})")
    model.train()
    try:
        for epoch in range(start, cfg.epochs):
            torch.manual_seed(epoch_seed(opts.seed, epoch))  # augmentation and the random masks
            t0, total, n = time.perf_counter(), 0.0, 0
            with tqdm(feed(epoch), desc=f"[mae] epoch {epoch + 1}/{cfg.epochs}", leave=False) as bar:
                for batch in bar:
                    x = batch[0].to(env.device)
                    with autocast_ctx(env.device, cfg.bf16):
                        loss = model(x).loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
                    optimizer.step()
                    scheduler.step()
                    total, n = total + float(loss.detach()) * len(x), n + len(x)
            rec = {"epoch": epoch + 1, "loss": total / max(n, 1), "seconds": time.perf_counter() - t0,
                   "img_s": n / (time.perf_counter() - t0), "lr": optimizer.param_groups[0]["lr"]}
            if not math.isfinite(rec["loss"]):
                raise PretrainError(f"[mae] epoch {epoch + 1}: the loss is {rec['loss']}; lower --lr")
            history.append(rec)
            ckpt.save_weights(weights_path, model)
            ckpt.save_state(state_path, {"epoch": epoch + 1, "optimizer": optimizer.state_dict(),
                                         "scheduler": scheduler.state_dict(), "history": history, "recipe": info})
            save_encoder(model, opts.out)
            reconstructions(model, show, opts.out / "reconstructions" / f"epoch_{epoch + 1:03d}.png", opts.seed)
            tracker.log({"pretrain/loss": rec["loss"], "pretrain/lr": rec["lr"], "epoch": epoch + 1})
            log(f"[mae] epoch {epoch + 1}/{cfg.epochs}  loss {rec['loss']:.4f}  {rec['img_s']:.0f} img/s  "
                f"{rec['seconds']:.1f} s")
    finally:
        tracker.finish()
    summary = info | {"history": history, "seconds": sum(h["seconds"] for h in history)}
    write_json_atomic(opts.out / SUMMARY, summary)
    return summary


def is_brisc_pretrain(id_or_dir: str | Path) -> bool:
    """Written by brisc-pretrain (its summary beside the encoder), not a checkpoint pretrained elsewhere."""
    return (Path(id_or_dir) / SUMMARY).is_file()


def is_pretrained_dir(path: Path) -> bool:
    """A brisc-pretrain output (or any transformers ViT directory): config.json of model_type vit + weights."""
    cfg = Path(path) / HF_CONFIG
    if not (cfg.is_file() and (Path(path) / HF_WEIGHTS).is_file()):
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == "vit"
    except (OSError, json.JSONDecodeError):
        return False


def encoder_weights(path: Path) -> dict[str, torch.Tensor]:
    """The encoder state dict of a brisc-pretrain output (transformers ``ViTModel`` names)."""
    from safetensors.torch import load_file

    return load_file(str(Path(path) / HF_WEIGHTS))
