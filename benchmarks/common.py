"""Helpers shared by the benchmark scripts: medians of repeated timings and the machine's description."""

from __future__ import annotations

import platform

from brisc.hardware import describe
from brisc.timing import median_seconds as median_time  # noqa: F401 - the benchmarks' name for it


def machine() -> str:
    """The CPU with the flags that decide brisc's speed paths (bf16, VNNI), and the Python version."""
    return f"{describe()}, Python {platform.python_version()}"


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def train_step(model, opt, x, y, *, bf16: bool, device) -> None:
    """One forward + cross-entropy + backward + optimizer step, as the benchmarks time it (bf16 by autocast)."""
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(x.to(device, non_blocking=True))
        logits = out.logits if hasattr(out, "logits") else out
    loss = torch.nn.functional.cross_entropy(logits.float(), y.to(device, non_blocking=True))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def infer_bench_args(*, small: int, large: int, model: str | None = None):
    """The command line the brisc-infer benchmarks share: --model, --data, --small, --large, --rounds."""
    import argparse
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=model, required=model is None)
    ap.add_argument("--data", default=os.environ.get("BRISC_DATA", "../shared/data/brisc2025"))
    ap.add_argument("--small", type=int, default=small)
    ap.add_argument("--large", type=int, default=large)
    ap.add_argument("--rounds", type=int, default=3)
    return ap.parse_args()
