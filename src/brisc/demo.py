"""`make demo`: the whole pipeline end to end on synthetic BRISC (no real data, no network)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from brisc.data import discover, make_splits, report
from brisc.synth import generate


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/demo"), show_default=True)
@click.option("--per-class", default=40, show_default=True, help="Synthetic train images per class.")
def main(out: Path, per_class: int) -> None:
    data = out / "synthetic_brisc"
    s = generate(data, per_class=per_class, test_per_class=max(4, per_class // 4), seed=0)
    click.echo(f"[1] synthetic BRISC: {s['images']} images, {s['masks']} masks in {data} ({s['images_per_second']:.0f} img/s)")
    r = report(discover(data), make_splits(discover(data)))
    click.echo("    split: " + ", ".join(f"{k} {r['split'][k]['images']}" for k in ("train", "val", "test")))


if __name__ == "__main__":
    sys.exit(main())
