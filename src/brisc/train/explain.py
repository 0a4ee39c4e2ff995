"""Explanation maps of the PyTorch models, scored against BRISC tumour masks.

The maps are computed from the model's named outputs with the numpy reference functions in
``brisc.maps`` (the same ones the exported graphs are tested against).
"""

from __future__ import annotations

import numpy as np
import torch

from brisc.data import Sample, load_mask
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
