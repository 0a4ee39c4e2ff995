"""brisc-synth throughput (goal: at least 200 images/s), median of 3 runs."""

from __future__ import annotations

import statistics
import tempfile

from brisc.synth import generate


def run(per_class: int = 100) -> str:
    speeds = []
    for seed in range(3):
        with tempfile.TemporaryDirectory() as d:
            speeds.append(generate(d, per_class=per_class, seed=seed)["images_per_second"])
    return (f"### Synthetic BRISC\n\n`brisc-synth` at 256x256 (images + masks written): median "
            f"{statistics.median(speeds):.0f} img/s over 3 runs of {per_class * 4 + max(1, per_class // 5) * 4} images "
            f"(goal >= 200).\n")


if __name__ == "__main__":
    print(run())
