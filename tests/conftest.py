"""Shared fixtures: the real BRISC train split (from ../shared) and a small synthetic BRISC."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from brisc.data import default_data_root
from brisc.synth import generate


@pytest.fixture(scope="session")
def brisc_root() -> Path:
    """The real BRISC train split. Missing data fails in CI (never a silent skip) and skips elsewhere."""
    root = default_data_root()
    if not (root / "classification_task").is_dir():
        msg = f"BRISC data not found at {root} (set BRISC_DATA)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


@pytest.fixture(scope="session")
def real_images(brisc_root) -> list[Path]:
    """A fixed handful of real BRISC JPEGs of every class, the non-square ones included."""
    out = []
    for cls in ("glioma", "meningioma", "no_tumor", "pituitary"):
        files = sorted((brisc_root / "classification_task" / "train" / cls).glob("*.jpg"))
        out += files[:: max(1, len(files) // 6)][:6]
    return out


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """Synthetic BRISC in the release layout: 12 train + 3 test images per class, with masks."""
    root = tmp_path_factory.mktemp("synth") / "brisc2025"
    generate(root, per_class=12, test_per_class=3, seed=0, size=256)
    return root


def write_dicom(path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None, with_pixels: bool = True):
    """A minimal but valid DICOM file (pydicom), single- or multi-frame (pixels [F, H, W])."""
    from pydicom.uid import SecondaryCaptureImageStorage

    from brisc.synth_volumes import new_dataset

    ds = new_dataset(SecondaryCaptureImageStorage)
    pixels = np.asarray(pixels, np.uint16)
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if frames > 1:
        ds.NumberOfFrames = frames
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    if with_pixels:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return Path(path)


def run_cli(module: str, *args, env: dict | None = None, timeout: int = 600, check: bool = True):
    """Run ``python -m module args`` like a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, "WANDB_SILENT": "true", **(env or {})}, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"{module} {args} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory) -> Path:
    """A tiny random HF ViT saved like a pretrained checkpoint (10-class head, replaced on load)."""
    from transformers import ViTConfig, ViTForImageClassification

    d = tmp_path_factory.mktemp("hf") / "tiny-vit"
    cfg = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                    image_size=224, patch_size=16, num_labels=10)
    import torch
    torch.manual_seed(0)
    ViTForImageClassification(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_run(synth_root, tiny_hf_dir, tmp_path_factory) -> Path:
    """One tiny brisc-train run of all three models on synthetic BRISC, shared by the train/export/infer tests."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_cli("brisc.train.cli", "--data", synth_root, "--models", "vit,hf_vit,sae", "--preset", "tiny",
            "--out", out, "--hf-model", tiny_hf_dir, "--wandb", "offline")
    return out


@pytest.fixture(scope="session")
def tiny_export(tiny_run, tmp_path_factory) -> Path:
    """ONNX graphs (fp32 + INT8) of the tiny run, shared by the export and inference tests."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    run_cli("brisc.export.cli", "--run", tiny_run, "--out", out, "--quantize", "int8")
    return out


def gallery_data(index) -> dict:
    """The rows and settings that brisc-infer's index.html carries as JSON."""
    page = index.read_text(encoding="utf-8")
    block = page.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    return json.loads(block)


def write_png_bomb(path):
    """A 30000 x 30000 PNG header (900 Mpx) with a tiny body: a decompression bomb in 60 bytes."""
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    return path


def prediction_rows(out) -> list[dict]:
    """brisc-infer's predictions.jsonl in --out, one dict a row."""
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
