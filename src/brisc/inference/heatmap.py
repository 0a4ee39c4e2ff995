"""Colormaps, overlays and panels (numpy + Pillow), and occlusion maps through any session."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from brisc.maps import minmax

# Anchor colours sampled from matplotlib's perceptually uniform maps (9 evenly spaced stops);
# linear interpolation between them is visually indistinguishable from the full 256-entry tables.
# No grey map: grey on a grey T1 scan reads as contrast enhancement.
_ANCHORS = {
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85), (227, 89, 51),
                (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122), (229, 80, 100),
              (251, 135, 97), (254, 194, 135), (252, 253, 191)],
}
COLORMAPS = tuple(_ANCHORS)
OVERLAY_MAX = 256  # the overlay's longest side: about the model's 224 px (18 px a map cell); ~12 KB as a palette PNG
PANEL_MAX = 896  # --panels draws on the full-resolution scan (448 px high a side), downscaled to this at most
JPEG_QUALITY = 88
MASK_OUTLINE = (255, 255, 255)
LEGEND = "colour = the map scaled per scan (brightest = this scan's maximum); clear = low"


@lru_cache(maxsize=8)
def colormap_lut(name: str = "viridis") -> np.ndarray:
    """[256, 3] uint8 lookup table."""
    if name not in _ANCHORS:
        raise ValueError(f"unknown colormap '{name}' (choose from {', '.join(COLORMAPS)})")
    a = np.asarray(_ANCHORS[name], np.float64)
    pos = np.linspace(0, 1, len(a))
    t = np.linspace(0, 1, 256)
    lut = np.stack([np.interp(t, pos, a[:, c]) for c in range(3)], 1).round().astype(np.uint8)
    lut.flags.writeable = False  # shared by the cache
    return lut


@lru_cache(maxsize=4)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font (no system fonts needed), loaded once per size."""
    return ImageFont.load_default(size=size)


