"""Synthetic BRISC: procedural T1 head phantoms with class-specific lesions and their masks.

Written in the exact BRISC 2025 release layout and naming, so every part of brisc can be tested
without the real data. The lesion, and only the lesion, separates the classes: plane, head pose,
anatomy, contrast and noise are drawn from the same distributions for every class.

- glioma: irregular, heterogeneous intra-axial mass (enhancing rim, necrotic core), deep in the brain;
- meningioma: round, bright, homogeneous extra-axial mass against the dura;
- pituitary: small bright mass at the sella;
- no_tumor: no lesion (and no mask, as in the release).
Torch-free.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from brisc import CLASSES
from brisc.errors import BriscError

MARKER = ".brisc-synth"  # marks a folder as brisc-synth's, so that it may be written again


class SynthError(BriscError):
    """A folder that is not brisc-synth's to write into."""


CODES = {"glioma": "gl", "meningioma": "me", "no_tumor": "no", "pituitary": "pi"}
PLANES = ("ax", "co", "sa")
# Head ellipse half-axes (x, y) per plane, in [-1, 1] image units.
_HEAD = {"ax": (0.74, 0.88), "co": (0.78, 0.84), "sa": (0.88, 0.76)}
# Where the sella sits in each plane, relative to the brain centre, in brain half-axis units.
_SELLA = {"ax": (0.0, -0.05), "co": (0.0, 0.42), "sa": (0.12, 0.35)}


@lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    return np.meshgrid(c, c)  # xx, yy


def _smooth_noise(rng: np.random.Generator, cells: int, shape: tuple[int, int]) -> np.ndarray:
    """Band-limited noise in about [-1, 1]: a coarse random grid upsampled bilinearly to ``shape``."""
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    return np.asarray(Image.fromarray(coarse, "F").resize(shape[::-1], Image.Resampling.BILINEAR))


def _soft(d: np.ndarray, edge: float) -> np.ndarray:
    """Signed 'inside' value (positive inside) -> soft membership in [0, 1] over about one edge width."""
    x = d * np.float32(1.0 / edge) + np.float32(0.5)
    return np.minimum(np.maximum(x, 0, out=x), 1, out=x)


@dataclass(frozen=True)
class Phantom:
    image: np.ndarray  # uint8 [S, S]
    mask: np.ndarray | None  # uint8 [S, S] 0..255 with anti-aliased edges; None for no_tumor


