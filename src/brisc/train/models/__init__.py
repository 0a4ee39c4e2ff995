"""The three brisc models behind one surface: ``forward(pixel_values, output_attentions) -> ClassifierOutput``."""

from __future__ import annotations

from torch import nn

from brisc.train.models.common import ClassifierOutput, ModelLoadError
from brisc.train.models.hf_vit import DEFAULT_HF_MODEL, HFViTClassifier
from brisc.kinds import MODEL_KINDS
from brisc.train.models.sae import SAE_PRESETS, SAEConfig, StackedAutoencoder
from brisc.train.models.vit import VIT_PRESETS, ViTConfig, VisionTransformer



def preset_config(kind: str, preset: str) -> ViTConfig | SAEConfig | None:
    """The architecture a preset gives ``kind``; None for the HF ViT, whose architecture comes with its weights."""
    return {"vit": VIT_PRESETS, "sae": SAE_PRESETS}[kind][preset] if kind in ("vit", "sae") else None


def build_model(kind: str, *, preset: str = "cpu", hf_model: str = DEFAULT_HF_MODEL,
                config: ViTConfig | SAEConfig | None = None) -> nn.Module:
    """A fresh model of ``kind``: ``config`` or the preset's architecture (the HF ViT from its pretrained weights)."""
    if kind == "vit":
        return VisionTransformer(config or VIT_PRESETS[preset])
    if kind == "sae":
        return StackedAutoencoder(config or SAE_PRESETS[preset])
    if kind == "hf_vit":
        return HFViTClassifier.from_pretrained(hf_model)
    raise ModelLoadError(f"unknown model '{kind}' (choose from {', '.join(MODEL_KINDS)})")


def model_config_dict(model: nn.Module) -> dict:
    return model.config_dict() if isinstance(model, HFViTClassifier) else model.config.to_dict()


def model_from_config(kind: str, config: dict) -> nn.Module:
    """Rebuild a model's architecture from its saved ``config.json`` entry (no network)."""
    if kind == "vit":
        return VisionTransformer(ViTConfig(**config))
    if kind == "sae":
        return StackedAutoencoder(SAEConfig(**{**config, "hidden": tuple(config["hidden"])}))
    if kind == "hf_vit":
        return HFViTClassifier.from_config_dict(config)
    raise ModelLoadError(f"unknown model '{kind}' (choose from {', '.join(MODEL_KINDS)})")


__all__ = ["ClassifierOutput", "ModelLoadError", "MODEL_KINDS", "build_model", "model_from_config",
           "model_config_dict", "preset_config", "VisionTransformer", "ViTConfig", "HFViTClassifier", "StackedAutoencoder", "SAEConfig"]
