"""The exported surface of a brisc model: named outputs in a fixed order, the explanations inside the graph.

Outputs (contract): logits [B, 4], probabilities [B, 4] (softmax of logits / temperature),
heatmap [B, 14, 14] in [0, 1]; ViTs also attentions [B, L, H, 196] ([CLS] rows without [CLS]) and
rollout [B, 14, 14]; with ``full_attention`` also attentions_full [B, L, H, 197, 197]; last, with an
``OODHead``, ood_score [B] (higher = less like the training scans, ``brisc.export.ood``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from brisc.maps import FLAT_SPREAD
from brisc.train.models import VisionTransformer


@dataclass(frozen=True)
class HeatmapSpec:
    """Which map the graph's ``heatmap`` output recommends (ViTs). Text form for the CLI:
    ``rollout``, ``rollout:start=3``, ``rollout:max``, ``cls``, ``cls:layer=4``, ``cls:layer=4:max``,
    ``cls:layer=4:head=2`` (one head's row; layers and heads 1-based)."""

    method: str = "rollout"  # rollout | cls
    start_layer: int = 0  # rollout: first layer multiplied in (0-based)
    head_fusion: str = "mean"  # mean | max
    layer: int = -1  # cls: which layer's [CLS] row (0-based; -1 = last)
    head: int = -1  # cls: one head's row instead of the fusion over heads (0-based; -1 = all heads, fused)

    @classmethod
    def parse(cls, text: str) -> "HeatmapSpec":
        method, *opts = text.strip().lower().split(":")
        kw: dict = {"method": method}
        for o in opts:
            if o in ("mean", "max"):
                kw["head_fusion"] = o
            elif o.startswith("start=") and method == "rollout":
                kw["start_layer"] = int(o[6:]) - 1
            elif o.startswith("layer=") and method == "cls":
                kw["layer"] = int(o[6:]) - 1
            elif o.startswith("head=") and method == "cls":
                kw["head"] = int(o[5:]) - 1
            else:
                raise ValueError(f"bad heatmap option '{o}' in '{text}'")
        if method not in ("rollout", "cls"):
            raise ValueError(f"unknown heatmap method '{method}' (rollout or cls)")
        return cls(**kw)

    def describe(self) -> str:
        if self.method == "rollout":
            return (f"attention rollout ({self.head_fusion} over heads, identity added, rows renormalised, product over "
                    f"layers {self.start_layer + 1}..L, [CLS] row)")
        layer = "the last layer" if self.layer == -1 else f"layer {self.layer + 1}"
        heads = f"head {self.head + 1}" if self.head >= 0 else f"{self.head_fusion} over heads"
        return f"[CLS] attention of {layer} ({heads})"


def _scale(cls: torch.Tensor, grid: int, dtype) -> torch.Tensor:
    """[B, N-1] -> [B, g, g] min-max scaled per image (nearly flat maps are not stretched: FLAT_SPREAD)."""
    lo, hi = cls.amin(-1, keepdim=True), cls.amax(-1, keepdim=True)
    cls = (cls - lo) / torch.clamp(torch.maximum(hi - lo, FLAT_SPREAD * hi.abs()), min=1e-12)
    return cls.reshape(-1, grid, grid).to(dtype)


def cls_map_torch(atts: Sequence[torch.Tensor], grid: int, layer: int = -1, head_fusion: str = "mean",
                  prefix: int = 1, head: int = -1) -> torch.Tensor:
    """L x [B, H, N, N] -> [B, g, g]: one layer's [CLS] row over the patches, fused over heads (or one ``head``)."""
    row = atts[layer][:, :, 0, prefix:].double()  # [B, H, patches]
    fused = row[:, head] if head >= 0 else row.mean(1) if head_fusion == "mean" else row.amax(1)
    return _scale(fused, grid, atts[0].dtype)


def rollout_torch(atts: Sequence[torch.Tensor], grid: int, start_layer: int = 0, head_fusion: str = "mean",
                  prefix: int = 1) -> torch.Tensor:
    """L x [B, H, N, N] (the last may hold only its first rows) -> [B, g, g]: heads fused, identity added, rows renormalised, product over
    layers, [CLS] row without [CLS], min-max scaled per image. Mirrors ``brisc.maps.rollout``.

    Only the [CLS] row of the product is needed, so it is carried as a row vector from the last layer down
    (e0^T A_L ... A_1): L vector-matrix products instead of L matrix products, and no [B, L, H, N, N] stack."""

    layers = list(atts)[start_layer:]
    if head_fusion == "mean":
        # Softmax rows sum to 1, so (mean_h A + I) has rows summing to 2 and v (mean_h A + I) / 2 is
        # (mean_h (v A_h) + v) / 2: no N x N matrix is formed. v sums to 1 too, so v A = 1/N + v (A - 1/N):
        # the float32 product only carries the map's departure from uniform, which keeps nearly flat maps
        # (stretched by the min-max scaling) as exact as the float64 matrix form; v itself stays float64.
        n = layers[-1].shape[-1]
        v = layers[-1][:, :, :1].mean(1).double() / 2  # [B, 1, N]: the [CLS] row of the last layer
        v[:, :, 0] += 0.5
        for a in reversed(layers[:-1]):
            va = (v.to(a.dtype).unsqueeze(1) @ (a - 1.0 / n)).mean(1).double() + 1.0 / n  # [B, H, 1, N] -> [B, 1, N]
            v = (va + v) / 2
        return _scale(v[:, 0, prefix:], grid, atts[0].dtype)

    def fused(a: torch.Tensor) -> torch.Tensor:  # [B, H, R, N] -> [B, R, N], float64, residual added (R <= N rows)
        a = a.amax(1).double()  # float64: min-max scaling magnifies float32 rounding
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)[: a.shape[-2]]
        return a / a.sum(-1, keepdim=True)

    v = fused(layers[-1])[:, :1]  # [B, 1, N]: the [CLS] row of the last layer
    for a in reversed(layers[:-1]):
        v = v @ fused(a)
    return _scale(v[:, 0, prefix:], grid, atts[0].dtype)  # the [CLS] row over the patches


