"""The home-made Vision Transformer, written from scratch (ViT, Dosovitskiy et al. 2021). One file, long on purpose:
the whole model reads top to bottom (stems, attention, blocks, the transformers weight mapping), as in nanoGPT.

224x224 image -> 16x16 patches (196) -> linear patch embedding -> [CLS] + learned positions ->
(optional registers) -> pre-norm transformer encoder -> LayerNorm -> head on [CLS]. ``stem="conv"`` makes
the same 14x14 tokens with four stride-2 3x3 convolutions instead (Xiao et al. 2021, "Early convolutions
help transformers see better"): every later part, and the exported graph's outputs, stay as they are.

Token order: [CLS], [DIST] (with ``distill_token``), R registers, 196 patches (``num_prefix_tokens`` =
1 + [DIST] + R). Registers carry no position; they give the encoder somewhere other than the patches to
park global information (the attention sinks on border tokens), and every map reads the [CLS] row over the
patches only. [DIST] (DeiT, Touvron et al. 2021) has its own head, trained toward a teacher's predictions
(``brisc.train.distill``); ``logits`` is the mean of the two heads, as DeiT predicts.

Two attention paths: fused (``F.scaled_dot_product_attention``) for speed, and an explicit softmax
used whenever the attention weights are asked for (or ``fused_attn`` is switched off for export).
Both give the same logits (tested). For export, ``set_head_major`` writes q, k, v per head straight out of their
products and ``prefix_only_last`` runs the last block for the prefix tokens only: same numbers, a leaner graph
(``brisc.export.wrapper.ExportWrapper``). Parameter layout follows timm; ``load_hf_vit_state`` maps a
transformers ``ViTForImageClassification`` onto it (the parity test).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from brisc.train.models.common import ClassifierOutput


@dataclass(frozen=True, kw_only=True)
class ViTConfig:
    image_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 4
    dim: int = 192
    depth: int = 6
    heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop: float = 0.0  # dropout on the residual branches
    attn_drop: float = 0.0  # dropout on the attention weights
    drop_path: float = 0.1  # stochastic depth (max rate, linear over depth): the regulariser small-data ViTs need most
    head_hidden: int = 0  # 0: linear head (ViT fine-tuning recipe); >0: MLP head with one tanh hidden layer (ViT pre-training)
    norm_eps: float = 1e-6  # timm's value; transformers' ViT uses 1e-12 (set it for parity)
    registers: int = 0  # learnable tokens after [CLS] without position (Darcet et al. 2024), dropped at the output
    stem: str = "patch"  # "patch": one 16x16 stride-16 convolution; "conv": ConvStem (patch_size 16 only)
    distill_token: bool = False  # DeiT's [DIST] token and head; needs a teacher (TrainConfig.distill_from)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: [CLS], [DIST] and the registers."""
        return 1 + int(self.distill_token) + self.registers

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size


VIT_PRESETS: dict[str, ViTConfig] = {
    # Fast tests: a few thousand parameters.
    "tiny": ViTConfig(dim=32, depth=2, heads=2, mlp_ratio=2.0, drop_path=0.0),
    # 2 CPU cores, BRISC train split: ~80 min for the 40-epoch cpu recipe (fp32, or bf16 where the CPU has it).
    # The conv stem: 0.984 against 0.966 for the patch stem on the group split at 40 epochs (docs/results.md);
    # --set vit.stem=patch for the transformers-compatible embedding (e.g. --init from brisc-pretrain).
    "cpu": ViTConfig(dim=192, depth=6, heads=3, head_hidden=192, drop_path=0.1, registers=4, stem="conv"),
    # ViT-S/16 for a GPU.
    "gpu": ViTConfig(dim=384, depth=12, heads=6, head_hidden=384, drop_path=0.1),
}


class PatchEmbed(nn.Module):
    """[B, C, H, W] -> [B, N, D] with a stride-p convolution (= a linear map of each flattened patch)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of patch_size {cfg.patch_size}")
        self.proj = nn.Conv2d(cfg.in_chans, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, D, g, g] -> [B, g*g, D]


class ConvStem(nn.Module):
    """[B, C, 224, 224] -> [B, 196, D]: four 3x3 stride-2 convolutions (BatchNorm, ReLU) widening D/8 -> D,
    then a 1x1 projection (Xiao et al. 2021). Same tokens as PatchEmbed, with a convolution's locality built in."""

    STAGES = 4  # 2**4 = 16: one token per 16x16 patch

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        if cfg.patch_size != 2 ** self.STAGES or cfg.image_size % cfg.patch_size or cfg.dim % 8:
            raise ValueError(f"stem='conv' needs patch_size 16, image_size a multiple of 16 and dim a multiple of 8 "
                             f"(got {cfg.patch_size}, {cfg.image_size}, {cfg.dim})")
        widths = [cfg.in_chans] + [cfg.dim // 8 * 2 ** i for i in range(self.STAGES)]  # 3, D/8, D/4, D/2, D
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(cfg.dim, cfg.dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x)).flatten(2).transpose(1, 2)  # [B, D, g, g] -> [B, g*g, D]


