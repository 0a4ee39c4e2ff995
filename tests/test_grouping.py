"""Group-aware validation: look-alike slices share a group, and no group straddles train and validation."""

import numpy as np
from PIL import Image

from brisc.data import discover, make_splits
from brisc.grouping import THRESHOLD, group_split, look_alike_share, similarity_groups, thumbnail


def _phantom(seed: int, size: int = 192) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size))
    for _ in range(6):  # blobs at random places: two seeds give two unrelated "patients"
        cy, cx, r = rng.uniform(30, size - 30, 2).tolist() + [rng.uniform(10, 40)]
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2)) * rng.uniform(0.3, 1)
    return np.clip(img / img.max() * 255, 0, 255)


def test_identical_and_near_identical_images_share_a_group_and_strangers_do_not(tmp_path):
    a, b = _phantom(1), _phantom(2)
    noise = np.random.default_rng(0).normal(0, 6, a.shape)
    images = {"a.png": a, "a_copy.png": a, "a_noisy.png": a + noise, "a_brighter.png": a * 0.9 + 10,
              "b.png": b, "b_copy.png": b}
    paths = []
    for name, arr in images.items():
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").save(tmp_path / name)
        paths.append(str(tmp_path / name))
    g = similarity_groups(paths, [0] * len(paths))
    assert g[0] == g[1] == g[2] == g[3] and g[4] == g[5] and g[0] != g[4]
    assert similarity_groups(paths[:2], [0, 1]) == [0, 1]  # never across classes
    assert thumbnail(str(tmp_path / "missing.png")) is None


def test_group_split_keeps_groups_whole_per_class_and_is_seeded():
    labels = [k % 2 for k in range(200)]
    groups = [(k // 10) * 2 + k % 2 for k in range(200)]  # 20 groups of 5 per class ... of equal label
    a, b, c = (group_split(labels, groups, 0.1, seed) for seed in (0, 0, 1))
    assert a == b and a != c
    for g in set(groups):
        assert len({a[i] for i in range(200) if groups[i] == g}) == 1  # whole groups only
    for y in (0, 1):
        assert sum(v for v, lab in zip(a, labels) if lab == y) == 10  # the class's share, exactly here
    big = group_split([0] * 10, [0] * 9 + [1], 0.3, 0)  # a group larger than the share stays in train
    assert big == [False] * 9 + [True]


def test_real_brisc_group_split_has_no_look_alike_across_the_split(brisc_root):
    """On the real train split: the random split puts look-alikes of validation images in train; the group split
    never does, and keeps each class's share."""
    d = discover(brisc_root)
    rnd, grp = make_splits(d, method="random"), make_splits(d, method="group")
    assert grp.method == "group" and grp.groups["threshold"] == THRESHOLD and len(grp.val) == len(rnd.val)

    def share(splits):
        return look_alike_share([(s.path, s.label) for s in splits.val], [(s.path, s.label) for s in splits.train])

    assert share(grp) == 0.0
    assert share(rnd) > 0.1
    for k in range(4):
        n = sum(s.label == k for s in grp.train + grp.val)
        assert abs(sum(s.label == k for s in grp.val) - 0.1 * n) <= 2
