"""The training recipe: ``TrainConfig`` and the presets (``tiny`` for tests, ``cpu``, ``gpu``) per model kind.

Architecture presets live beside each model (``VIT_PRESETS``, ``SAE_PRESETS``); ``--set kind.field=value``
overrides either (``brisc.train.overrides``), and the run's config.json records the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from brisc.train.dataset import AugmentConfig


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    min_lr_ratio: float = 0.01  # cosine floor, as a fraction of lr
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    clip_grad: float = 1.0
    bf16: bool = True  # autocast where it is native (brisc.hardware.choose_bf16): ~1.5x on AVX-512 BF16/AMX CPUs
    num_workers: int = 2
    eval_batch_size: int = 64
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pretrain_epochs: int = 0  # SAE only: greedy layer-wise epochs per layer
    pretrain_lr: float = 1e-3
    # Mask-guided attention (ViTs; brisc.train.guidance): weight 0 is off. Layers count from 1 like
    # `--heatmap cls:layer=K` (-1: the last); blur is the target's Gaussian sigma in patches; floor the
    # uniform share of the target, so no patch outside the lesion is driven to zero attention.
    guide_weight: float = 0.0
    guide_layers: tuple[int, ...] = (-1,)
    guide_blur: float = 1.0
    guide_floor: float = 0.05
    guide_exclude: str = ""  # a file of image names whose masks guidance ignores (scripts/mask_audit.py flagged.txt)
    # "pil": DataLoader over ScanDataset, one image at a time (exactly the runs in docs/results.md); "tensor":
    # whole batches augmented on the training device (brisc.train.batches), the GPU path.
    loader: str = "pil"
    cutmix: float = 0.0  # share of batches CutMixed on the 16-px patch grid, masks included (brisc.train.mixing)
    distill_from: str = ""  # RUN/KIND or an exported .onnx: the teacher of a ViT with distill_token (brisc.train.distill)
    distill_tau: float = 0.0  # 0: the teacher's top class (DeiT's hard form); > 0: its distribution at this temperature
    # Outlier exposure (brisc.train.outliers): procedural non-scans per scan of a batch, trained toward the uniform
    # distribution with this weight (Hendrycks et al. 2019 use 0.5). 0 is off.
    outliers: float = 0.0
    outlier_weight: float = 0.5
    # Exponential moving average of the weights (brisc.train.ema): when on, the average is what is evaluated each
    # epoch, selected and shipped; the raw weights' validation accuracy is logged beside it. 0 is off.
    ema: float = 0.0
    # The training's randomness (initialisation, batch order, augmentation); -1 takes --seed, which also draws the
    # split. Another value trains a second model on the same split (a second seed of a recipe, an ensemble member).
    seed: int = -1

    def to_dict(self) -> dict:
        return asdict(self)


LOADERS = ("pil", "tensor")
# Every preset trains with outlier exposure, an eighth as many procedural outliers as scans in each batch (~12% more
# work an epoch), so that a blank frame or a photograph gets no confident class. On the cpu preset (group split) an
# eighth gave 0.988 where a quarter gave 0.976, with blank frames as uniform (docs/archive/results-2026-12.md).
OE = {"outliers": 0.125}
_TINY = TrainConfig(epochs=2, batch_size=8, lr=1e-3, warmup_epochs=0.5, bf16=False, num_workers=0, eval_batch_size=16, **OE)
TRAIN_PRESETS: dict[str, dict[str, TrainConfig]] = {
    "tiny": {"vit": _TINY, "hf_vit": replace(_TINY, lr=1e-4), "sae": replace(_TINY, pretrain_epochs=2)},
    "cpu": {
        # ~120 s an epoch on 2 Xeon cores with the conv stem (38 img/s, fp32): 40 epochs is ~80 minutes. No loader
        # workers: the model already keeps both cores busy, and re-forking a process that holds the image cache costs
        # more than augmenting in the main process (~1.5 ms an image against ~26 ms of training).
        # Light augmentation: the from-scratch ViT underfits this data (train accuracy below validation), and the
        # sweep in docs/archive/results-2026-11.md found rotation 5 without zoom/shift better than rotation 15, zoom
        # 0.9-1.1, shift 5%. Mask guidance of the last layer's [CLS] attention (the same archive): maps on the lesion,
        # and +6 points.
        # The unblurred target (floor 0.02) at weight 2 beat the blurred one at weight 1 in the 6-epoch ablation
        # (0.824 / pointing 0.789 / energy 0.312 against 0.792 / 0.728 / 0.126).
        "vit": TrainConfig(epochs=40, batch_size=64, lr=1e-3, warmup_epochs=3, num_workers=0,
                           augment=AugmentConfig(rotation=5.0), guide_weight=2.0, guide_blur=0.0, guide_floor=0.02, **OE),
        # The transformers ViT from a brisc-pretrain encoder takes the home-made ViT's recipe: without guidance it
        # stalled at 0.85 (docs/archive/results-2026-11.md, "The HF ViT with mask guidance"). Other
        # checkpoints: HF_PRETRAINED_ELSEWHERE.
        "hf_vit": TrainConfig(epochs=40, batch_size=64, lr=1e-3, warmup_epochs=3, num_workers=0,
                              augment=AugmentConfig(rotation=5.0), guide_weight=2.0, guide_blur=0.0, guide_floor=0.02, **OE),
        "sae": TrainConfig(epochs=60, batch_size=64, lr=1e-3, weight_decay=1e-4, pretrain_epochs=10, bf16=False, **OE),
    },
    "gpu": {
        # Whole batches augmented on the GPU (loader "tensor"): 0.85 of the bare training step on an H200, where the
        # PIL loader fed 0.46 (benchmarks/loader_speed.py). ViT-S with the cpu preset's guidance and light
        # augmentation: 0.990 on the group split at epoch 69 (this preset alone on an H200, 88 epochs in 270 s),
        # where rotation 15 + zoom + shift without guidance was at 0.878 after 80 epochs
        # (docs/archive/results-2026-11.md, "The GPU path").
        "vit": TrainConfig(epochs=100, batch_size=128, lr=1e-3, warmup_epochs=5, num_workers=8, loader="tensor",
                           augment=AugmentConfig(rotation=5.0), guide_weight=2.0, guide_blur=0.0, guide_floor=0.02, **OE),
        # From the cpu MAE encoder (192 x 6, 10 epochs) on an H200: 0.966 at lr 1e-3 (best epoch 46 of 60), 0.960 at
        # 5e-4 for 60 or 100 epochs.
        "hf_vit": TrainConfig(epochs=60, batch_size=64, lr=1e-3, warmup_epochs=3, num_workers=8, loader="tensor",
                              augment=AugmentConfig(rotation=5.0), guide_weight=2.0, guide_blur=0.0, guide_floor=0.02, **OE),
        "sae": TrainConfig(epochs=60, batch_size=128, lr=1e-3, weight_decay=1e-4, pretrain_epochs=10, num_workers=8,
                           loader="tensor", **OE),
    },
}

# The hf_vit presets above fine-tune an encoder from brisc-pretrain: in-domain MAE, barely past its initialisation, so
# it trains like a new model. A checkpoint pretrained elsewhere (ImageNet-21k from the hub, the --hf-model default)
# would lose what it learned at lr 1e-3: it is fine-tuned gently instead, these fields replacing the preset's
# (--epochs, --lr and --set still win). The tiny preset keeps its own for the tests' random checkpoints.
HF_PRETRAINED_ELSEWHERE: dict[str, dict] = {
    "cpu": {"epochs": 5, "batch_size": 32, "lr": 5e-5, "warmup_epochs": 0.5},
    "gpu": {"epochs": 10, "lr": 5e-5, "warmup_epochs": 1},
}
