"""brisc-infer's Ray engine (a local Ray, 1 and 2 actors) against the local engine on the same files, in one run.

Goal (#29): with 2 actors, at least 0.9x the local engine's img/s on a 2-core machine (both use both cores).
Ray's start-up (the local cluster and the actors, a few seconds) is a fixed cost a run pays once; the table
gives the img/s end to end and after start-up, the latter from the difference between a large and a small run
(``(n_large - n_small) / (t_large - t_small)``). Medians of ``rounds`` interleaved rounds, each a fresh process.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from common import infer_bench_args, machine, table
from infer_throughput import _folder, infer

ENGINES = {"local engine": (), "Ray, 2 actors": ("--engine", "ray", "--concurrency", "2"),
           "Ray, 1 actor": ("--engine", "ray", "--concurrency", "1")}


def run(model: str, data: Path, n_large: int = 1000, n_small: int = 100, rounds: int = 3) -> str:
    images = sorted((data / "classification_task" / "train").rglob("*.jpg"))
    seconds: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folders = {n: _folder(images, n, tmp) for n in (n_large, n_small)}
        runs = 0
        for _ in range(rounds):
            for name, extra in ENGINES.items():
                for n, folder in folders.items():
                    runs += 1
                    res = infer(folder, model, None, tmp / f"out{runs}", extra)
                    seconds.setdefault((name, n), []).append(res["wall"])
    rows, local = [], None
    for name in ENGINES:
        t_large, t_small = (statistics.median(seconds[(name, n)]) for n in (n_large, n_small))
        end_to_end, steady = n_large / t_large, (n_large - n_small) / (t_large - t_small)
        local = local or (end_to_end, steady)
        rows.append([name, f"{end_to_end:.1f}", f"{end_to_end / local[0]:.2f}x", f"{steady:.1f}",
                     f"{steady / local[1]:.2f}x", f"{t_large - n_large / steady:.1f}"])
    return (f"### brisc-infer: the Ray engine against the local engine (`{Path(model).name}`)\n\n"
            f"Machine: {machine()}. {n_large} and {n_small} real BRISC JPEGs, batch 32, medians of {rounds} rounds.\n\n"
            + table(["engine", f"img/s end to end ({n_large})", "vs local", "img/s after start-up", "vs local",
                     "start-up s"], rows) + "\n")


if __name__ == "__main__":
    a = infer_bench_args(small=100, large=1000, model="src/brisc/inference/models/default.onnx")
    print(run(a.model, Path(a.data), a.large, a.small, a.rounds))
