"""TorchScript (torch.jit.trace; deprecated by PyTorch, kept for older consumers) and torch.export (.pt2).

Both carry the same named outputs (listed in the embedded ``brisc.json`` and the sidecar) and pass
the same parity check against eager PyTorch as the ONNX graphs.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch

from brisc.export.selfcheck import check_against_torch
from brisc.fsio import atomic_path
from brisc.export.wrapper import ExportWrapper


def _runner(module, names):
    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {n: t.numpy() for n, t in zip(names, module(torch.from_numpy(x)))}
    return run


def export_torchscript(wrapper: ExportWrapper, path: Path, *, images: np.ndarray, metadata: dict) -> dict:
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice is in --help; traces are checked below
            traced = torch.jit.trace(wrapper, (torch.from_numpy(images[:2]),), check_trace=False)
            traced.save(str(tmp), _extra_files={"brisc.json": json.dumps(metadata)})
            loaded = torch.jit.load(str(tmp))
        diffs = check_against_torch(_runner(loaded, wrapper.names), wrapper, images, f"{path.name} (TorchScript)")
    return {"max_abs_diff": diffs, "images": int(len(images))}


def export_pt2(wrapper: ExportWrapper, path: Path, *, images: np.ndarray, metadata: dict) -> dict:
    with atomic_path(path) as tmp:
        batch = torch.export.Dim("batch", min=1, max=4096)
        ep = torch.export.export(wrapper, (torch.from_numpy(images[:2]),), dynamic_shapes={"pixel_values": {0: batch}})
        torch.export.save(ep, str(tmp), extra_files={"brisc.json": json.dumps(metadata)})
        loaded = torch.export.load(str(tmp)).module()
        diffs = check_against_torch(_runner(loaded, wrapper.names), wrapper, images, f"{path.name} (torch.export)")
    return {"max_abs_diff": diffs, "images": int(len(images))}
