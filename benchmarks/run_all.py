"""`make bench`: every benchmark, one report printed and written to docs/benchmarks.md.

Needs a trained run for the model benchmarks: BRISC_RUN (default artifacts/runs/brisc-cpu) and its
export BRISC_EXPORT (default artifacts/export/brisc-cpu); those parts are skipped, with a note, without one.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import export_speed  # noqa: E402
import gallery_load  # noqa: E402
import help_time  # noqa: E402
import infer_throughput  # noqa: E402
import loader_speed  # noqa: E402
import ray_engine  # noqa: E402
import synth_speed  # noqa: E402
import train_speed  # noqa: E402
from common import machine  # noqa: E402

from brisc.runfolder import RunFolder  # noqa: E402


def main() -> None:
    run = Path(os.environ.get("BRISC_RUN", "artifacts/runs/brisc-cpu"))
    export = Path(os.environ.get("BRISC_EXPORT", "artifacts/export/brisc-cpu"))
    data = Path(os.environ.get("BRISC_DATA", "../shared/data/brisc2025"))
    parts = [f"# brisc benchmarks\n\nMachine: {machine()}. Written by `make bench` on {time.strftime('%Y-%m-%d')}.\n"]
    jobs = [("training speed", train_speed.run), ("synthetic data", synth_speed.run), ("CLI start-up", help_time.run),
            ("gallery load", gallery_load.run), ("training feed", lambda: loader_speed.run(str(data), limit=256))]
    if RunFolder(run).has_model("vit"):
        jobs.append(("PyTorch vs onnxruntime", lambda: export_speed.run(str(run), str(export))))
        if (export / "vit.int8.onnx").is_file():
            jobs.append(("session settings", lambda: export_speed.run_settings(str(run), str(export))))
        for name in ("vit.onnx", "vit.int8.onnx"):
            if (export / name).is_file():
                jobs.append((f"brisc-infer with {name}", lambda m=export / name: infer_throughput.run(str(m), data)))
        if (export / "vit.int8.onnx").is_file():
            jobs.append(("the Ray engine", lambda: ray_engine.run(str(export / "vit.int8.onnx"), data)))
    else:
        parts.append(f"(No trained run at {run}: model benchmarks skipped. Train one with `brisc-train --preset cpu --out {run}`.)\n")
    Path("docs").mkdir(exist_ok=True)
    for name, job in jobs:
        try:
            part = job()
        except Exception as e:  # one failing benchmark must not lose the others
            part = f"### {name}\n\nfailed: {type(e).__name__}: {e}\n"
        print(part, flush=True)
        parts.append(part)
        Path("docs/benchmarks.md").write_text("\n".join(parts))


if __name__ == "__main__":
    main()
