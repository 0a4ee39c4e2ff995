"""Training throughput of the home-made ViT vs timm's VisionTransformer of the same dimensions.

fp32 and bf16 autocast, one forward+backward+AdamW step on a fixed batch, median of several steps,
both models measured in the same run. Goal: ours >= 0.95x timm.
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from brisc.hardware import cpu_native_bf16
from common import median_time, table, train_step


def step_fn(model, x, y, bf16: bool, device):
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step():
        train_step(model, opt, x, y, bf16=bf16, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return step


def run(preset: str = "cpu", batch: int = 64, repeats: int = 5, device: str = "cpu") -> str:
    import timm

    from brisc.train.models.vit import VIT_PRESETS, VisionTransformer

    dev = torch.device(device)
    cfg = replace(VIT_PRESETS[preset], stem="patch")  # like for like: timm's ViT has the patch embedding
    torch.manual_seed(0)
    x = torch.randn(batch, 3, 224, 224, device=dev)
    y = torch.randint(0, 4, (batch,), device=dev)
    rows = []
    for bf16 in (False, True):
        ours = VisionTransformer(cfg).to(dev).train()
        ref = timm.models.vision_transformer.VisionTransformer(
            img_size=224, patch_size=16, embed_dim=cfg.dim, depth=cfg.depth, num_heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio, num_classes=4, drop_path_rate=cfg.drop_path, reg_tokens=cfg.registers).to(dev).train()
        t_ours = median_time(step_fn(ours, x, y, bf16, dev), repeats=repeats)
        t_ref = median_time(step_fn(ref, x, y, bf16, dev), repeats=repeats)
        label = "fp32"
        if bf16:
            native = dev.type == "cuda" or cpu_native_bf16()
            label = "bf16 autocast" + ("" if native else " (emulated: no AVX-512 BF16/AMX)")
        rows.append([label, f"{batch / t_ours:.1f}", f"{batch / t_ref:.1f}",
                     f"{t_ref / t_ours:.2f}x"])
    title = f"Training img/s, ViT preset `{preset}` (dim {cfg.dim}, depth {cfg.depth}, heads {cfg.heads}), batch {batch}, {device}"
    return f"### {title}\n\n" + table(["precision", "brisc ViT", "timm ViT", "brisc / timm"], rows) + \
        f"\n\nMedian of {repeats} steps after one warm-up, both models in the same run. Goal: >= 0.95x.\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    print(run(a.preset, a.batch, a.repeats, a.device))