STEMS = {"patch": PatchEmbed, "conv": ConvStem}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = True  # switched off for export: the explicit path has ops every exporter knows
        self.head_major = False  # export: q, k, v made head-major by the matmul itself, see ``_qkv``
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _qkv(self, x: torch.Tensor, queries: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[B, N, C] -> q [B, H, Q, d] (the first ``queries`` tokens, default all), k and v [B, H, N, d]."""
        B, N, C = x.shape
        if not self.head_major:
            qkv = self.qkv(x).reshape(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, N, d]
            q, k, v = qkv.unbind(0)
            return q[:, :, :queries], k, v
        # A view in PyTorch, but a Split and three Transposes in an ONNX graph: instead, [B, 1, N, C] @ [H, C, d]
        # writes each of q, k, v as [B, H, N, d] directly, with no data movement between the products.
        w = self.qkv.weight.view(3, self.heads, self.head_dim, C).transpose(-1, -2)  # [3, H, C, d]
        q, k, v = x[:, :queries].unsqueeze(1) @ w[0], x.unsqueeze(1) @ w[1], x.unsqueeze(1) @ w[2]
        if self.qkv.bias is not None:
            b = self.qkv.bias.view(3, self.heads, 1, self.head_dim)
            q, k, v = q + b[0], k + b[1], v + b[2]
        return q, k, v

    def forward(self, x: torch.Tensor, need_weights: bool = False,
                queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, N, C] -> ([B, Q, C], weights [B, H, Q, N] or None): only the first ``queries`` tokens attend."""
        q, k, v = self._qkv(x, queries)
        B, _, Q, _ = q.shape
        C = x.shape[-1]
        weights = None
        if self.fused_attn and not need_weights:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # [B, H, Q, N]
            x = self.attn_drop(weights) @ v
        x = x.transpose(1, 2).reshape(B, Q, C)  # [B, H, Q, d] -> [B, Q, H*d]
        return self.proj_drop(self.proj(x)), weights


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1, self.act, self.fc2, self.drop = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    def __init__(self, cfg: ViTConfig, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias, cfg.attn_drop, cfg.drop)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio), cfg.drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, need_weights: bool = False,
                queries: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, weights = self.attn(self.norm1(x), need_weights, queries)
        x = x[:, :queries] + self.drop_path(y)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, weights


class VisionTransformer(nn.Module):
    kind = "vit"
    has_attention = True

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.config = cfg
        if cfg.stem not in STEMS:
            raise ValueError(f"unknown stem '{cfg.stem}' (one of: {', '.join(STEMS)})")
        self.patch_embed = STEMS[cfg.stem](cfg)
        n = cfg.grid ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, cfg.dim))  # [CLS] and patches, as in transformers' ViT
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.distill_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.registers, cfg.dim)) if cfg.registers else None
        self.num_prefix_tokens, self.depth = cfg.num_prefix_tokens, cfg.depth
        self.pos_drop = nn.Dropout(cfg.drop)
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(Block(cfg, r) for r in rates)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        if cfg.head_hidden:
            self.head = nn.Sequential(nn.Linear(cfg.dim, cfg.head_hidden), nn.Tanh(), nn.Linear(cfg.head_hidden, cfg.num_classes))
        else:
            self.head = nn.Linear(cfg.dim, cfg.num_classes)
        self.head_dist = nn.Linear(cfg.dim, cfg.num_classes) if cfg.distill_token else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for t in (self.dist_token, self.reg_token):
            if t is not None:
                nn.init.trunc_normal_(t, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def set_fused_attn(self, enabled: bool) -> None:
        for b in self.blocks:
            b.attn.fused_attn = enabled

    def set_head_major(self, enabled: bool) -> None:
        """The q/k/v layout for export (``Attention._qkv``); the same numbers either way."""
        for b in self.blocks:
            b.attn.head_major = enabled

    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token", "dist_token", "reg_token"}

    def forward_features(self, x: torch.Tensor, output_attentions: bool = False, prefix_only_last: bool = False):
        """-> (normalised tokens [B, P+N, D], per-layer attention [B, H, P+N, P+N] or None; P = num_prefix_tokens).

        ``prefix_only_last``: the last block updates only the P prefix tokens, the only ones the heads read, so
        tokens come back [B, P, D] and the last attention [B, H, P, P+N]: the same logits and [CLS] rows for
        ~1/6 less work (the exported graph's outputs need nothing else)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed  # [B, 1+N, D]
        extra = [t.expand(x.shape[0], -1, -1) for t in (self.dist_token, self.reg_token) if t is not None]
        if extra:  # no position: [DIST] and registers are not places in the image
            x = torch.cat([x[:, :1], *extra, x[:, 1:]], dim=1)  # [B, P+N, D]
        x = self.pos_drop(x)
        attentions = []
        for i, block in enumerate(self.blocks):
            last = prefix_only_last and i == len(self.blocks) - 1
            x, w = block(x, output_attentions, self.num_prefix_tokens if last else None)
            attentions.append(w)
        return self.norm(x), (tuple(attentions) if output_attentions else None)

    def forward_head(self, tokens: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """-> (logits [B, classes], ([CLS] head, [DIST] head) or None): with [DIST], logits is the heads' mean."""
        logits = self.head(tokens[:, 0])
        if self.head_dist is None:
            return logits, None
        dist = self.head_dist(tokens[:, 1])
        return (logits + dist) / 2, (logits, dist)

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False,
                prefix_only_last: bool = False) -> ClassifierOutput:
        tokens, attentions = self.forward_features(pixel_values, output_attentions, prefix_only_last)
        logits, heads = self.forward_head(tokens)
        return ClassifierOutput(logits=logits, attentions=attentions, head_logits=heads, features=tokens[:, 0])


