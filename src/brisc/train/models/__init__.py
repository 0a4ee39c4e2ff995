"""The three brisc models behind one surface: ``forward(pixel_values, output_attentions) -> ClassifierOutput``.

``ARCHITECTURES`` is the torch side of the one registry of model kinds (``brisc.kinds.KINDS`` holds names, display
names and explanation methods): how each kind is built, rebuilt from its config.json, and its architecture presets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from brisc.kinds import MODEL_KINDS
from brisc.train.models.common import ClassifierOutput, ModelLoadError
from brisc.train.models.hf_vit import DEFAULT_HF_MODEL, HFViTClassifier
from brisc.train.models.sae import SAE_PRESETS, SAEConfig, StackedAutoencoder
from brisc.train.models.vit import VIT_PRESETS, ViTConfig, VisionTransformer


@dataclass(frozen=True)
class Architecture:
    build: Callable  # (architecture config, hf_model) -> a fresh model
    from_dict: Callable[[dict], nn.Module]  # config.json's "model" entry -> the same architecture, untrained
    presets: dict | None  # preset name -> architecture config; None: the architecture comes with the weights


ARCHITECTURES: dict[str, Architecture] = {
    "vit": Architecture(build=lambda cfg, hf: VisionTransformer(cfg),
                        from_dict=lambda d: VisionTransformer(ViTConfig(**d)), presets=VIT_PRESETS),
    "hf_vit": Architecture(build=lambda cfg, hf: HFViTClassifier.from_pretrained(hf),
                           from_dict=HFViTClassifier.from_config_dict, presets=None),
    "sae": Architecture(build=lambda cfg, hf: StackedAutoencoder(cfg),
                        from_dict=lambda d: StackedAutoencoder(SAEConfig(**{**d, "hidden": tuple(d["hidden"])})),
                        presets=SAE_PRESETS),
}


def _architecture(kind: str) -> Architecture:
    if kind not in ARCHITECTURES:
        raise ModelLoadError(f"unknown model '{kind}' (choose from {', '.join(MODEL_KINDS)})")
    return ARCHITECTURES[kind]


def preset_config(kind: str, preset: str) -> ViTConfig | SAEConfig | None:
    """The architecture a preset gives ``kind``; None for the HF ViT, whose architecture comes with its weights."""
    presets = _architecture(kind).presets
    return None if presets is None else presets[preset]


def build_model(kind: str, config: ViTConfig | SAEConfig | None = None, *, hf_model: str = DEFAULT_HF_MODEL) -> nn.Module:
    """A fresh model of ``kind`` with the architecture ``config`` (``preset_config`` gives a preset's); the HF
    ViT from its pretrained weights ``hf_model`` (hub id or local directory)."""
    return _architecture(kind).build(config, hf_model)


def model_config_dict(model: nn.Module) -> dict:
    return model.config_dict() if isinstance(model, HFViTClassifier) else model.config.to_dict()


def model_from_config(kind: str, config: dict) -> nn.Module:
    """Rebuild a model's architecture from its saved ``config.json`` entry (no network)."""
    return _architecture(kind).from_dict(config)


__all__ = ["ARCHITECTURES", "ClassifierOutput", "ModelLoadError", "MODEL_KINDS", "build_model", "model_from_config",
           "model_config_dict", "preset_config", "VisionTransformer", "ViTConfig", "HFViTClassifier", "StackedAutoencoder",
           "SAEConfig"]
