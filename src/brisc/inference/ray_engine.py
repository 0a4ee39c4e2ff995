"""``brisc-infer --engine ray``: Ray Data schedules, brisc maps batches.

The driver lists the files exactly as the local engine does (same skipping, same names, same resume) and hands
Ray Data the to-do list. ``Classifier`` is the callable class of ``map_batches``: each actor opens one onnxruntime
session (the model's path and sha256 checked on the worker), decodes its batch with ``brisc.imageio`` and runs it.
Decoding inside the actor, not in tasks of their own, keeps the float pixels out of Ray's object store: only
probabilities, scores, maps (and, for heatmaps, the small display image) travel back. The rows return to the
driver in order and go through the same writer, heatmaps and gallery as a local run (``runner.BatchRun``).

Ray is an extra (``brisc-mri[ray]``), imported only here and only for ``--engine ray``.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator

import numpy as np
from PIL import Image

from brisc.inference.inputs import Decoded, Item, decode_item
from brisc.inference.session import InferenceError


def check_ray() -> None:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise InferenceError("--engine ray needs Ray Data: pip install 'brisc-mri[ray]'") from None


class Classifier:
    """One onnxruntime session per Ray actor; ``__call__`` maps a batch of files to the model's outputs."""

    def __init__(self, model: str, sha256: str, outputs: list[str], display: str | None, keep_input: bool,
                 device: str, threads: int | None):
        from brisc.inference.session import open_session

        self.sess = open_session(model, device=device, threads=threads)  # verifies the file against its sidecar
        if self.sess.card.model_sha256 != sha256:
            raise InferenceError(f"{model} on this worker is sha256 {self.sess.card.model_sha256}, the driver's "
                                 f"{sha256}: every node must read the same model file")
        self.outputs, self.display, self.keep_input = outputs, display, keep_input

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = list(batch["item"])  # brisc.inference.inputs.Item, pickled by Ray (a volume's slice keeps its source)
        decoded = [decode_item(it, self.sess.prep, self.display) for it in items]
        ok = [k for k, d in enumerate(decoded) if not d.error]
        res = self.sess.run(np.stack([decoded[k].x for k in ok]), self.outputs) if ok else {}
        n = len(items)
        out: dict[str, np.ndarray] = {
            "index": np.asarray(batch["index"]),
            "error": np.array([d.error or "" for d in decoded], dtype=object),
            "sha256": np.array([d.sha256 or "" for d in decoded], dtype=object),
            "always_flagged": np.array([d.always_flagged for d in decoded]),
        }
        for name in self.outputs:  # rows that failed to decode get zeros (their error says why)
            if ok:
                full = np.zeros((n, *res[name].shape[1:]), res[name].dtype)
                full[ok] = res[name]
                out[name] = full
        if self.display:
            out["display"] = np.array([_pack(d.display) for d in decoded], dtype=object)
        if self.keep_input and ok:
            full = np.zeros((n, *decoded[ok[0]].x.shape), np.float32)
            full[ok] = np.stack([decoded[k].x for k in ok])
            out["x"] = full
        return out


def _pack(img: Image.Image | None) -> bytes:
    """A display image as bytes that Ray's tables carry: width and height (2 bytes each), then RGB."""
    if img is None:
        return b""
    rgb = img.convert("RGB")
    return rgb.width.to_bytes(2, "little") + rgb.height.to_bytes(2, "little") + rgb.tobytes()


def _unpack(b: bytes) -> Image.Image | None:
    if not b:
        return None
    w, h = int.from_bytes(b[:2], "little"), int.from_bytes(b[2:4], "little")
    return Image.frombytes("RGB", (w, h), b[4:])


def start_ray(address: str | None, *, gpus: bool):
    import ray

    if ray.is_initialized():
        return False
    for name in ("ray", "ray.data"):  # the run's own console lines are the report
        logging.getLogger(name).setLevel(logging.ERROR)
    # Ray's C++ notices on the driver's console (Ray Data's actors warn that their arguments live in the object
    # store); it still says once that it read this setting.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kw = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, configure_logging=False)
    if address is None:  # a local Ray for this run, on this machine's cores
        ray.init(num_cpus=os.cpu_count() or 1, **({} if gpus else {"num_gpus": 0}), **kw)
    else:
        ray.init(address=address, **kw)
    return True


def ray_batches(run) -> Iterator[tuple[list[Decoded], dict[str, np.ndarray], float]]:
    """``BatchRun.batches`` on Ray Data: the same (decoded, outputs, seconds) batches, in the order of ``run.todo``.
    Seconds in the session are not measured on the workers: 0."""
    import ray
    import ray.data

    opts, sess = run.opts, run.sess
    todo: list[Item] = run.todo
    if not todo:
        return
    started = start_ray(opts.ray_address, gpus=opts.gpus_per_worker > 0)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # rows come back in the order of the file list
        ctx.enable_progress_bars = False
        ds = ray.data.from_items([{"index": k, "item": it} for k, it in enumerate(todo)])
        cpus = max(1, (os.cpu_count() or 1) // opts.concurrency)
        keep_input = opts.explain == "occlusion" or (opts.masks is not None and opts.faithfulness > 0)
        ds = ds.map_batches(
            Classifier, batch_size=opts.batch_size, batch_format="numpy", concurrency=opts.concurrency,
            num_cpus=cpus if opts.ray_address else (os.cpu_count() or 1) / opts.concurrency,
            num_gpus=opts.gpus_per_worker or None,
            fn_constructor_kwargs={"model": str(sess.path), "sha256": sess.card.model_sha256, "outputs": run.outputs,
                                   "display": run.display, "keep_input": keep_input,
                                   "device": "cuda" if opts.gpus_per_worker > 0 else "cpu", "threads": cpus})
        for b in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            decoded = []
            for j, k in enumerate(b["index"]):
                it = todo[int(k)]
                if b["error"][j]:
                    decoded.append(Decoded(it, error=str(b["error"][j])))
                    continue
                decoded.append(Decoded(it, x=b["x"][j] if "x" in b else None,
                                       display=_unpack(b["display"][j]) if "display" in b else None,
                                       sha256=str(b["sha256"][j]),
                                       always_flagged=bool(b["always_flagged"][j])))
            ok = np.array([not d.error for d in decoded])
            yield decoded, {name: b[name][ok] for name in run.outputs if name in b}, 0.0
    finally:
        if started:
            ray.shutdown()