def load_hf_vit_state(model: VisionTransformer, hf_state: dict[str, torch.Tensor]) -> list[str]:
    """Copy a transformers ViT state dict into ``model``: a ``ViTForImageClassification`` (same shape, linear
    head) fills every parameter; a ``ViTModel`` (an encoder alone, e.g. brisc-pretrain's output) fills all but
    the heads, the registers and [DIST], which keep their initialisation. Returns the parameters left as they were."""
    if model.config.stem != "patch":
        raise RuntimeError(f"a transformers ViT has a patch embedding; this model has stem='{model.config.stem}' "
                           "(--set vit.stem=patch)")
    pre = "vit." if "vit.embeddings.cls_token" in hf_state else ""
    sd = {
        "cls_token": hf_state[pre + "embeddings.cls_token"],
        "pos_embed": hf_state[pre + "embeddings.position_embeddings"],
        "patch_embed.proj.weight": hf_state[pre + "embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": hf_state[pre + "embeddings.patch_embeddings.projection.bias"],
        "norm.weight": hf_state[pre + "layernorm.weight"],
        "norm.bias": hf_state[pre + "layernorm.bias"],
    }
    if "classifier.weight" in hf_state:
        sd |= {"head.weight": hf_state["classifier.weight"], "head.bias": hf_state["classifier.bias"]}
    for i in range(model.config.depth):
        p = f"{pre}layers.{i}."
        if p + "attention.q_proj.weight" not in hf_state:  # transformers < 5 names
            p = f"{pre}encoder.layer.{i}."
            names = {"q": "attention.attention.query", "k": "attention.attention.key", "v": "attention.attention.value",
                     "o": "attention.output.dense", "fc1": "intermediate.dense", "fc2": "output.dense"}
        else:
            names = {"q": "attention.q_proj", "k": "attention.k_proj", "v": "attention.v_proj",
                     "o": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}
        b = f"blocks.{i}."
        for t in ("weight", "bias"):
            sd[b + f"attn.qkv.{t}"] = torch.cat([hf_state[p + names[k] + f".{t}"] for k in "qkv"])
            sd[b + f"attn.proj.{t}"] = hf_state[p + names["o"] + f".{t}"]
            sd[b + f"mlp.fc1.{t}"] = hf_state[p + names["fc1"] + f".{t}"]
            sd[b + f"mlp.fc2.{t}"] = hf_state[p + names["fc2"] + f".{t}"]
            sd[b + f"norm1.{t}"] = hf_state[p + f"layernorm_before.{t}"]
            sd[b + f"norm2.{t}"] = hf_state[p + f"layernorm_after.{t}"]
    missing, unexpected = model.load_state_dict(sd, strict=False)
    wrong = [k for k in missing if not (k.startswith(("head.", "head_dist.")) or k in ("reg_token", "dist_token"))]
    wrong += list(unexpected)
    if wrong:
        raise RuntimeError(f"not a ViT of this shape: {', '.join(wrong[:5])}")
    return list(missing)
