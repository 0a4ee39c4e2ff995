"""Colormaps, overlays and panels (numpy + Pillow), and occlusion maps through any session."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from brisc.maps import minmax

# Anchor colours sampled from matplotlib's perceptually uniform maps (9 evenly spaced stops);
# linear interpolation between them is visually indistinguishable from the full 256-entry tables.
_ANCHORS = {
    "viridis": [(68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141), (39, 173, 129),
                (92, 200, 99), (170, 220, 50), (253, 231, 37)],
    "inferno": [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85), (227, 89, 51),
                (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    "magma": [(0, 0, 4), (28, 16, 68), (79, 18, 123), (129, 37, 129), (181, 54, 122), (229, 80, 100),
              (251, 135, 97), (254, 194, 135), (252, 253, 191)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
COLORMAPS = tuple(_ANCHORS)


def colormap_lut(name: str = "viridis") -> np.ndarray:
    """[256, 3] uint8 lookup table."""
    if name not in _ANCHORS:
        raise ValueError(f"unknown colormap '{name}' (choose from {', '.join(COLORMAPS)})")
    a = np.asarray(_ANCHORS[name], np.float64)
    pos = np.linspace(0, 1, len(a))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, pos, a[:, c]) for c in range(3)], 1).round().astype(np.uint8)


def colorize(m: np.ndarray, cmap: str = "viridis") -> np.ndarray:
    """[H, W] map in [0, 1] -> [H, W, 3] uint8."""
    idx = np.clip(np.asarray(m, np.float64) * 255, 0, 255).round().astype(np.uint8)
    return colormap_lut(cmap)[idx]


def colorize_image(m: np.ndarray, size: tuple[int, int], cmap: str = "viridis") -> Image.Image:
    """A [g, g] map in [0, 1] upsampled bilinearly to ``size`` (w, h) and coloured, as an RGB image (all in Pillow's C)."""
    up = Image.fromarray(np.asarray(m, np.float32) * np.float32(255), "F").resize(size, Image.Resampling.BILINEAR)
    idx = Image.frombytes("P", size, up.convert("L").tobytes())  # F -> L clips to 0..255: the LUT index
    idx.putpalette(colormap_lut(cmap).tobytes())
    return idx.convert("RGB")


def overlay(scan: Image.Image, m: np.ndarray, *, cmap: str = "viridis", alpha: float = 0.4) -> Image.Image:
    """The scan (any size) with the map upsampled bilinearly and blended on top: (1 - alpha) scan + alpha colour."""
    rgb = scan.convert("RGB")
    return Image.blend(rgb, colorize_image(m, rgb.size, cmap), alpha)


def panel(scan: Image.Image, ov: Image.Image, *, label: str, probability: float, method: str,
          cmap: str = "viridis", side: int = 384) -> Image.Image:
    """Scan | overlay (already rendered) side by side, with the predicted class, its probability and a colour bar."""
    s = scan.convert("RGB").resize((side, side), Image.Resampling.BILINEAR)
    bar_w, pad, head = 18, 10, 40
    W, H = 2 * side + 3 * pad + bar_w + 36, side + head + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    canvas.paste(s, (pad, head))
    canvas.paste(ov.resize((side, side), Image.Resampling.BILINEAR), (2 * pad + side, head))
    bar = colorize(np.linspace(1, 0, side)[:, None].repeat(bar_w, 1), cmap)
    canvas.paste(Image.fromarray(bar, "RGB"), (3 * pad + 2 * side, head))
    d = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    d.text((pad, 8), f"{label}  p={probability:.3f}   map: {method}   (research use only)", fill=(0, 0, 0), font=font)
    x = 3 * pad + 2 * side + bar_w + 4
    d.text((x, head), "1.0", fill=(0, 0, 0), font=font)
    d.text((x, head + side - 12), "0.0", fill=(0, 0, 0), font=font)
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
