"""Explanation maps of the PyTorch models, scored against BRISC tumour masks.

The maps are computed from the model's named outputs with the numpy reference functions in
``brisc.maps`` (the same ones the exported graphs are tested against).
"""

from __future__ import annotations

import numpy as np
import torch

from brisc.data import Sample, load_mask
from brisc.maps import cls_map, resize_map, rollout
from brisc.metrics import energy_in_mask, pointing_chance, pointing_game


@torch.no_grad()
def explanation_maps(model: torch.nn.Module, pixel_values: torch.Tensor) -> dict[str, np.ndarray]:
    """method -> [B, 14, 14] maps in [0, 1]. ViTs: rollout and last-layer [CLS] attention; SAE: saliency."""
    model.eval()
    if model.has_attention:
        out = model(pixel_values, output_attentions=True)
        att = torch.stack(out.attentions, 1).float().cpu().numpy()  # [B, L, H, N, N]
        return {"rollout": rollout(att), "cls": cls_map(att[:, :, :, 0, 1:])}
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
