"""Training img/s of the home-made ViT fed three ways, in one run: does the loader keep the device busy?

- step alone: one resident batch, the ceiling;
- tensor loader (``brisc.train.batches``, ``--set vit.loader=tensor``): decoded uint8 images on the device, each batch
  augmented there in a few batched operations;
- PIL loader (``ScanDataset`` + ``DataLoader``): one image at a time on the CPU, ``--workers`` processes.

Both feeds are brisc-train's own (``brisc.train.engine.epoch_feed``).

Each loader is timed over whole epochs of ``--limit`` training images (worker start-up included, as in training),
after one warm-up epoch. On a GPU:

    python benchmarks/loader_speed.py --data D --preset gpu --device cuda --workers 8 --limit 4096
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from common import machine, table, train_step


def run(data: str, preset: str = "cpu", device: str = "cpu", workers: int = 0, limit: int = 512,
        epochs: int = 2) -> str:
    from brisc.data import discover, make_splits
    from brisc.imageio import DEFAULT as PREP
    from brisc.train.config import TRAIN_PRESETS
    from brisc.train.dataset import ScanDataset, train_transform
    from brisc.train.distributed import DistEnv
    from brisc.train.engine import epoch_feed
    from brisc.train.models.vit import VIT_PRESETS, VisionTransformer

    dev = torch.device(device)
    cfg = replace(TRAIN_PRESETS[preset]["vit"], num_workers=workers)
    bf16 = dev.type == "cuda" and cfg.bf16
    samples = make_splits(discover(data), method="random").train[:limit]
    ds = ScanDataset(samples, train_transform(cfg.augment, PREP), PREP, cache=True)
    torch.manual_seed(0)
    model = VisionTransformer(VIT_PRESETS[preset]).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), cfg.lr)
    # the feeds brisc-train itself uses (brisc.train.engine.epoch_feed), one per loader
    feeds = {name: epoch_feed(ds, replace(cfg, loader=name), DistEnv(device=dev), seed=0) for name in ("tensor", "pil")}

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def img_s(epoch_fn) -> float:
        epoch_fn(0)  # warm-up: kernels chosen, caches filled
        sync()
        t, n = time.perf_counter(), 0
        for e in range(1, epochs + 1):
            n += epoch_fn(e)
        sync()
        return n / (time.perf_counter() - t)

    def fed(feed):
        def epoch(e):
            n = 0
            for x, y in feed(e):
                train_step(model, opt, x, y, bf16=bf16, device=dev)
                n += len(y)
            return n
        return epoch

    x0, y0 = next(iter(feeds["tensor"](0)))
    n_batches = len(feeds["tensor"](0))

    def resident(_):
        for _ in range(n_batches):
            train_step(model, opt, x0, y0, bf16=bf16, device=dev)
        return n_batches * len(y0)

    rates = {"step alone (resident batch)": img_s(resident), "tensor loader": img_s(fed(feeds["tensor"])),
             f"PIL loader, {workers} workers": img_s(fed(feeds["pil"]))}
    top = rates["step alone (resident batch)"]
    rows = [[k, f"{v:.0f}", f"{v / top:.2f}"] for k, v in rates.items()]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else machine()
    return (f"### Training feed, ViT preset `{preset}`, batch {cfg.batch_size}, {device}{' bf16' if bf16 else ''}\n\n"
            f"Machine: {name}. {len(ds)} training images, {epochs} epochs each after a warm-up epoch.\n\n"
            + table(["feed", "img/s", "share of the step alone"], rows) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--limit", type=int, default=512)
    ap.add_argument("--epochs", type=int, default=2)
    a = ap.parse_args()
    print(run(a.data, a.preset, a.device, a.workers, a.limit, a.epochs))
