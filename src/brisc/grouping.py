"""Group-aware validation: near-duplicate and neighbouring slices of one patient stay on one side of the split.

BRISC has no patient ids, and neighbouring slices of one patient look almost alike, so a random validation
split shares patients with train and flatters the models that memorise them. Here each image is reduced to a
32x32 grayscale thumbnail, centred and scaled to unit norm; two images of the same class whose thumbnails have
cosine similarity >= ``THRESHOLD`` are joined (planes look too different to join by accident, and a copy filed
under another plane still joins), and groups are the connected components. Validation is then carved by whole
groups, per class, seeded.

Why 0.96: on the BRISC 2025 train split, 99% of images have no image of *another class* (so of another patient)
that similar (the 99th percentile of the nearest other-class similarity is 0.96; 1.0% exceed it), while 37.5% of
images have a same-class neighbour above it. The threshold joins about one image in a hundred to a stranger and
keeps near-copies together: 3741 groups, the largest 35 images, 1874 images in groups of two or more.
``brisc-data`` prints the groups it finds. Torch-free.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

THRESHOLD = 0.96
THUMB = 32


def thumbnail(path: str, size: int = THUMB) -> np.ndarray | None:
    """A unit-norm, zero-mean [size*size] grayscale thumbnail (JPEG draft decoding keeps this ~1 ms); None if unreadable."""
    try:
        with Image.open(path) as im:
            im.draft("L", (4 * size, 4 * size))
            a = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR), np.float32).ravel()
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    a = a - a.mean()
    n = float(np.linalg.norm(a))
    return a / n if n > 0 else None


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def similarity_groups(paths: list[str], keys: list, threshold: float = THRESHOLD) -> list[int]:
    """Group id per image: connected components of "same key (the class) and thumbnail similarity >= threshold".
    Unreadable images are groups of their own. Ids are the index of the group's first member (order-independent
    of threads)."""
    thumbs = _thumbs(paths)
    parent = list(range(len(paths)))
    by_key: dict = defaultdict(list)
    for i, (k, t) in enumerate(zip(keys, thumbs)):
        if t is not None:
            by_key[k].append(i)
    for idx in by_key.values():
        e = np.stack([thumbs[i] for i in idx])
        sim = e @ e.T
        for a, b in zip(*np.nonzero(np.triu(sim >= threshold, 1))):
            ra, rb = _find(parent, idx[a]), _find(parent, idx[b])
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return [_find(parent, i) for i in range(len(paths))]


def _thumbs(paths: list[str]) -> list[np.ndarray | None]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(thumbnail, paths))


def look_alike_share(val: list[tuple[str, int]], train: list[tuple[str, int]], threshold: float = THRESHOLD) -> float:
    """Share of validation images (path, label) with an image of the same class in train at thumbnail
    similarity >= ``threshold``: how much a split lets validation share patients with train."""
    tv, tt = _thumbs([p for p, _ in val]), _thumbs([p for p, _ in train])
    hits = 0
    for label in {y for _, y in val}:
        v = [t for t, (_, y) in zip(tv, val) if y == label and t is not None]
        t = [t for t, (_, y) in zip(tt, train) if y == label and t is not None]
        if v and t:
            hits += int(((np.stack(v) @ np.stack(t).T) >= threshold).any(1).sum())
    return hits / max(len(val), 1)


def group_split(labels: list[int], groups: list[int], val_fraction: float, seed: int) -> list[bool]:
    """-> is_val per image: per class, whole groups in a seeded random order go to validation when they fit in
    what is left of the class's share (round(n * val_fraction)); a group too large to fit stays in train. A class
    of two or more groups whose groups are all larger than its share gives its smallest group."""
    rng = np.random.default_rng(seed)
    is_val = [False] * len(labels)
    by_class: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (y, g) in enumerate(zip(labels, groups)):
        by_class[y][g].append(i)
    for y in sorted(by_class):
        members = [by_class[y][g] for g in sorted(by_class[y])]
        n = sum(len(m) for m in members)
        quota = int(round(n * val_fraction))
        if val_fraction > 0 and len(members) >= 2:
            quota = max(quota, 1)
        chosen, taken = [], 0
        for k in rng.permutation(len(members)):
            if taken + len(members[k]) <= quota:
                chosen.append(k)
                taken += len(members[k])
        if not chosen and quota and len(members) >= 2:  # every group is larger than the share: the smallest one
            chosen = [min(range(len(members)), key=lambda k: (len(members[k]), k))]
        for k in chosen:
            for i in members[k]:
                is_val[i] = True
    return is_val


def group_summary(groups: list[int]) -> dict:
    sizes = np.bincount(np.unique(np.asarray(groups), return_inverse=True)[1])
    return {"threshold": THRESHOLD, "groups": int(len(sizes)), "largest": int(sizes.max()) if len(sizes) else 0,
            "singletons": int((sizes == 1).sum()), "images_in_groups_of_2_or_more": int(sizes[sizes > 1].sum())}
