"""Mask-guided attention, registers, faithfulness (deletion/insertion) and the randomisation sanity check."""

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from brisc.data import Sample
from brisc.export.loading import load_trained
from brisc.export.onnx import export_onnx
from brisc.export.quantize import logit_error_ratio
from brisc.export.wrapper import ExportWrapper, HeatmapSpec
from brisc.faithfulness import auc, patch_order, perturbation_curves, rank_correlation
from brisc.maps import cls_map, rollout
from brisc.train.dataset import AugmentConfig, ScanDataset, TrainTransform
from brisc.train.explain import randomisation_check
from brisc.train.guidance import guidance_loss, mask_targets, resolve_layers
from brisc.train.models.vit import VIT_PRESETS, VisionTransformer
from dataclasses import replace


def _attention(cls_rows: list[list[float]]) -> tuple[torch.Tensor]:
    """One layer, one head, [CLS] + 4 patches (a 2x2 grid); only the [CLS] row matters."""
    a = torch.full((len(cls_rows), 1, 5, 5), 0.2)
    a[:, 0, 0] = torch.tensor(cls_rows)
    return (a,)


def test_guidance_loss_is_the_kl_to_the_pooled_mask_on_a_hand_made_case():
    # [CLS] gives 0.2 to itself, then 0.4 / 0.2 / 0.1 / 0.1 to the patches: renormalised 0.5 / 0.25 / 0.125 / 0.125.
    att = _attention([[0.2, 0.4, 0.2, 0.1, 0.1], [0.2, 0.4, 0.2, 0.1, 0.1]])
    masks = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]])  # image 2 has no mask: it adds nothing
    got = guidance_loss(att, masks, layers=[0], blur=0.0, floor=0.0)
    assert got.item() == pytest.approx(math.log(2), rel=1e-6)
    t = np.array([0.85, 0.05, 0.05, 0.05])  # floor 0.2: 0.8 x mask + 0.2 x uniform
    a = np.array([0.5, 0.25, 0.125, 0.125])
    got = guidance_loss(att, masks, layers=[0], blur=0.0, floor=0.2)
    assert got.item() == pytest.approx(float((t * np.log(t / a)).sum()), rel=1e-6)


def test_guidance_loss_is_zero_for_a_no_tumour_batch_and_pulls_attention_to_the_mask():
    att = _attention([[0.2, 0.2, 0.2, 0.2, 0.2]] * 3)
    assert guidance_loss(att, torch.zeros(3, 4), layers=[0]).item() == 0.0
    logits = torch.zeros(1, 5, requires_grad=True)  # a [CLS] row as a softmax: gradient descent on the loss
    opt = torch.optim.SGD([logits], lr=1.0)
    for _ in range(50):
        a = torch.full((1, 1, 5, 5), 0.2).clone()
        a[:, 0, 0] = logits.softmax(-1)
        loss = guidance_loss((a,), torch.tensor([[0.0, 0, 1, 0]]), layers=[0], blur=0.0, floor=0.05)
        opt.zero_grad()
        loss.backward()
        opt.step()
    row = logits.softmax(-1)[0, 1:].detach()
    assert row.argmax().item() == 2 and (row / row.sum())[2] > 0.8


def test_mask_targets_blur_and_floor_keep_every_patch_above_zero():
    m = torch.zeros(1, 196)
    m[0, 7 * 14 + 7] = 1.0
    t, has = mask_targets(m, blur=1.0, floor=0.05)
    assert has.tolist() == [True] and t.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert t.min().item() >= 0.05 / 196 - 1e-9 and t.argmax().item() == 7 * 14 + 7
    assert t[0, 7 * 14 + 8] > t[0, 0]  # the blur spreads to the neighbours, not to the corners


def test_guide_layers_count_from_one_and_minus_one_is_the_last():
    assert resolve_layers((-1,), 6) == [5] and resolve_layers((1, 3), 6) == [0, 2]
    with pytest.raises(ValueError, match="outside the model's 6 layers"):
        resolve_layers((7,), 6)


def _square(size=224, box=(60, 40, 110, 90)):
    img = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    img[y0:y1, x0:x1] = 255
    return Image.fromarray(img, "L").convert("RGB"), Image.fromarray(img, "L")


def test_mask_goes_through_the_same_flip_rotation_zoom_and_shift_as_its_image():
    img, mask = _square()
    tf = TrainTransform(AugmentConfig(hflip=0.5, rotation=30, scale=(0.8, 1.2), translate=0.1, brightness=0.2, contrast=0.2))
    moved = 0
    for seed in range(12):
        torch.manual_seed(seed)
        x, m = tf.paired(img, mask)
        lit = x[0] > 0.0  # the square, after jitter, is far brighter than the black background
        inside = m[0] > 0.5
        iou = (lit & inside).sum() / (lit | inside).sum()
        assert iou > 0.97, (seed, float(iou))
        moved += not torch.equal(inside, torch.from_numpy(np.asarray(mask) > 127))
        torch.manual_seed(seed)  # the mask draws no randomness of its own: the image is the same without it
        assert torch.equal(tf(img), x)
    assert moved >= 10  # the augmentation did move the square


def test_dataset_pools_the_augmented_mask_to_the_patch_grid(tmp_path):
    img, mask = _square(box=(32, 48, 64, 80))  # exactly patches (3..4, 2..3) of the 14x14 grid
    img.save(tmp_path / "a.png")
    mask.save(tmp_path / "a_mask.png")
    samples = [Sample(path=str(tmp_path / "a.png"), label=0, split="train", sha1="a", mask=str(tmp_path / "a_mask.png")),
               Sample(path=str(tmp_path / "a.png"), label=2, split="train", sha1="a")]
    ds = ScanDataset(samples, TrainTransform(AugmentConfig(hflip=0.0, rotation=0.0)), cache=True, mask_grid=14)
    x, y, pooled = ds[0]
    grid = pooled.view(14, 14)
    assert y == 0 and grid.sum().item() == pytest.approx(4.0) and grid[3:5, 2:4].eq(1).all()
    assert ds[1][2].sum().item() == 0  # no mask: zeros, so the loss ignores it


