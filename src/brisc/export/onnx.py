"""ONNX export that checks itself: one self-contained .onnx per model, with its sidecar.

Written under a temporary name, checked (onnx.checker full_check, then onnxruntime against PyTorch
on real images), then renamed: a failed check leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from brisc.export.selfcheck import check_against_torch, ort_runner
from brisc.export.wrapper import ExportWrapper
from brisc.fsio import atomic_path

MIN_OPSET, MAX_OPSET = 18, 23  # the dynamo exporter starts at 18; onnxruntime runs up to 23


def export_onnx(wrapper: ExportWrapper, path: Path, *, images: np.ndarray, opset: int, metadata: dict[str, str]) -> dict:
    """Write ``path`` (self-contained, symbolic batch axis), check it and return the check's numbers."""
    import onnx

    with atomic_path(path) as tmp:
        batch = torch.export.Dim("batch", min=1, max=4096)
        example = torch.from_numpy(images[:2])
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress chatter
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, (example,), str(tmp), input_names=["pixel_values"], output_names=wrapper.names,
                              opset_version=opset, dynamo=True, external_data=False, verbose=False,
                              dynamic_shapes={"pixel_values": {0: batch}})
        proto = onnx.load(str(tmp))
        for k, v in metadata.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)  # before fusing: the checker knows no contrib ops
        fused = fuse_for_onnxruntime(tmp)
        diffs = check_against_torch(ort_runner(tmp), wrapper, images, f"{path.name} (onnxruntime)")
    return {"max_abs_diff": diffs, "images": int(len(images)), "fused_ops": fused}


def fuse_for_onnxruntime(path: Path) -> dict[str, int]:
    """Rewrite the graph in place with onnxruntime's transformer fusions that keep every output: LayerNorm,
    GELU and bias+GELU, skip+LayerNorm. The fused Attention op is left out on purpose: it does not return
    the attention probabilities that ``attentions``, ``rollout`` and ``heatmap`` are made of. The fusions
    are portable graph rewrites (no CPU-specific layouts), so the file runs anywhere onnxruntime does.
    Returns the count of each fused operator."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("vit")
    options.enable_attention = False
    logger = logging.getLogger("onnxruntime.transformers")  # it reports skipped shape inference as errors
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            model = optimize_model(str(path), model_type="vit", num_heads=0, hidden_size=0,
                                   optimization_options=options, opt_level=0)
            model.save_model_to_file(str(path))
    finally:
        logger.setLevel(level)
    return {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}


def metadata_props(card) -> dict[str, str]:
    """The model card's fields as ONNX metadata_props (strings; dicts and lists as JSON); the file's own name
    and sha256 are left to the sidecar, which is written once the file exists."""
    skip = {"model_file", "model_sha256", "self_check"}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in card.to_json().items() if k not in skip}
