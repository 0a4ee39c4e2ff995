"""`brisc-data DIR [--json]`: what a BRISC folder holds, the validation split carved from it, duplicates."""

from __future__ import annotations

import json

import click

from brisc.data import default_data_root, discover, make_splits, report
from brisc.grouping import THRESHOLD
from brisc.options import split_options


def _print_text(r: dict) -> None:
    click.echo(f"root    {r['root']}\nlayout  {r['layout']}")
    for split, f in r["found"].items():
        per = "  ".join(f"{k} {v}" for k, v in f["per_class"].items())
        planes = "  ".join(f"{k} {v}" for k, v in f["planes"].items())
        click.echo(f"{split:<6}  {f['images']} images: {per}")
        click.echo(f"        planes: {planes}")
        click.echo(f"        masks: {f['masks_found']} found, {f['masks_joined']} joined, "
                   f"{f['tumour_images_without_mask']} tumour images without a mask")
    s = r["split"]
    click.echo(f"split   {s['method']}, seed {s['seed']}, val fraction {s['val_fraction']}: "
               + ", ".join(f"{k} {s[k]['images']}" for k in ("train", "val", "test")))
    if s["groups"]:
        g = s["groups"]
        click.echo(f"groups  {g['groups']} groups of look-alike slices (same class, thumbnail similarity >= "
                   f"{g['threshold']}): largest {g['largest']}, {g['singletons']} single images, "
                   f"{g['images_in_groups_of_2_or_more']} images in groups of two or more; none straddles train and val")
    click.echo(f"leakage {r['look_alike_val_share']:.3f} of validation images have a look-alike of their class in train "
               f"(thumbnail similarity >= {THRESHOLD})")
    d = r["duplicates"]
    click.echo(f"dupes   {d['groups']} groups of byte-identical files ({d['cross_split_groups']} across splits, "
               f"{d['conflicting_label_groups']} with conflicting labels); {d['dropped_from_train']} dropped from train")
    click.echo(f"other   {len(r['unreadable'])} unreadable, {len(r['name_mismatches'])} name/folder mismatches, "
               f"{r['ignored_files']} non-image files ignored")
    for u in r["unreadable"]:
        click.echo(f"  unreadable: {u['path']}: {u['reason']}")
    for m in r["name_mismatches"]:
        click.echo(f"  mismatch: {m['path']}: folder says {m['folder']}, name says {m['name']}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("root", required=False, type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@split_options
def main(root: str | None, as_json: bool, seed: int, val_fraction: float, split: str) -> None:
    """Report what a BRISC 2025 folder holds (default: $BRISC_DATA or ../shared/data/brisc2025).

    \b
    brisc-data                               # the default data: layout, counts, masks, the validation split
    brisc-data path/to/brisc2025 --json      # the same as JSON"""
    from brisc.errors import one_line_errors

    with one_line_errors("brisc-data"):
        disc = discover(root or default_data_root())
        r = report(disc, make_splits(disc, val_fraction=val_fraction, seed=seed, method=split))
    if as_json:
        click.echo(json.dumps(r, indent=2))
    else:
        _print_text(r)


if __name__ == "__main__":
    main()
