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


def onnx_median_seconds(path, pixel_values, *, repeats: int = 5, warmup: int = 2, threads: int | None = None,
                        options: dict | None = None, config: dict[str, str] | None = None) -> float:
    """``median_seconds`` of one fresh onnxruntime session on ``pixel_values``, closed afterwards: an idle
    session's thread pool keeps spinning and, on a 2-core machine, slows whatever runs next, so a timing keeps
    only one session alive. ``options``: SessionOptions attributes to set; ``config``: session config entries."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    for name, value in (options or {}).items():
        setattr(opts, name, value)
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])  # freed on return
    return median_seconds(lambda: session.run(None, {"pixel_values": pixel_values}), repeats=repeats, warmup=warmup)
