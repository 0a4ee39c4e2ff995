"""Metrics on known cases: calibration (the temperature is recovered; the cross-fitted ECE is measured on images it
was not fitted on) and the explanation scores against masks."""

import numpy as np
import pytest

from brisc.metrics import (cross_fitted_ece, ece_sampling_floor, energy_in_mask, expected_calibration_error,
                           fit_temperature, pointing_game, softmax)


def _overconfident(n=4000, k=4, factor=3.0, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(k, 0.7), size=n)  # the true class probabilities
    y = np.array([rng.choice(k, p=row) for row in p])
    return factor * np.log(p), y  # logits whose softmax is p**3, renormalised: overconfident


def test_temperature_undoes_overconfidence_and_cross_fitting_stays_honest():
    logits, y = _overconfident()
    t = fit_temperature(logits, y)
    assert 2.6 < t < 3.4  # the factor the logits were sharpened by
    raw = expected_calibration_error(softmax(logits), y)
    fitted = expected_calibration_error(softmax(logits, t), y)
    crossed = cross_fitted_ece(logits, y)
    assert raw > 0.1 and fitted < 0.03 and crossed < 0.04  # calibrated, also on the half it was not fitted on
    assert crossed == cross_fitted_ece(logits, y)  # seeded halves


def test_ece_floor_is_what_a_calibrated_model_scores_and_shrinks_with_more_images():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.full(4, 0.7), size=4000)
    y = np.array([rng.choice(4, p=row) for row in p])  # labels drawn from p: calibrated by construction
    small, large = ece_sampling_floor(p[:250]), ece_sampling_floor(p)
    assert large < small < 0.1
    assert abs(expected_calibration_error(p, y) - large) < 0.015  # a calibrated model sits at its floor
    assert expected_calibration_error(softmax(3 * np.log(p)), y) > 3 * large  # an overconfident one does not
    assert ece_sampling_floor(np.eye(4)[y]) == 0.0  # certain and right: no sampling noise


def test_mask_metric_functions_on_known_lesions(synth_root):
    from brisc.data import discover, load_mask

    for s in [x for x in discover(synth_root).samples if x.mask][:6]:
        mask = load_mask(s.mask)
        oracle = mask.astype(np.float64)
        assert pointing_game(oracle, mask) is True and energy_in_mask(oracle, mask) == 1.0
        ys, xs = np.nonzero(mask)
        h, w = mask.shape
        corner = max(((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)),
                     key=lambda c: (c[0] - ys.mean()) ** 2 + (c[1] - xs.mean()) ** 2)
        far = np.zeros_like(oracle)
        far[corner] = 1  # a peak at the image corner farthest from the lesion
        assert pointing_game(far, mask) is False and energy_in_mask(far, mask) == 0.0
        assert energy_in_mask(np.ones_like(oracle), mask) == pytest.approx(mask.mean())


def test_pointing_chance_equals_the_brute_force_share_on_the_same_samples():
    """Measuring outside samples against the mask's border only gives the distances to the whole mask."""
    from brisc.metrics import pointing_chance

    mask = np.zeros((200, 300), bool)
    mask[40:60, 100:120] = True
    mask[150:199, 0:30] = True  # touching the image border
    rng = np.random.default_rng(0)
    py, px = rng.integers(0, 200, 2000), rng.integers(0, 300, 2000)  # the function's own sample (seed 0)
    ys, xs = np.nonzero(mask)
    brute = ((py[:, None] - ys[None]) ** 2 + (px[:, None] - xs[None]) ** 2).min(1) <= 15 ** 2
    assert pointing_chance(mask) == brute.mean()
    dilated = (20 * 20 + 4 * 20 * 15 + np.pi * 15 ** 2 + 49 * 30 + 15 * (49 + 30) + np.pi * 15 ** 2 / 4) / (200 * 300)
    assert abs(pointing_chance(mask) - dilated) < 0.02  # the exact share of the image, within sampling noise