def render(label: str, plane: str, rng: np.random.Generator, size: int = 256) -> Phantom:
    """One synthetic T1 slice of class ``label`` in ``plane`` (ax|co|sa)."""
    xx, yy = _grid(size)
    px = 2.0 / size
    # Pose: same distribution for every class.
    ang = rng.uniform(-0.18, 0.18)
    # Python floats, not NumPy scalars: a float64 scalar would promote every float32 array.
    cx, cy = (float(c) for c in rng.uniform(-0.05, 0.05, size=2))
    scale = rng.uniform(0.9, 1.04)
    ca, sa = float(np.cos(ang)), float(np.sin(ang))
    u = ((xx - cx) * ca + (yy - cy) * sa) / scale
    v = (-(xx - cx) * sa + (yy - cy) * ca) / scale
    ax, ay = _HEAD[plane]
    r_head = np.sqrt((u / ax) ** 2 + (v / ay) ** 2)  # 1 on the scalp
    edge = px * 1.5 / scale

    img = np.zeros((size, size), np.float32)
    img += 0.85 * _soft(1.0 - r_head, edge / ax)  # scalp fat (bright on T1)
    img -= 0.70 * _soft(0.955 - r_head, edge / ax)  # skull (dark)
    brain_r = 0.90
    brain = _soft(brain_r - r_head, edge / ax)
    tissue = 0.46 + 0.07 * _smooth_noise(rng, 9, img.shape) + 0.04 * _smooth_noise(rng, 28, img.shape)
    img += brain * tissue
    # Scanner gain and thermal noise are drawn before the lesion, so the same seed renders the same
    # scan with or without a lesion: the lesion is the only difference between classes.
    gain = rng.uniform(0.85, 1.15)
    noise = np.float32(0.025) * rng.standard_normal(img.shape, dtype=np.float32)

    def window(lx: float, ly: float, r: float) -> tuple[slice, slice]:
        """Pixel window around a feature centred at (lx, ly) in head coordinates: work on it alone."""
        x = cx + scale * (lx * ca - ly * sa)
        y = cy + scale * (lx * sa + ly * ca)
        half = r * scale * size / 2 * 1.25 + 3
        i, j = (y + 1) / 2 * size, (x + 1) / 2 * size
        return (slice(max(0, int(i - half)), max(0, int(i + half) + 1)),
                slice(max(0, int(j - half)), max(0, int(j + half) + 1)))

    # Ventricles (dark CSF) near the centre.
    vents = {"ax": [(-0.12, -0.05, 0.07, 0.26), (0.12, -0.05, 0.07, 0.26)],
             "co": [(-0.1, -0.15, 0.06, 0.12), (0.1, -0.15, 0.06, 0.12)],
             "sa": [(-0.05, -0.08, 0.3, 0.08)]}[plane]
    for vx, vy, rx, ry in vents:
        w = window(vx, vy, max(rx, ry))
        d = 1 - np.sqrt(((u[w] - vx) / rx) ** 2 + ((v[w] - vy) / ry) ** 2)
        img[w] -= 0.32 * brain[w] * _soft(d, edge / min(rx, ry))

    mask = None
    if label != "no_tumor":
        m = np.zeros_like(img)
        if label == "glioma":
            # Intra-axial: centre well inside the brain; irregular outline; enhancing rim, necrotic core.
            rad, phi = rng.uniform(0.0, 0.45), rng.uniform(0, 2 * np.pi)
            lx, ly = rad * ax * float(np.cos(phi)), rad * ay * float(np.sin(phi))
            r0 = rng.uniform(0.12, 0.2)
            w = window(lx, ly, r0 * 1.45)
            dx, dy = u[w] - lx, v[w] - ly
            t = np.arctan2(dy, dx)
            wobble = sum(rng.uniform(0.05, 0.14) * np.sin(k * t + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
            inside = r0 * (1 + wobble) - np.sqrt(dx ** 2 + dy ** 2)
            m[w] = _soft(inside, edge)
            core = _soft(inside - 0.35 * r0, 3 * edge)
            het = 0.1 * _smooth_noise(rng, 40, core.shape)
            lesion = m[w] * (0.82 + het) - core * (0.5 + het)
        elif label == "meningioma":
            # Extra-axial: a round mass whose centre sits just inside the dura.
            phi = rng.uniform(0, 2 * np.pi)
            r0 = rng.uniform(0.09, 0.15)
            # Distance along the ray to the brain edge, then step back by ~half the radius.
            cp, sp = float(np.cos(phi)), float(np.sin(phi))
            edge_r = brain_r / (((cp / ax) ** 2 + (sp / ay) ** 2) ** 0.5)
            lx, ly = (edge_r - 0.55 * r0) * cp, (edge_r - 0.55 * r0) * sp
            w = window(lx, ly, r0)
            inside = r0 - np.sqrt((u[w] - lx) ** 2 + (v[w] - ly) ** 2)
            m[w] = _soft(inside, edge) * _soft(0.955 - r_head[w], edge / ax)  # stops at the skull
            lesion = 0.92 + 0.03 * _smooth_noise(rng, 12, inside.shape)
        elif label == "pituitary":
            sx, sy = _SELLA[plane]
            lx, ly = sx * ax + rng.uniform(-0.03, 0.03), sy * ay + rng.uniform(-0.03, 0.03)
            r0 = rng.uniform(0.05, 0.085)
            w = window(lx, ly, r0 * 1.2)
            inside = r0 - np.sqrt(((u[w] - lx) / 1.2) ** 2 + (v[w] - ly) ** 2)  # slightly wide, like the gland
            m[w] = _soft(inside, edge)
            lesion = 0.86
        else:
            raise ValueError(f"unknown class {label!r}")
        img[w] = img[w] * (1 - m[w]) + lesion * m[w]
        mask = np.round(m * 255).astype(np.uint8)

    img = img * gain + noise
    img = np.abs(img)  # magnitude images are non-negative (Rician-like floor)
    return Phantom(image=np.clip(img * 255, 0, 255).astype(np.uint8), mask=mask)


def file_name(split: str, index: int, label: str, plane: str) -> str:
    return f"brisc2025_{split}_{index:05d}_{CODES[label]}_{plane}_t1.jpg"


def generate(out: str | Path, *, per_class: int = 20, test_per_class: int | None = None,
             seed: int = 0, size: int = 256, quality: int = 92) -> dict:
    """Write a synthetic BRISC 2025 release under ``out``; returns a summary dict. Refuses a folder that holds other
    files and no earlier synthetic release (``MARKER``): its phantoms carry real-looking BRISC names."""
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise SynthError(f"{out} already holds files that brisc-synth did not write: synthetic scans with BRISC names "
                         "must not mix with real ones; choose a new or empty folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("synthetic BRISC written by brisc-synth: not real scans\n")
    test_per_class = max(1, per_class // 5) if test_per_class is None else test_per_class
    t0 = time.perf_counter()
    counts: dict[str, dict[str, int]] = {}
    masks = 0
    for split_id, (split, n) in enumerate((("train", per_class), ("test", test_per_class))):
        counts[split] = {}
        if n <= 0:
            continue
        seg = out / "segmentation_task" / split
        (seg / "images").mkdir(parents=True, exist_ok=True)
        (seg / "masks").mkdir(parents=True, exist_ok=True)
        index = 0
        for label in CLASSES:
            cdir = out / "classification_task" / split / label
            cdir.mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                index += 1
                rng = np.random.default_rng([seed, split_id, index])
                plane = PLANES[int(rng.integers(len(PLANES)))]
                ph = render(label, plane, rng, size)
                name = file_name(split, index, label, plane)
                Image.fromarray(ph.image, "L").save(cdir / name, quality=quality)
                if ph.mask is not None:
                    (seg / "images" / name).write_bytes((cdir / name).read_bytes())
                    Image.fromarray(ph.mask, "L").save(seg / "masks" / (Path(name).stem + ".png"), compress_level=1)
                    masks += 1
            counts[split][label] = n
    dt = time.perf_counter() - t0
    total = sum(sum(c.values()) for c in counts.values())
    summary = {"out": str(out), "seed": seed, "size": size, "counts": counts, "images": total,
               "masks": masks, "seconds": round(dt, 3), "images_per_second": round(total / max(dt, 1e-9), 1)}
    (out / "README.md").write_text(
        "Synthetic BRISC 2025 (brisc-synth): procedural phantoms, not patient data.\n\n"
        f"```\n{json.dumps(summary, indent=2)}\n```\n")
    return summary
