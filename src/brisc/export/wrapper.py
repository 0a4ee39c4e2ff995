"""The exported surface of a brisc model: named outputs in a fixed order, the explanations inside the graph.

Outputs (contract): logits [B, 4], probabilities [B, 4] (softmax of logits / temperature),
heatmap [B, 14, 14] in [0, 1]; ViTs also attentions [B, L, H, 196] ([CLS] rows without [CLS]) and
rollout [B, 14, 14]; with ``full_attention`` also attentions_full [B, L, H, 197, 197].
"""

from __future__ import annotations

import torch
from torch import nn

from brisc.maps import FLAT_SPREAD
from brisc.train.models import VisionTransformer


def rollout_torch(att: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, L, H, N, N] -> [B, g, g]: heads averaged, identity added, rows renormalised, product over
    layers, [CLS] row without [CLS], min-max scaled per image (nearly flat maps are not stretched:
    ``brisc.maps.FLAT_SPREAD``). Mirrors ``brisc.maps.rollout``."""
    a = att.double().mean(2)  # [B, L, N, N]; float64: min-max scaling magnifies float32 rounding
    n = a.shape[-1]
    a = a + torch.eye(n, dtype=a.dtype, device=a.device)
    a = a / a.sum(-1, keepdim=True)
    r = a[:, 0]
    for layer in range(1, a.shape[1]):
        r = a[:, layer] @ r
    cls = r[:, 0, 1:]  # [B, N-1]
    lo, hi = cls.min(-1, keepdim=True).values, cls.max(-1, keepdim=True).values
    cls = (cls - lo) / torch.clamp(torch.maximum(hi - lo, FLAT_SPREAD * hi.abs()), min=1e-12)
    return cls.reshape(-1, grid, grid).to(att.dtype)


def output_names(model: nn.Module, full_attention: bool = False) -> list[str]:
    names = ["logits", "probabilities", "heatmap"]
    if model.has_attention:
        names += ["attentions", "rollout"] + (["attentions_full"] if full_attention else [])
    return names


class ExportWrapper(nn.Module):
    def __init__(self, model: nn.Module, *, temperature: float = 1.0, full_attention: bool = False):
        super().__init__()
        self.model = model.eval()
        if isinstance(model, VisionTransformer):
            model.set_fused_attn(False)  # the explicit softmax path: plain ops every exporter knows
        self.temperature = float(temperature)
        self.full_attention = full_attention
        self.names = output_names(model, full_attention)
        cfg = model.config  # 14 for every brisc ViT (224 / 16); unused by the SAE
        self.grid = cfg.grid if isinstance(model, VisionTransformer) else getattr(cfg, "image_size", 224) // getattr(cfg, "patch_size", 16)
        self.eval()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.model.has_attention:
            out = self.model(pixel_values, output_attentions=True)
            att = torch.stack(out.attentions, 1)  # [B, L, H, N, N]
            rollout = rollout_torch(att, self.grid)
            cls = att[:, :, :, 0, 1:]  # [B, L, H, N-1]
            probs = torch.softmax(out.logits / self.temperature, -1)
            extra = (att,) if self.full_attention else ()
            # heatmap = the recommended map (rollout); a separate tensor so both outputs exist in the graph.
            return (out.logits, probs, rollout.clone(), cls, rollout, *extra)
        logits = self.model(pixel_values).logits
        probs = torch.softmax(logits / self.temperature, -1)
        return (logits, probs, self.model.saliency(pixel_values, logits))


def heatmap_method(model: nn.Module) -> str:
    if model.has_attention:
        return "attention rollout (mean over heads, identity added, rows renormalised, product over layers, [CLS] row)"
    return "input-gradient x input saliency of the predicted class on the model's 56x56 grayscale view, 4x4 pooled"