def output_names(model: nn.Module, full_attention: bool = False, ood: bool = False) -> list[str]:
    names = ["logits", "probabilities", "heatmap"]
    if model.has_attention:
        names += ["attentions", "rollout"] + (["attentions_full"] if full_attention else [])
    return names + (["ood_score"] if ood else [])


class ExportWrapper(nn.Module):
    def __init__(self, model: nn.Module, *, temperature: float = 1.0, full_attention: bool = False,
                 heatmap: HeatmapSpec = HeatmapSpec(), lean: bool = True, ood: nn.Module | None = None):
        """``lean`` (ViTs): compute only what the outputs need, laid out as the graph runs fastest: q, k, v
        head-major and, unless ``full_attention``, the last block for the prefix tokens only. Same numbers as
        ``lean=False``, the model's own attention path (the PyTorch baseline of benchmarks/export_speed.py)."""
        super().__init__()
        self.model = model.eval()
        self.vit, self.lean = isinstance(model, VisionTransformer), lean
        if self.vit:
            model.set_fused_attn(False)  # the explicit softmax path: plain ops every exporter knows
        # Every output reads only the [CLS] row of the last layer, unless the full matrices are asked for.
        self.trim = {"prefix_only_last": True} if self.vit and lean and not full_attention else {}
        self.temperature = float(temperature)
        self.full_attention = full_attention
        self.heatmap = heatmap
        if model.has_attention:
            depth = model.depth
            if not (0 <= heatmap.start_layer < depth and -depth <= heatmap.layer < depth):
                raise ValueError(f"--heatmap asks for a layer the model does not have (it has {depth})")
            heads = model.config.heads if self.vit else model.config.num_attention_heads
            if heatmap.head >= heads:
                raise ValueError(f"--heatmap asks for head {heatmap.head + 1}; the model has {heads}")
        self.ood = ood  # brisc.export.ood.OODHead: (logits, features) -> ood_score
        self.names = output_names(model, full_attention, ood is not None)
        cfg = model.config  # 14 for every brisc ViT (224 / 16); unused by the SAE
        self.grid = cfg.grid if self.vit else getattr(cfg, "image_size", 224) // getattr(cfg, "patch_size", 16)
        self.eval()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.model.has_attention:
            if self.vit:
                self.model.set_head_major(self.lean)  # here, not in __init__: wrappers of both kinds may share a model
            out = self.model(pixel_values, output_attentions=True, **self.trim)
            att = out.attentions  # L x [B, H, N, N] (the last [B, H, P, N] when trimmed)
            p = self.model.num_prefix_tokens
            rollout = rollout_torch(att, self.grid, prefix=p)
            cls = torch.stack([a[:, :, 0, p:] for a in att], 1)  # [B, L, H, patches]: registers dropped here
            probs = torch.softmax(out.logits / self.temperature, -1)
            extra = (torch.stack(att, 1),) if self.full_attention else ()  # [B, L, H, N, N]
            h = self.heatmap
            if h == HeatmapSpec():  # plain rollout: a copy, so both outputs exist in the graph
                heat = rollout.clone()
            elif h.method == "rollout":
                heat = rollout_torch(att, self.grid, h.start_layer, h.head_fusion, prefix=p)
            else:
                heat = cls_map_torch(att, self.grid, h.layer, h.head_fusion, prefix=p, head=h.head)
            return (out.logits, probs, heat, cls, rollout, *extra) + self._ood(out)
        out = self.model(pixel_values)
        probs = torch.softmax(out.logits / self.temperature, -1)
        return (out.logits, probs, self.model.saliency(pixel_values, out.logits)) + self._ood(out)

    def _ood(self, out) -> tuple[torch.Tensor, ...]:
        return () if self.ood is None else (self.ood(out.logits, out.features),)


def heatmap_method(model: nn.Module, spec: HeatmapSpec = HeatmapSpec()) -> str:
    if model.has_attention:
        return spec.describe()
    return "input-gradient x input saliency of the predicted class on the model's 56x56 grayscale view, 4x4 pooled"
