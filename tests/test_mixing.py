import torch

from brisc.train.mixing import mixed_cross_entropy, patch_cutmix


def _batch(b=4, side=64, patch=16):
    g = side // patch
    # every image constant at its own index, every pooled mask equal to its own index + 1 over the grid
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, side, side).clone()
    masks = (torch.arange(b, dtype=torch.float32) + 1).view(b, 1).expand(b, g * g).clone()
    return x, masks, g


def test_cutmix_pastes_whole_patches_of_the_partner_and_the_same_box_of_its_mask():
    for seed in range(20):
        x, masks, g = _batch()
        mx, mm, partner, lam = patch_cutmix(x, masks, patch=16, generator=torch.Generator().manual_seed(seed))
        assert sorted(partner.tolist()) == [0, 1, 2, 3]
        per_patch = mx[:, 0].unfold(1, 16, 16).unfold(2, 16, 16)  # [B, g, g, 16, 16]
        assert (per_patch == per_patch[..., :1, :1]).all()  # each patch comes whole from one image
        src = per_patch[..., 0, 0].reshape(4, g * g)  # which image each patch came from
        from_partner = src == partner.view(4, 1).float()
        from_self = src == torch.arange(4).view(4, 1).float()
        assert (from_partner | from_self).all()
        assert torch.equal(mm - 1, src)  # the mask moved with its patches
        moved = (from_partner & ~from_self)[partner != torch.arange(4)]  # images with a real partner
        if len(moved):
            assert abs(lam - (1 - moved[0].float().mean().item())) < 1e-6  # lam: the share of patches kept
        assert 0.0 <= lam <= 1.0


def test_cutmix_is_seeded_and_leaves_its_inputs_alone():
    x, masks, _ = _batch()
    a = patch_cutmix(x, masks, patch=16, generator=torch.Generator().manual_seed(3))
    b = patch_cutmix(x, masks, patch=16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[3] == b[3]
    assert torch.equal(x, _batch()[0]) and torch.equal(masks, _batch()[1])
    assert patch_cutmix(x, None, patch=16, generator=torch.Generator().manual_seed(3))[1] is None


def test_mixed_cross_entropy_weights_the_two_labels_by_lam():
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [0.0, 1.0, 0.0, 0.0]])
    y, partner = torch.tensor([0, 1]), torch.tensor([1, 0])
    ce = torch.nn.functional.cross_entropy
    got = mixed_cross_entropy(logits, y, partner, 0.25)
    assert torch.allclose(got, 0.25 * ce(logits, y) + 0.75 * ce(logits, y[partner]))
    assert torch.equal(mixed_cross_entropy(logits, y, None, 1.0), ce(logits, y))