def test_box_mean_matches_the_windows_it_averages_at_edges_and_corners():
    from brisc.maps import _box

    x = np.random.default_rng(0).random((37, 29))
    for r in (1, 4):
        want = np.array([[x[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean() for j in range(29)]
                         for i in range(37)])
        np.testing.assert_allclose(_box(x, r), want, atol=1e-12)


def test_guided_upsampling_moves_a_coarse_map_onto_the_bright_lesion_it_covers():
    from brisc.maps import guided_upsample, resize_map

    scan = np.full((224, 224), 40, np.uint8)
    yy, xx = np.mgrid[:224, :224]
    lesion = (yy - 70) ** 2 + (xx - 150) ** 2 <= 12 ** 2  # a bright disc smaller than the map's block around it
    scan[lesion] = 220
    coarse = np.zeros((14, 14))
    coarse[3:6, 8:11] = 1.0  # the patches around the disc: coarse, as a 14x14 map is
    bilinear = resize_map(coarse, scan.shape)
    np.testing.assert_allclose(guided_upsample(coarse, scan, power=0), bilinear / bilinear.max(), atol=1e-6)
    energies = [energy_in_mask(guided_upsample(coarse, scan, power=k), lesion) for k in (0, 1, 2, 4)]
    assert energies == sorted(energies) and energies[2] > energies[0] + 0.15  # the default power 2: 0.19 -> 0.39
    guided = guided_upsample(coarse, scan)
    assert guided.shape == scan.shape and guided.min() >= 0 and guided.max() == pytest.approx(1.0)
    assert pointing_game(guided, lesion)


def test_stem_refinement_keeps_each_patch_its_share_and_lets_the_stem_place_it():
    from brisc.maps import stem_refine

    rng = np.random.default_rng(0)
    m, a = rng.uniform(0, 1, (14, 14)), rng.gamma(1.0, 1.0, (28, 28))
    fine = stem_refine(m, a, power=2.0)
    assert fine.shape == (28, 28) and fine.max() == pytest.approx(1.0) and fine.min() >= 0
    block = fine.reshape(14, 2, 14, 2).mean((1, 3)).astype(np.float64)
    np.testing.assert_allclose(block / block.max(), m / m.max(), rtol=1e-5)  # every patch keeps the map's share
    nearest = np.repeat(np.repeat(m, 2, 0), 2, 1) / m.max()
    for flat in (stem_refine(m, a, power=0), stem_refine(m, np.ones((28, 28)))):
        np.testing.assert_allclose(flat, nearest, rtol=1e-5)
    # inside a patch, the cell with more activation gets more, the more so the higher the power
    one = np.zeros((14, 14))
    one[5, 5] = 1
    act = np.ones((28, 28))
    act[10, 10] = 3.0
    shares = [stem_refine(one, act, power=p)[10:12, 10:12] for p in (1, 2)]
    assert all(s[0, 0] == s.max() for s in shares) and shares[1][1, 1] < shares[0][1, 1]
    with pytest.raises(ValueError, match="whole multiple"):
        stem_refine(m, np.ones((30, 30)))


def test_stitched_shifted_views_narrow_the_peak_to_the_cells_every_view_covers():
    from brisc.maps import shift_scans, stitch_shifted

    def patch_map(x):  # an ideal model: each patch's mean brightness
        return x.reshape(14, 16, 14, 16).mean((1, 3))

    scan = np.zeros((1, 1, 224, 224))
    scan[..., 100, 100] = 1.0
    shifts = [(0, 0), (0, 8), (8, 0), (8, 8)]
    maps = np.stack([patch_map(shift_scans(scan, dy, dx, fill=0.0)[0, 0]) for dy, dx in shifts])
    one, four = stitch_shifted(maps[:1], shifts[:1]), stitch_shifted(maps, shifts)
    np.testing.assert_allclose(one, np.repeat(np.repeat(maps[0] / maps[0].max(), 16, 0), 16, 1))  # one view: its map
    peak = np.argwhere(four == four.max())
    assert one[100, 100] == four[100, 100] == 1.0 and (one == 1).sum() == 256 and len(peak) == 64  # 16x16 -> 8x8
    assert peak.min(0).tolist() == [96, 96] and peak.max(0).tolist() == [103, 103]
    moved = shift_scans(np.arange(16.0).reshape(1, 1, 4, 4), 1, 2)
    assert moved[0, 0, 1:, 2:].tolist() == [[0, 1], [4, 5], [8, 9]] and (moved[0, 0, 0] == -1).all()
    back = shift_scans(np.arange(16.0).reshape(1, 1, 4, 4), -1, -2)  # up and left
    assert back[0, 0, :3, :2].tolist() == [[6, 7], [10, 11], [14, 15]] and (back[0, 0, 3] == -1).all()
    assert (shift_scans(moved, -1, -2)[0, 0, :3, :2] == np.arange(16.0).reshape(4, 4)[:3, :2]).all()
