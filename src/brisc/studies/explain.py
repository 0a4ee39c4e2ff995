"""Which attention map points at the lesion? Variants of rollout and [CLS] attention scored on tumour masks.

    python -m brisc.studies.explain --run artifacts/runs/brisc-cpu [--model vit] [--limit N]

Prints a markdown table (pointing game, energy in mask, next to the mask area as the chance level) for:
plain rollout; rollout started at a later layer; rollout with max head fusion; the [CLS] attention of
every layer (mean and max over heads). All from the PyTorch model's full attention on the run's
validation tumour images, scored with the same metrics as everywhere else.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from brisc.data import Sample, discover
from brisc.fsio import write_json_atomic
from brisc.kinds import KINDS, MODEL_KINDS
from brisc.runfolder import RunFolder
from brisc.imageio import load
from brisc.maps import cls_map, rollout
from brisc.train.explain import score_maps, summarise


def variants(att: np.ndarray, prefix: int = 1) -> dict[str, np.ndarray]:
    """[B, L, H, N, N] ([CLS], prefix - 1 registers, patches) -> name -> [B, g, g] maps in [0, 1]."""
    L = att.shape[1]
    rows = att[:, :, :, 0, prefix:]
    out = {"rollout (plain)": rollout(att, prefix=prefix)}
    for s in range(1, L):
        out[f"rollout from layer {s + 1}"] = rollout(att, start_layer=s, prefix=prefix)
    out["rollout, max over heads"] = rollout(att, head_fusion="max", prefix=prefix)
    for layer in range(L):
        for fusion in ("mean", "max"):
            out[f"[CLS] attention layer {layer + 1}, {fusion} of heads"] = cls_map(rows, layer=layer, head_fusion=fusion)
    return out


def study(run: Path, kind: str = "vit", limit: int | None = None, batch: int = 16) -> dict[str, dict]:
    from brisc.export.loading import load_trained

    model = load_trained(run, kind).model.eval()
    rf = RunFolder(run)
    val, data = set(rf.val_paths()), rf.data_root(kind)
    samples: list[Sample] = [s for s in discover(data).samples if s.path in val and s.mask]
    samples = sorted(samples, key=lambda s: s.path)[:limit]
    rows: dict[str, list] = {}
    for i in range(0, len(samples), batch):
        chunk = samples[i:i + batch]
        x = torch.from_numpy(np.stack([load(s.path) for s in chunk]))
        with torch.no_grad():
            att = torch.stack(model(x, output_attentions=True).attentions, 1).float().numpy()
        for name, maps in variants(att, model.num_prefix_tokens).items():
            rows.setdefault(name, []).extend(score_maps(maps, chunk))
    return {name: summarise(r) for name, r in rows.items()}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| map | images | pointing game | chance | energy in mask | mask area (chance) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['n']} | {r['pointing_game']:.3f} | {r['pointing_chance']:.3f} | "
                     f"{r['energy_in_mask']:.3f} | {r['mask_area_fraction']:.3f} |")
    return "\n".join(lines)


@click.command(help=__doc__.splitlines()[0])
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", default="vit", show_default=True,
              type=click.Choice([k for k in MODEL_KINDS if KINDS[k].attention]))
@click.option("--limit", type=int, default=None, help="At most this many validation tumour images.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the numbers here.")
def main(run: Path, model: str, limit: int | None, json_out: Path | None) -> None:
    res = study(run, model, limit)
    if json_out:
        write_json_atomic(json_out, res)
    click.echo(markdown(res))


if __name__ == "__main__":
    main()
