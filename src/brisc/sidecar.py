"""The model sidecar ``<model>.onnx.json``: what inference needs to trust and drive an exported graph.

Torch-free: ``brisc.export`` writes it, ``brisc.inference`` reads and verifies it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from brisc.fsio import write_json_atomic
from brisc.imageio import PREPROCESSING_VERSION, Preprocessing

FORMAT_VERSION = 1


class SidecarError(Exception):
    """A model that must not be used: the message names the file and what to do."""


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(f"{model_path}.json")


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_sidecar(model_path: str | os.PathLike, meta: dict) -> Path:
    """Adds the format version and the model file's sha256, then writes atomically."""
    path = sidecar_path(model_path)
    meta = {"format_version": FORMAT_VERSION, **meta, "model_file": Path(model_path).name,
            "model_sha256": sha256_file(model_path)}
    write_json_atomic(path, meta)
    return path


def read_sidecar(model_path: str | os.PathLike, *, verify: bool = True) -> dict:
    """Read and check the sidecar of ``model_path``: present, same format, same preprocessing, same bytes."""
    path = sidecar_path(model_path)
    if not Path(model_path).is_file():
        raise SidecarError(f"{model_path}: model file not found")
    if not path.is_file():
        raise SidecarError(f"{model_path}: no sidecar {path.name} beside it; export the model with brisc-export")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SidecarError(f"{path}: unreadable sidecar ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise SidecarError(f"{path}: sidecar format {meta.get('format_version')} is not {FORMAT_VERSION}; re-export the model")
    pv = meta.get("input", {}).get("preprocessing_version")
    if pv != PREPROCESSING_VERSION:
        raise SidecarError(f"{model_path}: made for preprocessing version {pv}, this brisc uses "
                           f"{PREPROCESSING_VERSION}; re-export it with this version of brisc")
    if verify and sha256_file(model_path) != meta.get("model_sha256"):
        raise SidecarError(f"{model_path}: sha256 does not match its sidecar (truncated, tampered with or "
                           "replaced); re-export the model")
    return meta


def preprocessing_of(meta: dict) -> Preprocessing:
    i = meta["input"]
    return Preprocessing(size=int(i["size"]), mean=tuple(i["mean"]), std=tuple(i["std"]),
                         version=int(i["preprocessing_version"]))
