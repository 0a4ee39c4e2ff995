"""A Hugging Face pretrained ViT, fine-tuned with a new 4-class head and eager attention.

Eager attention, because SDPA cannot return the attention weights that brisc explains with.
Default checkpoint: google/vit-base-patch16-224-in21k (mean/std 0.5, 224/16: the brisc input contract).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from brisc import CLASSES
from brisc.train.models.common import ClassifierOutput, ModelLoadError

DEFAULT_HF_MODEL = "google/vit-base-patch16-224-in21k"


def _labels() -> dict:
    return {"num_labels": len(CLASSES), "id2label": dict(enumerate(CLASSES)),
            "label2id": {c: i for i, c in enumerate(CLASSES)}}


class HFViTClassifier(nn.Module):
    kind = "hf_vit"
    has_attention = True
    num_prefix_tokens = 1  # [CLS]

    def __init__(self, hf_model):
        super().__init__()
        cfg = hf_model.config
        if cfg.image_size != 224 or cfg.patch_size != 16 or cfg.num_channels != 3:
            raise ModelLoadError(f"HF ViT must be 224x224 input with 16x16 patches and 3 channels "
                                 f"(got image_size={cfg.image_size}, patch_size={cfg.patch_size})")
        self.model = hf_model
        self.config = cfg
        self.depth = cfg.num_hidden_layers

    @classmethod
    def from_pretrained(cls, id_or_dir: str) -> "HFViTClassifier":
        """Load pretrained weights (hub id or local directory) and put a fresh 4-class head on top."""
        from transformers import ViTForImageClassification

        try:
            m = ViTForImageClassification.from_pretrained(
                id_or_dir, attn_implementation="eager", ignore_mismatched_sizes=True, **_labels())
        except (OSError, ValueError) as e:
            where = "local directory" if os.path.isdir(id_or_dir) else "hub id"
            raise ModelLoadError(
                f"cannot load HF ViT '{id_or_dir}' ({where}): {str(e).splitlines()[0]} -- without network access, "
                "download it elsewhere and pass the local directory with --hf-model DIR") from None
        return cls(m)

    @classmethod
    def from_config_dict(cls, config: dict) -> "HFViTClassifier":
        """Rebuild the architecture offline from a saved config (weights loaded separately)."""
        from transformers import ViTConfig, ViTForImageClassification

        cfg = ViTConfig.from_dict({**config, **_labels()})
        return cls(ViTForImageClassification._from_config(cfg, attn_implementation="eager"))

    def config_dict(self) -> dict:
        return self.config.to_dict()

    def no_weight_decay(self) -> set[str]:
        return {"model.vit.embeddings.position_embeddings", "model.vit.embeddings.cls_token"}

    def forward(self, pixel_values: torch.Tensor, output_attentions: bool = False) -> ClassifierOutput:
        # ViTForImageClassification's own forward, split so that the [CLS] feature its classifier reads comes out too.
        out = self.model.vit(pixel_values=pixel_values, output_attentions=output_attentions)
        features = out.last_hidden_state[:, 0]
        return ClassifierOutput(logits=self.model.classifier(features), features=features,
                                attentions=tuple(out.attentions) if output_attentions else None)
