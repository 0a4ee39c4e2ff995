"""`brisc-infer --help` latency (goal: under half a second), median of 5 fresh processes."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time


def run() -> str:
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "brisc.inference.cli", "--help"], capture_output=True, check=True)
        ts.append(time.perf_counter() - t)
    return f"### CLI start-up\n\n`brisc-infer --help`: median {statistics.median(ts) * 1000:.0f} ms over 5 fresh processes (goal < 500 ms).\n"


if __name__ == "__main__":
    print(run())
