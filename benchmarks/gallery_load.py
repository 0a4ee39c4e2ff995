"""The brisc-infer gallery in a real headless browser: load time for 10,000 scans, and a screenshot.

Writes index.html for N synthetic rows (the overlays are real palette PNGs, a few files reused), opens it in
headless Chromium (Debian: `apt install chromium`) and reads back two times the page records itself:
`data-drawn-ms` (the script has parsed every row and drawn the first page) and `data-load-ms` (the load event,
after the visible overlays arrived). Median of 3 fresh browser runs. Goal: load < 2 s for 10,000 scans.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from common import table

CLASSES = ["glioma", "meningioma", "no_tumor", "pituitary"]


def browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def fake_output(out: Path, n: int, seed: int = 0) -> Path:
    """An output folder as brisc-infer writes it, for ``n`` scans (40 distinct images, reused)."""
    from brisc.inference.gallery import write_gallery
    from brisc.inference.heatmap import overlay
    from brisc.inference.outputs import save_overlay

    rng = np.random.default_rng(seed)
    (out / "heatmaps").mkdir(parents=True)
    for k in range(40):
        yy, xx = np.mgrid[:256, :256]
        scan = Image.fromarray((120 + 80 * np.sin(xx / (9 + k)) * np.cos(yy / 13)).astype(np.uint8), "L")
        ov = overlay(scan, rng.random((14, 14)))
        save_overlay(ov, out / "heatmaps" / f"{k}.png", "png")  # the attention PNG brisc-infer writes
    rows, confusion = [], np.zeros((4, 4), int)
    for i in range(n):
        t, p = rng.integers(4), rng.integers(4) if rng.random() < 0.1 else None
        p = t if p is None else p
        confusion[t, p] += 1
        rows.append({"path": f"case{i // 20:04d}/slice_{i:06d}.jpg", "frame": None, "predicted": CLASSES[p],
                     "probability": float(rng.uniform(0.3, 1)), "true_label": CLASSES[t], "correct": bool(t == p),
                     "explain": "cls:layer=6", "pointing_hit": bool(rng.random() < 0.9) if t != 2 else None,
                     "energy_in_mask": float(rng.random()) if t != 2 else None,
                     "heatmap": f"heatmaps/{i % 40}.png", "panel": None})
    summary = {"ground_truth": {"n": n, "accuracy": float(np.trace(confusion) / n), "macro_f1": 0.0,
                                "classes": CLASSES, "confusion": confusion.tolist()},
               "masks": {"explanation": "(synthetic rows for the benchmark)"}}
    from brisc.inference.session import DEFAULT_MODEL
    from brisc.sidecar import read_sidecar

    return write_gallery(out, rows, read_sidecar(DEFAULT_MODEL), summary)


def open_page(chrome: str, page: Path, screenshot: Path | None = None, fragment: str = "") -> dict:
    args = [chrome, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1100", "--hide-scrollbars"]
    if screenshot is not None:
        args += [f"--screenshot={screenshot}", "--virtual-time-budget=4000"]
    else:
        args += ["--dump-dom"]
    r = subprocess.run(args + [page.as_uri() + fragment], capture_output=True, text=True, timeout=120)
    if screenshot is not None:
        return {}
    found = dict(re.findall(r'data-(drawn|load)-ms="(\d+)"', r.stdout[:4000]))
    if "drawn" not in found:
        raise RuntimeError(f"the gallery did not draw in {chrome}: {r.stderr[-500:]}")
    return {k: int(v) for k, v in found.items()}


def run(n: int = 10_000, screenshot: Path | None = None) -> str:
    chrome = browser()
    if chrome is None:
        return "### Gallery load\n\nskipped: no headless Chromium here (Debian: `apt install chromium`).\n"
    version = subprocess.run([chrome, "--version"], capture_output=True, text=True).stdout.strip()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in (1_000, n):
            page = fake_output(Path(tmp) / str(count), count)
            times = [open_page(chrome, page) for _ in range(3)]
            drawn = statistics.median(t["drawn"] for t in times)
            load = statistics.median(t.get("load", t["drawn"]) for t in times)
            rows.append([count, f"{page.stat().st_size / 1e6:.2f}", f"{drawn / 1000:.2f}", f"{load / 1000:.2f}"])
            if count == n and screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                open_page(chrome, page, screenshot)
    return (f"### Gallery load in headless {version}\n\n"
            + table(["scans", "index.html MB", "first page drawn, s", "load event, s"], rows)
            + "\n\nMedian of 3 fresh browser runs; the rows show the 256-px palette PNG overlays scaled down, 60 rows a page. Goal: load < 2 s "
              f"at {n} scans." + (f" Screenshot: `{screenshot}`." if screenshot else "") + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--screenshot", type=Path, default=None, help="also a screenshot of the benchmark's page")
    ap.add_argument("--shoot", nargs=2, type=Path, metavar=("INDEX_HTML", "PNG"),
                    help="only a screenshot of a real gallery (opened on its mistakes: index.html#wrong-only)")
    a = ap.parse_args()
    if a.shoot:
        open_page(browser() or "chromium", a.shoot[0].resolve(), a.shoot[1], fragment="#wrong-only")
    else:
        print(run(a.n, a.screenshot))
