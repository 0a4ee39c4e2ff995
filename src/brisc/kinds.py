"""The one list of model kinds, of explanation methods and of validation split methods (torch-free and light, so
that `--help` stays fast): train, export, inference, the reports and the command-line options read them from here.

A kind's builder (torch) lives in ``brisc.train.models``, keyed by the same names; its presets beside its
model (``VIT_PRESETS``, ``SAE_PRESETS``) and its training presets in ``brisc.train.config.TRAIN_PRESETS``.
"""

from __future__ import annotations

from dataclasses import dataclass

# How validation is carved from train (brisc.data.make_splits): group: whole groups of look-alike slices
# (brisc.grouping); random: per image.
SPLIT_METHODS = ("group", "random")


@dataclass(frozen=True)
class ModelKind:
    name: str  # as on the command line and in run folders: vit, hf_vit, sae
    display: str  # in tables and figures
    attention: bool  # has [CLS] attention (rollout and cls maps, mask guidance)

    @property
    def explain_methods(self) -> tuple[str, ...]:
        """The maps an exported graph of this kind offers to brisc-infer (sidecar ``explain_methods``)."""
        return (("rollout", "cls") if self.attention else ("saliency",)) + ("occlusion",)


KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("vit", "home-made ViT", attention=True),
    ModelKind("hf_vit", "HF ViT (fine-tuned)", attention=True),
    ModelKind("sae", "stacked autoencoders", attention=False),
)}
MODEL_KINDS: tuple[str, ...] = tuple(KINDS)
# The preset names every recipe table is keyed by (TRAIN_PRESETS, VIT_PRESETS, SAE_PRESETS, brisc-pretrain's PRESETS;
# a test keeps them in step): tiny for tests, cpu for 2 cores, gpu for one GPU.
PRESET_NAMES: tuple[str, ...] = ("tiny", "cpu", "gpu")

# Every explanation method, by the name `brisc-infer --explain`, the sidecar and the studies use.
EXPLAIN_METHODS: dict[str, str] = {
    "rollout": "attention rollout (Abnar & Zuidema 2020): heads averaged, residual added, product over layers",
    "cls": "one layer's [CLS] attention over the patches, heads averaged (cls:layer=K; the last layer by default)",
    "saliency": "input-gradient x input of the predicted class (the SAE's in-graph map)",
    "occlusion": "the drop in the predicted class's probability when each 16x16 patch is greyed (any model)",
}
# brisc-infer --explain: `auto` is the graph's own recommended heatmap (its sidecar names it).
INFER_EXPLAIN_CHOICES: tuple[str, ...] = ("auto", "rollout", "cls", "occlusion")


def display_name(kind: str) -> str:
    return KINDS[kind].display if kind in KINDS else kind
