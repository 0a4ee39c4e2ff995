"""Median wall time of a callable: the one timing helper of the benchmarks and the shipping check."""

from __future__ import annotations

import statistics
import time


def median_seconds(fn, *, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)
