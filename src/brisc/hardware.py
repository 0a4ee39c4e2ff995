"""What this machine's CPU can do: the bf16 choice of training and benchmarks, and the flags reports print.

brisc runs on CPUs that differ from day to day (Sapphire Rapids with AMX, EPYC with AVX-512 bf16/VNNI,
EPYC with AVX2 only). bf16 autocast is fast only where the CPU has bf16 instructions (AVX-512 BF16 or
AMX); elsewhere PyTorch emulates it and it runs ~6x slower than fp32. Torch is imported lazily, so
the torch-free side (inference) can print the flags too.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# The flags that decide brisc's speed paths, in the order reports print them.
KEY_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AVX-512 BF16 or AMX), so bf16 autocast is a speed-up."""
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    import torch  # no /proc/cpuinfo: ask PyTorch's own dispatcher

    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def describe() -> str:
    """One line for logs and benchmark reports: model name, cores, key flags, PyTorch's kernel level."""
    flags = cpu_flags()
    have = [f for f in KEY_FLAGS if f in flags] or ["(flags unknown)"]
    line = f"{cpu_name()}, {os.cpu_count()} cores, flags: {' '.join(have)}"
    try:
        import torch

        line += f", torch CPU capability {torch.backends.cpu.get_cpu_capability()}"
    except ImportError:
        pass
    return line


def choose_bf16(requested: bool | None, preset: bool, device_type: str) -> tuple[bool, str]:
    """-> (bf16 on?, why). An explicit --bf16/--no-bf16 wins; otherwise CUDA always, the CPU only with native bf16."""
    if requested is not None:
        why = "asked for" if requested else "turned off"
        if requested and device_type == "cpu" and not cpu_native_bf16():
            why += " (this CPU has no AVX-512 BF16/AMX: bf16 is emulated and several times slower than fp32)"
        return requested, why
    if device_type == "cuda":
        return True, "CUDA"
    if not preset:
        return False, "the preset trains in fp32"
    if cpu_native_bf16():
        return True, "this CPU has native bf16 (AVX-512 BF16/AMX)"
    return False, "this CPU has no AVX-512 BF16/AMX, where bf16 autocast is emulated and slower: fp32 instead"
