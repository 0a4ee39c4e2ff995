"""Choosing the epoch on one half of validation and scoring it on the other (brisc.selection)."""

import numpy as np
import pytest

from brisc.selection import best_epoch, cross_selection, group_halves, validation_halves


def _logits(pred, n_classes=4):
    """One-hot-ish logits for the predicted classes [E, N]."""
    pred = np.asarray(pred)
    return np.where(np.arange(n_classes) == pred[..., None], 5.0, 0.0)


def test_each_half_is_scored_by_the_epoch_chosen_on_the_other():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    half = np.array([True] * 4 + [False] * 4)
    pred = np.array([
        [0, 1, 2, 3, 1, 1, 1, 1],  # epoch 1: half a perfect, half b 1 of 4
        [1, 1, 1, 1, 0, 1, 2, 3],  # epoch 2: half b perfect, half a 1 of 4
        [0, 1, 2, 0, 0, 1, 2, 0],  # epoch 3: 3 of 4 on both: the best on all 8
    ])
    r = cross_selection(_logits(pred), y, half)
    # a is predicted by the epoch chosen on b (2) and b by the one chosen on a (1): 1 + 1 right of 8
    assert r["epochs_chosen"] == {"a": 2, "b": 1}
    assert r["accuracy"] == pytest.approx(2 / 8)
    assert r["best_epoch"] == 3 and r["best_accuracy"] == pytest.approx(6 / 8)
    assert r["last_accuracy"] == pytest.approx(6 / 8) and r["halves"] == [4, 4]
    assert r["accuracy"] < r["best_accuracy"]  # choosing where you score flatters


def test_without_halves_nothing_is_held_apart_but_best_and_last_are_reported():
    y = np.array([0, 1, 2, 3])
    pred = np.array([[0, 1, 2, 3], [0, 1, 2, 0]])
    r = cross_selection(_logits(pred), y, None)
    assert r["accuracy"] is None and r["macro_f1"] is None and r["epochs_chosen"] == {}
    assert r["best_epoch"] == 1 and r["best_accuracy"] == 1.0
    assert r["last_accuracy"] == pytest.approx(3 / 4) and r["halves"] == [4, 0]
    with pytest.raises(ValueError, match="do not match"):
        cross_selection(np.zeros((2, 3, 4)), y, None)


def test_ties_go_to_the_earliest_epoch_and_unknown_epochs_are_never_chosen():
    y = np.array([0, 1, 2, 3])
    same = _logits(np.array([[0, 1, 2, 3]] * 3))
    assert best_epoch(same, y) == 0
    same[0] = np.nan  # an epoch from before the logits were kept
    assert best_epoch(same, y) == 1


def test_mismatched_shapes_and_an_empty_half_are_refused():
    y = np.array([0, 1, 2, 3])
    with pytest.raises(ValueError, match="do not match"):
        cross_selection(np.zeros((2, 3, 4)), y, np.array([True, False, True, False]))
    with pytest.raises(ValueError, match="both halves"):
        cross_selection(np.zeros((2, 4, 4)), y, np.ones(4, bool))


def test_halves_keep_look_alike_groups_whole_and_split_every_class():
    labels = [0] * 6 + [1] * 6
    groups = [0, 0, 2, 3, 4, 5, 6, 6, 6, 9, 10, 11]
    half = group_halves(labels, groups, seed=1)
    for g in set(groups):
        members = [half[i] for i in range(len(groups)) if groups[i] == g]
        assert len(set(members)) == 1
    for c in (0, 1):
        side = half[np.asarray(labels) == c]
        assert side.any() and not side.all()


def test_validation_with_a_class_of_one_scan_has_no_halves():
    assert validation_halves(["a.png"] * 7, [0, 0, 1, 1, 2, 2, 3]) is None  # pituitary has one scan
    assert validation_halves(["a.png"] * 6, [0, 0, 1, 1, 2, 2]) is None  # and here none
