"""The tensor loader (the GPU path): same preprocessing as the PIL path, masks aligned with their images, seeded."""

import json
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from brisc.data import Sample, discover
from brisc.imageio import DEFAULT as PREP
from brisc.train.batches import TensorBatches
from brisc.train.dataset import AugmentConfig, ScanDataset, eval_transform, train_transform

NONE = AugmentConfig(hflip=0.0, rotation=0.0, brightness=0.0, contrast=0.0)
STRONG = AugmentConfig(hflip=0.5, rotation=30.0, brightness=0.0, contrast=0.0, scale=(0.8, 1.2), translate=0.1)


def _dataset(samples, aug, grid=14):
    return ScanDataset(samples, train_transform(aug, PREP), PREP, cache=True, mask_grid=grid)


def test_without_augmentation_batches_equal_the_eval_preprocessing(synth_root):
    samples = [s for s in discover(synth_root).samples if s.split == "train"][:10]
    ds = _dataset(samples, NONE, grid=0)
    ref = torch.stack([eval_transform(PREP)(img) for img, _ in ds.decoded()])  # the PIL path's tensors
    tb = TensorBatches(ds, NONE, PREP, device=torch.device("cpu"), batch_size=4)
    seen = []
    for x, y in tb.epoch(0):
        for xi, yi in zip(x, y):
            diff = (ref - xi).abs().flatten(1).max(1).values  # against every image: the batch order is shuffled
            j = int(diff.argmin())
            assert diff[j] <= 1e-4 and samples[j].label == int(yi)  # identity resampling: float rounding only
            seen.append(j)
    assert len(seen) == 8 and len(set(seen)) == 8  # two full batches of 4, no image twice


def test_masks_go_through_the_same_flip_and_affine_as_their_images(tmp_path):
    """Each image is its own mask drawn in white: after augmentation, the image pooled to the patch grid must
    equal the pooled mask, whatever flip, rotation, zoom and shift were drawn."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(12):
        m = np.zeros((224, 224), np.uint8)
        y0, x0 = rng.integers(20, 150, 2)
        m[y0:y0 + 50, x0:x0 + 30] = 255  # off-centre and not symmetric: a flip or a rotation shows
        Image.fromarray(m).convert("RGB").save(tmp_path / f"{i}.png")
        Image.fromarray(m).save(tmp_path / f"{i}_mask.png")
        samples.append(Sample(path=str(tmp_path / f"{i}.png"), label=i % 4, split="train", sha1=str(i),
                              mask=str(tmp_path / f"{i}_mask.png")))
    tb = TensorBatches(_dataset(samples, STRONG), STRONG, PREP, device=torch.device("cpu"), batch_size=6)
    moved = 0
    for x, _, pooled in tb.epoch(3):
        image = F.avg_pool2d(x[:, :1] * 0.5 + 0.5, 16).flatten(1)  # undo the normalisation, pool like the mask
        assert torch.allclose(image, pooled, atol=1e-5)
        moved += int((pooled.argmax(1) != pooled.argmax(1)[0]).any())
    assert moved  # the draws did move the lesions around


def test_an_epoch_is_the_same_for_the_same_seed_and_another_for_another(synth_root):
    samples = [s for s in discover(synth_root).samples if s.split == "train"][:16]
    aug = replace(STRONG, brightness=0.2, contrast=0.2)
    tb = TensorBatches(_dataset(samples, aug), aug, PREP, device=torch.device("cpu"), batch_size=8)
    a, b, c = (list(tb.epoch(s)) for s in (7, 7, 8))
    assert len(a) == 2 and all(torch.equal(u, v) for p, q in zip(a, b) for u, v in zip(p, q))
    assert not torch.equal(a[0][0], c[0][0])


def test_brisc_train_runs_on_the_tensor_loader_with_guidance(synth_root, tmp_path):
    from conftest import run_cli

    out = tmp_path / "run"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit", "--preset", "tiny", "--out", out,
            "--set", "vit.loader=tensor", "--set", "vit.guide_weight=1", "--wandb", "disabled")
    m = json.loads((out / "vit" / "metrics.json").read_text())
    assert m["complete"] and [h["epoch"] for h in m["history"]] == [1, 2] and all("guide_loss" in h for h in m["history"])
    r = run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit", "--preset", "tiny", "--out", tmp_path / "x",
                "--set", "vit.loader=gpu", "--wandb", "disabled", check=False)
    assert r.returncode == 2 and "choose from pil, tensor" in r.stderr and not (tmp_path / "x").exists()
