"""`brisc-synth OUT`: write a synthetic BRISC 2025 (``brisc.synth``), with volumes if asked (``synth_volumes``)."""

from __future__ import annotations

from pathlib import Path

import click

from brisc.errors import one_line_errors
from brisc.synth import SynthError, generate


def write(out: Path, *, per_class: int, test_per_class: int | None, seed: int, size: int, volumes: int) -> dict:
    """``generate`` and, with ``volumes``, that many NIfTI files and DICOM series under OUT/volumes; every refusal
    (bad sizes, a folder that is not brisc-synth's, a missing extra, a failed write) a SynthError."""
    if per_class < 1 or size < 32:
        raise SynthError("--per-class must be >= 1 and --size >= 32")
    if volumes:
        try:  # before anything is written
            import nibabel  # noqa: F401
            import pydicom  # noqa: F401
        except ImportError as e:
            raise SynthError(f"--volumes needs nibabel and pydicom ({e.name} is missing): "
                             "pip install 'brisc-mri[volumes]'") from None
    try:
        s = generate(out, per_class=per_class, test_per_class=test_per_class, seed=seed, size=size)
        if volumes:
            from brisc.synth_volumes import generate_volumes

            s["volumes"] = len(generate_volumes(out, volumes, seed=seed))
    except OSError as e:
        raise SynthError(f"cannot write {out}: {e.strerror or e}") from None
    return s


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--per-class", default=20, show_default=True, help="Train images per class.")
@click.option("--test-per-class", type=int, default=None, help="Test images per class [default: per-class // 5].")
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default=256, show_default=True, help="Image side in pixels.")
@click.option("--volumes", default=0, show_default=True,
              help="Also this many volumes under OUT/volumes: NIfTI files and DICOM series (brisc-mri[volumes]).")
def main(out: Path, per_class: int, test_per_class: int | None, seed: int, size: int, volumes: int) -> None:
    """Write a synthetic BRISC 2025 dataset (release layout, with masks) to OUT, a new or empty folder (or an earlier
    synthetic one): its phantoms carry real-looking BRISC names, so it never writes beside real scans.

    \b
    brisc-synth artifacts/synth --per-class 20 --seed 0
    brisc-train artifacts/synth --preset tiny        # then train on it"""
    with one_line_errors("brisc-synth"):
        s = write(out, per_class=per_class, test_per_class=test_per_class, seed=seed, size=size, volumes=volumes)
    click.echo(f"wrote {s['images']} images and {s['masks']} masks to {s['out']} "
               f"in {s['seconds']:.1f} s ({s['images_per_second']:.0f} img/s)")
    for split, c in s["counts"].items():
        click.echo(f"  {split}: " + "  ".join(f"{k} {v}" for k, v in c.items()))
    if volumes:
        n = s["volumes"]
        click.echo(f"wrote {n} volume{'s' * (n != 1)} (NIfTI files and DICOM series) to {out / 'volumes'}")


if __name__ == "__main__":
    main()
