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
import help_time  # noqa: E402
import infer_throughput  # noqa: E402
import synth_speed  # noqa: E402
import train_speed  # noqa: E402
from common import machine  # noqa: E402


def main() -> None:
    run = Path(os.environ.get("BRISC_RUN", "artifacts/runs/brisc-cpu"))
    export = Path(os.environ.get("BRISC_EXPORT", "artifacts/export/brisc-cpu"))
    data = Path(os.environ.get("BRISC_DATA", "../shared/data/brisc2025"))
    parts = [f"# brisc benchmarks\n\nMachine: {machine()}. Written by `make bench` on {time.strftime('%Y-%m-%d')}.\n"]
    parts.append(train_speed.run())
    parts.append(synth_speed.run())
    parts.append(help_time.run())
    if (run / "vit" / "model.safetensors").is_file():
        parts.append(export_speed.run(str(run), str(export)))
        model = export / "vit.onnx"
        if model.is_file():
            parts.append(infer_throughput.run(str(model), data))
            int8 = export / "vit.int8.onnx"
            if int8.is_file():
                parts.append(infer_throughput.run(str(int8), data))
    else:
        parts.append(f"(No trained run at {run}: model benchmarks skipped. Train one with `brisc-train --preset cpu --out {run}`.)\n")
    report = "\n".join(parts)
    print(report)
    Path("docs").mkdir(exist_ok=True)
    Path("docs/benchmarks.md").write_text(report)


if __name__ == "__main__":
    main()