def colorize(m: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """[H, W] map in [0, 1] -> [H, W, 3] uint8."""
    idx = np.clip(np.asarray(m, np.float64) * 255, 0, 255).round().astype(np.uint8)
    return colormap_lut(cmap)[idx]


def upsample(m: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A [g, g] map in [0, 1] upsampled bilinearly to ``size`` (w, h) as an 8-bit 'L' image (0..255)."""
    up = Image.fromarray(np.asarray(m, np.float32) * np.float32(255), "F").resize(size, Image.Resampling.BILINEAR)
    return up.convert("L")  # F -> L clips to 0..255


def colorize_image(m: np.ndarray, size: tuple[int, int], cmap: str = "viridis") -> Image.Image:
    """A [g, g] map in [0, 1] upsampled bilinearly to ``size`` (w, h) and coloured, as an RGB image (all in Pillow's C)."""
    return _colour(upsample(m, size), cmap)


def _colour(level: Image.Image, cmap: str) -> Image.Image:
    """An 'L' image of 0..255 map levels -> RGB through the colour map's lookup table."""
    idx = Image.frombytes("P", level.size, level.tobytes())
    idx.putpalette(colormap_lut(cmap).tobytes())
    return idx.convert("RGB")


def overlay(scan: Image.Image, m: np.ndarray, *, cmap: str = "viridis", alpha: float = 0.6) -> Image.Image:
    """The scan (any size) with the map upsampled bilinearly and blended on top, opacity ``alpha * map``:
    where the map is low the scan shows untinted, at the map's peak the colour covers ``alpha`` of it."""
    rgb = scan.convert("RGB")
    level = upsample(m, rgb.size)  # once: it gives both the colour and the opacity
    opacity = level.point(_opacity_table(alpha))  # one C pass
    return Image.composite(_colour(level, cmap), rgb, opacity)


@lru_cache(maxsize=8)
def _opacity_table(alpha: float) -> tuple[int, ...]:
    return tuple(round(v * alpha) for v in range(256))


def fit(img: Image.Image, side: int) -> Image.Image:
    """Downscale (never up) so that the longest side is at most ``side``, keeping the aspect ratio."""
    if max(img.size) <= side:
        return img
    w, h = img.size
    k = side / max(w, h)
    # reducing_gap=1: whole factors by box averaging first (BRISC's 512 px to 256 px: ~6x faster than a bilinear
    # filter over the full image, a mean difference under one grey level); only for display, never the model input.
    return img.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BILINEAR, reducing_gap=1.0)


def outline(mask: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """A boolean mask -> its 2-px outline at ``size`` (w, h), as an 'L' image (255 on the outline)."""
    m = Image.fromarray(np.asarray(mask, np.uint8) * 255, "L").resize(size, Image.Resampling.NEAREST)
    inner = m.filter(ImageFilter.MinFilter(5))
    return ImageChops.subtract(m, inner)


OOD_BADGE = "not like the training scans: the class is not reliable"


def plain_method(method: str) -> str:
    """A map's name in words a clinician reads (the caption of a panel)."""
    m = (method or "").split(":")
    if m[0] == "cls":
        layer = next((x.split("=")[1] for x in m[1:] if x.startswith("layer=")), "the last")
        return f"where the model looked: its attention in layer {layer}"
    return {"rollout": "where the model looked: its attention accumulated over every layer",
            "occlusion": "how much hiding each patch lowers the probability",
            "saliency": "which pixels change the prediction most (input gradient x input)"}.get(m[0], method or "")


def panel(scan: Image.Image, ov: Image.Image, *, label: str, probability: float, method: str,
          truth: str | None = None, mask: np.ndarray | None = None, cmap: str = "viridis",
          side: int = 448, in_distribution: bool | None = None, name: str | None = None,
          runner_up: tuple[str, float] | None = None, pointing_hit: bool | None = None,
          alpha: float = 0.6) -> Image.Image:
    """Scan | overlay side by side at the scan's aspect ratio, with the prediction, the true label when
    known, the tumour mask outlined when given, a colour bar and a legend saying the map is scaled per scan."""
    h = side
    w = max(1, round(side * scan.width / scan.height))
    s = scan.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    o = ov.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
    if mask is not None:
        line = outline(mask, (w, h))
        o.paste(MASK_OUTLINE, (0, 0, w, h), line)
    pad, bar_w, head, foot = 12, 18, 64, 56
    W, H = max(2 * w + 3 * pad + bar_w + 48, 720), h + head + foot  # 720: room for the legend beside narrow scans
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    canvas.paste(s, (pad, head))
    canvas.paste(o, (2 * pad + w, head))
    # The bar is drawn as the overlay blends: over mid-grey, clear at the bottom, the colour at alpha at the top.
    level = np.linspace(1, 0, h)[:, None].repeat(bar_w, 1)
    a = (alpha * level)[..., None]
    bar = (a * colorize(level, cmap) + (1 - a) * 128).round().astype(np.uint8)
    canvas.paste(Image.fromarray(bar, "RGB"), (3 * pad + 2 * w, head))
    d = ImageDraw.Draw(canvas)
    big, small = font(20), font(15)
    verdict = ""
    if truth:
        verdict = "   correct" if truth == label else f"   WRONG (true: {truth})"
    second = f"   runner-up {runner_up[0]} {runner_up[1]:.3f}" if runner_up else ""
    d.text((pad, 8), f"predicted {label}  p={probability:.3f}{verdict}{second}", fill=(0, 0, 0), font=big)
    if in_distribution is False:  # said before anything else about the map: the class itself is not reliable
        d.text((pad, 36), OOD_BADGE, fill=(180, 0, 0), font=small)
    else:
        where = {True: "   its brightest point is on the tumour (white outline)",
                 False: "   its brightest point misses the tumour (white outline)"}.get(pointing_hit,
                 "   white outline: tumour mask" if mask is not None else "")
        d.text((pad, 36), plain_method(method) + where, fill=(60, 60, 60), font=small)
    x = 3 * pad + 2 * w + bar_w + 4
    d.text((x, head), "max", fill=(0, 0, 0), font=small)
    d.text((x, head + h - 16), "min", fill=(0, 0, 0), font=small)
    d.text((pad, head + h + 8), LEGEND, fill=(60, 60, 60), font=small)
    d.text((pad, head + h + 30), (f"{name}   " if name else "") + "research use only: not a medical device",
           fill=(150, 0, 0), font=small)
    return canvas


def occlusion_batch(x: np.ndarray, patch: int = 16) -> np.ndarray:
    """[3, S, S] -> [(S/patch)^2, 3, S, S]: one copy per patch position with that patch set to grey (0)."""
    g = x.shape[-1] // patch
    out = np.repeat(x[None], g * g, axis=0)
    for k in range(g * g):
        i, j = divmod(k, g)
        out[k, :, i * patch:(i + 1) * patch, j * patch:(j + 1) * patch] = 0.0  # 0 = mid-grey after normalisation
    return out


def occlusion_maps(run, x: np.ndarray, pred: np.ndarray, probs: np.ndarray, *, batch_size: int = 32,
                   patch: int = 16) -> np.ndarray:
    """Drop in the predicted class's probability when each patch is greyed out -> [B, g, g] in [0, 1].

    ``run(batch) -> probabilities``; the same session that classified the images."""
    g = x.shape[-1] // patch
    maps = np.zeros((len(x), g, g), np.float32)
    for b in range(len(x)):
        occ = occlusion_batch(x[b], patch)
        p = np.concatenate([run(occ[i:i + batch_size])[:, pred[b]] for i in range(0, len(occ), batch_size)])
        drop = np.clip(probs[b, pred[b]] - p, 0, None).reshape(g, g)
        maps[b] = minmax(drop)
    return maps
