"""End-to-end brisc-infer throughput on real BRISC JPEGs vs model-only throughput, and peak memory.

Each measurement is a fresh process (so peak RSS is its own). Goals: end-to-end >= 85% of model-only img/s
without heatmaps; with --heatmaps >= 75% of the plain run's img/s and <= 100 KB of heatmap files a scan;
peak RSS for 5000 images <= 1.1x that for 1000.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from brisc.inference.outdir import ERRORS_CSV, HEATMAPS, OutFolder
from common import infer_bench_args, table

_CHILD = r"""
import json, sys, time
from brisc.inference.cli import main
t = time.perf_counter()
code = 0
try:
    main(sys.argv[1:])
except SystemExit as e:
    code = e.code
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent that forked us.
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"wall": time.perf_counter() - t, "rss_mb": hwm / 1024, "code": code}))
"""


def _folder(images: list[Path], n: int, root: Path) -> Path:
    d = root / f"scans{n}"
    d.mkdir()
    for i in range(n):
        src = images[i % len(images)]
        if i < len(images):
            os.symlink(src.resolve(), d / f"{i:05d}_{src.name}")
        else:  # a repeat is a copy: brisc-infer classifies each real file once, however many links name it
            shutil.copyfile(src, d / f"{i:05d}_{src.name}")
    return d


def infer(folder: Path, model: str, heatmaps: str | None, out: Path, extra: tuple[str, ...] = ()) -> dict:
    """``heatmaps``: None, or the --heatmap-format (png, the default; jpg); ``extra``: more brisc-infer options."""
    args = ([str(folder), "--model", model, "--out", str(out), "--quiet", *extra]
            + (["--heatmaps", "--heatmap-format", heatmaps] if heatmaps else []))
    r = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=True)
    child = json.loads(r.stdout.strip().splitlines()[-1])
    if child["code"] not in (0, 1):
        raise RuntimeError(f"brisc-infer exited {child['code']}: {r.stderr.strip().splitlines()[-1:]}")
    s = OutFolder(out).summary()
    if not s["classified_this_run"]:
        raise RuntimeError(f"brisc-infer classified nothing in {folder} (see {out / ERRORS_CSV})")
    drawn = [p for p in (out / HEATMAPS).rglob("*") if p.is_file()] if (out / HEATMAPS).is_dir() else []
    return {**child, "img_s": s["img_per_s"], "model_img_s": s["model_img_per_s"], "n": s["classified"],
            "kb_per_scan": sum(p.stat().st_size for p in drawn) / 1e3 / s["classified"]}


def run(model: str, data: Path, n_small: int = 1000, n_large: int = 5000, rounds: int = 3) -> str:
    """The three small runs ``rounds`` times, interleaved (a run's speed varies by ~15% on a shared machine): each
    row gives the run with the median img/s, and the ratio of medians."""
    images = sorted((data / "classification_task" / "train").rglob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, large = _folder(images, n_small, tmp), _folder(images, n_large, tmp)
        results: dict = {}
        for k in range(rounds):
            for heat in (None, "png", "jpg"):
                results.setdefault(heat, []).append(infer(small, model, heat, tmp / f"out_small_{heat}_{k}"))
        median = {h: sorted(rs, key=lambda r: r["img_s"])[len(rs) // 2] for h, rs in results.items()}
        plain = median[None]["img_s"]
        for heat in (None, "png", "jpg"):
            r = median[heat]
            rows.append([f"{n_small} JPEGs" + ({"png": ", --heatmaps (PNG)", "jpg": ", --heatmaps --heatmap-format jpg"}
                                               .get(heat, "")), f"{r['img_s']:.1f}", f"{r['model_img_s']:.1f}",
                         f"{r['img_s'] / r['model_img_s']:.0%}", f"{r['img_s'] / plain:.0%}",
                         f"{r['kb_per_scan']:.0f}" if heat else "-", f"{r['rss_mb']:.0f}"])
        big = infer(large, model, None, tmp / "out_large")
        small_rss = float(rows[0][-1])
        rows.append([f"{n_large} JPEGs", f"{big['img_s']:.1f}", f"{big['model_img_s']:.1f}",
                     f"{big['img_s'] / big['model_img_s']:.0%}", f"{big['img_s'] / plain:.0%}", "-",
                     f"{big['rss_mb']:.0f} ({big['rss_mb'] / small_rss:.2f}x the {n_small} run)"])
    return (f"### brisc-infer end to end on real BRISC JPEGs (`{Path(model).name}`)\n\n"
            + table(["input", "end-to-end img/s", "model-only img/s", "end-to-end / model-only",
                     f"img/s / the plain {n_small} run", "heatmap KB a scan", "peak RSS MB"], rows)
            + f"\n\nMedians of {rounds} interleaved rounds. Model-only img/s is the time inside `session.run` in the same run. Batch 32, 2 decode threads. "
              "Heatmap KB: the overlay, a 256-colour PNG or a JPEG (one file a scan).\n")


if __name__ == "__main__":
    a = infer_bench_args(small=1000, large=5000)
    print(run(a.model, Path(a.data), a.small, a.large, a.rounds))