def _export(model, tmp_path, images, spec="cls"):
    w = ExportWrapper(model.eval(), heatmap=HeatmapSpec.parse(spec), full_attention=True)
    path = tmp_path / "m.onnx"
    export_onnx(w, path, images=images, opset=18, metadata={})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return w, dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"pixel_values": images})))


@pytest.mark.parametrize("registers,stem,distill", [(0, "patch", False), (3, "patch", False), (2, "conv", False),
                                                     (2, "patch", True)])
def test_prefix_tokens_and_stems_onnx_matches_pytorch_and_maps_cover_patches_only(tmp_path, registers, stem, distill):
    torch.manual_seed(0)
    model = VisionTransformer(replace(VIT_PRESETS["tiny"], registers=registers, stem=stem, distill_token=distill))
    prefix = 1 + distill + registers
    assert model.num_prefix_tokens == prefix
    images = np.random.default_rng(0).uniform(-1, 1, (3, 3, 224, 224)).astype(np.float32)
    if stem == "conv":  # BatchNorm statistics away from their initial 0 / 1, so the graph must carry them
        model.train()
        with torch.no_grad():
            model(torch.from_numpy(images) * 2 + 0.5)
        assert model.patch_embed.convs[1].running_mean.abs().max() > 0
    w, out = _export(model, tmp_path, images)
    with torch.no_grad():
        ref = dict(zip(w.names, (t.numpy() for t in w(torch.from_numpy(images)))))
    full = out["attentions_full"]
    assert full.shape[-1] == prefix + 196 and out["attentions"].shape == (3, 2, 2, 196)
    assert np.array_equal(out["attentions"], full[:, :, :, 0, prefix:])
    for name in ("logits", "attentions", "rollout", "heatmap"):
        assert np.abs(out[name] - ref[name]).max() <= 1e-5, name
    assert np.abs(out["heatmap"] - cls_map(out["attentions"])).max() <= 1e-5
    assert np.abs(out["rollout"] - rollout(full, prefix=prefix)).max() <= 1e-5


def test_registers_change_the_model_only_through_their_tokens():
    torch.manual_seed(0)
    with_regs = VisionTransformer(replace(VIT_PRESETS["tiny"], registers=2)).eval()
    plain = VisionTransformer(VIT_PRESETS["tiny"]).eval()
    plain.load_state_dict({k: v for k, v in with_regs.state_dict().items() if k != "reg_token"})
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        out = with_regs(x, output_attentions=True)
        assert not torch.allclose(out.logits, plain(x).logits)  # the registers take part in attention
    assert out.attentions[0].shape[-1] == 1 + 2 + 196


def test_deletion_and_insertion_auc_on_a_hand_made_model():
    # Class 0's probability = share of patch 0's pixels that are bright. Patch 0 is half bright, half dark,
    # so its mean (the insertion start) is not bright either; every other patch is black.
    img = np.full((1, 3, 224, 224), -1.0, np.float32)
    img[:, :, :16, :8] = 1.0

    def predict(x):
        p0 = np.clip((x[:, 0, :16, :16] > 0.5).mean((1, 2)) * 2, 0, 1)
        return np.stack([p0, 1 - p0], 1)

    first = np.zeros((1, 14, 14))
    first[0, 0, 0] = 1.0  # patch 0 first
    last = np.ones((1, 14, 14))
    last[0, 0, 0] = 0.0  # patch 0 last
    a, b = perturbation_curves(predict, img, first), perturbation_curves(predict, img, last)
    assert a["classes"].tolist() == [0] and a["deletion"][0, 0] == 1.0 and a["deletion"][0, 1] == 0.0
    assert auc(a["deletion"])[0] == pytest.approx(1 / 28) and auc(b["deletion"])[0] == pytest.approx(13.5 / 14)
    assert auc(a["insertion"])[0] == pytest.approx(13.5 / 14) and auc(b["insertion"])[0] == pytest.approx(1 / 28)
    assert patch_order(first)[0, 0] == 0 and patch_order(last)[0, -1] == 0


def test_rank_correlation_and_logit_error_ratio():
    m = np.random.default_rng(0).random((2, 14, 14))
    assert np.allclose(rank_correlation(m, m), 1) and np.allclose(rank_correlation(m, -m), -1)
    fp32 = np.array([[2.0, 0.0], [0.0, 4.0]])  # spreads 2 and 4: mean 3
    assert logit_error_ratio(fp32, fp32 + [[0.3, 0.0], [0.0, 0.0]]) == pytest.approx(0.1)


def test_randomisation_sanity_check_tells_maps_that_depend_on_the_weights(tiny_run, real_images):
    from brisc.imageio import load

    model = load_trained(tiny_run, "vit").model
    images = np.stack([load(p) for p in real_images[:6]])
    last = randomisation_check(model, images, "cls")  # the last layer's [CLS] attention
    first = randomisation_check(model, images, "cls:layer=1")
    assert [r["randomised"] for r in last] == ["head", "head + top 1 layers", "head + top 2 layers"]
    assert last[0]["rank_correlation"] == pytest.approx(1.0)  # the head plays no part in an attention map
    assert last[1]["rank_correlation"] < 0.5  # its own layer re-initialised: the map changes
    assert first[1]["rank_correlation"] == pytest.approx(1.0) and first[2]["rank_correlation"] < 0.5
