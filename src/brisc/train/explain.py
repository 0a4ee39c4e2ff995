"""Explanation maps of the PyTorch models, scored against BRISC tumour masks; and the study of which map points at
the lesion:

    python -m brisc.train.explain --run artifacts/runs/brisc-cpu [--model vit] [--limit N]

prints a markdown table (pointing game, energy in mask, beside the mask area as the chance level) for plain rollout,
rollout started at a later layer, rollout with max head fusion, and every layer's [CLS] attention (mean and max over
heads), from the PyTorch model's full attention on the run's validation tumour images. The maps are computed from the
model's named outputs with the numpy reference functions in ``brisc.maps`` (the ones the exported graphs are tested
against).
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from brisc.data import Sample, load_mask
from brisc.fsio import write_json_atomic
from brisc.kinds import KINDS, MODEL_KINDS
from brisc.faithfulness import perturbation_curves, random_maps, rank_correlation, summarise_curves
from brisc.maps import cls_map, resize_map, rollout
from brisc.metrics import energy_in_mask, pointing_chance, pointing_game


@torch.no_grad()
def explanation_maps(model: torch.nn.Module, pixel_values: torch.Tensor) -> dict[str, np.ndarray]:
    """method -> [B, 14, 14] maps in [0, 1]. ViTs: rollout, last-layer [CLS] attention ("cls") and each
    layer's [CLS] attention ("cls:layer=K", as ``brisc-export --heatmap`` names it); SAE: saliency."""
    model.eval()
    if model.has_attention:
        out = model(pixel_values, output_attentions=True)
        att = torch.stack(out.attentions, 1).float().cpu().numpy()  # [B, L, H, N, N]
        p = model.num_prefix_tokens
        rows = att[:, :, :, 0, p:]  # [CLS] over the patches
        maps = {"rollout": rollout(att, prefix=p), "cls": cls_map(rows)}  # brisc.kinds.EXPLAIN_METHODS
        return maps | {f"cls:layer={k + 1}": cls_map(rows, layer=k) for k in range(att.shape[1])}
    logits = model(pixel_values).logits
    return {"saliency": model.saliency(pixel_values, logits).float().cpu().numpy()}


def score_maps(maps: np.ndarray, samples: list[Sample]) -> list[dict]:
    """Per image: pointing-game hit and its chance level, energy inside the mask and the mask's area fraction
    (the energy a uniform map would score)."""
    rows = []
    for m, s in zip(maps, samples):
        mask = load_mask(s.mask)
        up = resize_map(m, mask.shape)
        rows.append({"hit": pointing_game(up, mask), "energy": energy_in_mask(up, mask), "area": float(mask.mean()),
                     "chance": pointing_chance(mask)})
    return rows


def summarise(rows: list[dict]) -> dict:
    rows = [r for r in rows if r["hit"] is not None]
    if not rows:
        return {"n": 0}
    energies = [r["energy"] for r in rows if r["energy"] is not None]  # None: an all-zero map
    return {
        "n": len(rows),
        "pointing_game": float(np.mean([r["hit"] for r in rows])),
        "energy_in_mask": float(np.mean(energies)) if energies else None,
        "mask_area_fraction": float(np.mean([r["area"] for r in rows])),
        "pointing_chance": float(np.mean([r["chance"] for r in rows])),
    }


def torch_predictor(model: torch.nn.Module, batch: int = 32):
    """A PyTorch model as ``brisc.faithfulness``'s predict: images [n, 3, S, S] -> probabilities [n, C]."""
    model.eval()
    device = next(model.parameters()).device

    @torch.no_grad()
    def predict(images: np.ndarray) -> np.ndarray:
        out = [torch.softmax(model(torch.from_numpy(images[i:i + batch]).to(device)).logits.float(), -1).cpu().numpy()
               for i in range(0, len(images), batch)]
        return np.concatenate(out)

    return predict


def faithfulness(model: torch.nn.Module, images: np.ndarray, methods: list[str], *, steps: int = 14) -> dict[str, dict]:
    """Deletion/insertion AUC of each method's maps on ``images`` [B, 3, S, S], and of a random patch order."""
    maps = explanation_maps(model, torch.from_numpy(images).to(next(model.parameters()).device))
    g = next(iter(maps.values())).shape[-1]
    predict = torch_predictor(model)
    chosen = {m: maps[m] for m in methods} | {"random order": random_maps(len(images), g)}
    return {m: summarise_curves(perturbation_curves(predict, images, mp, steps=steps)) for m, mp in chosen.items()}


def randomisation_check(model: torch.nn.Module, images: np.ndarray, method: str, *, seed: int = 0) -> list[dict]:
    """Model-randomisation sanity check (Adebayo et al. 2018), cascading from the top: re-initialise the head,
    then the head and the last layer, and so on down to the first layer, and compare each model's ``method``
    maps with the trained model's (Spearman rank correlation per image, mean). A map that stays the same
    when the weights it should depend on are random explains nothing about the model."""
    import copy

    x = torch.from_numpy(images).to(next(model.parameters()).device)
    ref = explanation_maps(model, x)[method]
    rand = copy.deepcopy(model)
    layers = rand.blocks if hasattr(rand, "blocks") else rand.model.vit.encoder.layer  # home-made ViT | HF ViT
    head = rand.head if hasattr(rand, "head") else rand.model.classifier
    torch.manual_seed(seed)
    rows = []
    for k in range(len(layers) + 1):  # k = number of top layers re-initialised, besides the head
        parts = [head] + list(layers[len(layers) - k:])
        for part in parts:
            for m in part.modules():
                if isinstance(m, torch.nn.Linear):
                    torch.nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        torch.nn.init.normal_(m.bias, std=0.02)
        corr = rank_correlation(ref, explanation_maps(rand, x)[method])
        rows.append({"randomised": "head" + (f" + top {k} layers" if k else ""), "rank_correlation": float(np.mean(corr))})
    return rows


def explanation_quality(model, samples: list[Sample], *, device, batch: int = 16) -> dict:
    """Pointing game and energy-in-mask of each explanation method on the validation tumour masks."""
    with_mask = [s for s in samples if s.mask]
    if not with_mask:
        return {}
    from brisc.imageio import DEFAULT as PREP
    from brisc.train.dataset import ScanDataset, eval_transform

    ds = ScanDataset(with_mask, eval_transform(PREP), PREP)
    rows: dict[str, list] = {}
    for i in range(0, len(ds), batch):
        chunk = list(range(i, min(i + batch, len(ds))))
        x = torch.stack([ds[j][0] for j in chunk]).to(device)
        for method, maps in explanation_maps(model, x).items():
            rows.setdefault(method, []).extend(score_maps(maps, [with_mask[j] for j in chunk]))
    return {method: summarise(r) for method, r in rows.items()}


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
    from brisc.data import discover
    from brisc.imageio import load
    from brisc.runfolder import RunFolder
    from brisc.train.checkpoint import load_model

    model = load_model(run, kind)
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
