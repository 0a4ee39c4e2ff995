"""Batch classification of folders of scans: inputs -> decode pool -> one session -> rows, heatmaps, gallery.

Data flows one way: file (``inputs``) -> session -> probabilities + map -> files under --out (``outputs``),
then ``summary`` and the gallery. Rows are appended and flushed after every batch, so a crash loses at most
the batch in flight; ``resume`` skips every item already in predictions.jsonl, keyed by ``item_key``, so a
killed run rerun ends with every item exactly once.
"""

from __future__ import annotations

import errno
import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from brisc.data import load_mask
from brisc.faithfulness import auc, perturbation_curves, random_maps
from brisc.errors import OutOfSpaceError
from brisc.inference.heatmap import occlusion_maps
from brisc.imageio import image_size
from brisc.inference.inputs import (Collected, Decoded, Item, check_inputs, collect, decode_item, ground_truth,
                                    input_sha256, mask_for, prefetch)
from brisc.inference.plan import (check_masks, check_resume, explain_method, faithfulness_keys, in_distribution,
                                  ood_threshold, skipped_text)
from brisc.inference.options import InferOptions
from brisc.inference.outdir import new_row
from brisc.inference.outputs import Writer, render
from brisc.inference.session import InferenceError, ModelSession
from brisc.inference.shard import select
from brisc.inference.record import publish
from brisc.inference.summary import summarise
from brisc.maps import cls_map, resize_map
from brisc.metrics import energy_in_mask, pointing_chance, pointing_game


def run_inference(opts: InferOptions, sess: ModelSession, *, progress: bool = True, log=print) -> dict:
    """Classify every item; returns summary.json's content (also written). Refusals (InferenceError) touch nothing."""
    from brisc.inference.outdir import OutLock, check_out

    opts = replace(opts, out=Path(os.path.realpath(opts.out)))  # "ghost/../o" is o: every check sees the real folder
    check_out(opts.out, resume=opts.resume, overwrite=opts.overwrite)
    check_inputs(opts.inputs, opts.out)
    method = explain_method(opts, sess)
    root = check_resume(opts, sess, method) if opts.resume else None
    col = collect(list(opts.inputs), recursive=opts.recursive, skip=opts.out, root=root, plane=opts.plane,
                  volume_index=opts.volume_index)
    if not col.items and not col.errors:
        raise InferenceError(f"no images found under {', '.join(opts.inputs)}"
                             + (f" ({len(col.skipped)} other files skipped: {skipped_text(col.skipped)})"
                                if col.skipped else ""))
    check_masks(opts, col.items)
    col = select(col, opts.shard)  # a part may be empty: it still writes its (empty) record for merge
    with OutLock(opts.out, root=col.root, overwrite=opts.overwrite, shard=opts.shard):
        return BatchRun(opts, sess, method, col).run(progress=progress)


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class BatchRun:
    """One brisc-infer run in a claimed --out: decode -> session -> rows and heatmaps, batch by batch.

    Heatmaps are drawn and PNG-encoded on their own threads (zlib releases the GIL) while the next batch
    runs; a batch's rows are written once its heatmaps are on disk, so a row never names a missing file
    and a heatmap never lacks its row."""

    def __init__(self, opts: InferOptions, sess: ModelSession, method: str | None, col: Collected):
        self.opts, self.sess, self.method, self.col = opts, sess, method, col
        self.out = opts.out
        self.writer = Writer(opts.out, resume=opts.resume)
        for rel, reason in col.errors:
            self.writer.error(rel, reason)
        self.writer.skipped(col.skipped)
        self.failures = len(col.errors)
        self.todo = [it for it in col.items if self._needs_work(it, self.writer.done.get(it.key))]
        self.pending: list[tuple[list[dict], list]] = []
        self.model_seconds, self.new = 0.0, 0
        self.faithful = faithfulness_keys(self.todo, opts) if method is not None else set()
        self.render_pool = ThreadPoolExecutor(max_workers=max(1, opts.workers))
        self.threshold = ood_threshold(opts, sess)

    def _needs_work(self, it: Item, row: dict | None) -> bool:
        """Not classified yet, classified without the heatmap this run asks for (resume with --heatmaps added) or
        the panel (--panels added), or the file changed since its row was written (its sha256 differs)."""
        if row is None:
            return True
        if self.opts.heatmaps and self.method is not None and (not row.get("heatmap") or
                                                                (self.opts.panels and not row.get("panel"))):
            return True
        return input_sha256(it) != row.get("input_sha256")

    def run(self, *, progress: bool) -> dict:
        from tqdm import tqdm

        t0 = time.perf_counter()
        bar = tqdm(total=len(self.todo), disable=not progress, unit="img", desc="brisc-infer")
        interrupted, full = None, None
        try:
            for decoded, res, seconds in self.batches():
                self.model_seconds += seconds
                for d in decoded:
                    if d.error:
                        self.failures += 1
                        self.writer.error(d.item.key, d.error)
                ok = [d for d in decoded if not d.error]
                if ok:
                    self._run_batch(ok, res)
                bar.update(len(decoded))
        except KeyboardInterrupt as e:  # the batch being decoded is dropped; computed ones are written below
            interrupted = e
        except OSError as e:
            if e.errno not in DISK_FULL:
                raise
            full = e
        finally:
            try:
                if full is None:
                    self._finish(keep=0)
            except OSError as e:
                if e.errno not in DISK_FULL:
                    raise
                full = e
            finally:
                self.render_pool.shutdown(wait=True)
                bar.close()
                self.writer.close(rewrite=full is None)
        if full is not None:
            raise OutOfSpaceError(f"{self.out}: no space left on the device ({full.strerror}); the {len(self.writer.done)} "
                                  "complete rows are kept and none is torn: free some space and continue with --resume")
        summary = self._summary(time.perf_counter() - t0, interrupted)
        if interrupted is not None:
            raise interrupted
        return summary

    @property
    def display(self) -> str | None:
        """What decode_item keeps to draw on: None without heatmaps, "panel" for full-resolution panels."""
        if not (self.opts.heatmaps and self.method is not None):
            return None
        return "panel" if self.opts.panels else "overlay"

    def batches(self) -> Iterator[tuple[list[Decoded], dict[str, np.ndarray], float]]:
        """The engine: (decoded items, the session's outputs for those that decoded, seconds in the session), batch
        by batch in the order of ``todo``. Here decode threads and this process's session; ``--engine ray`` puts
        Ray Data in its place (brisc.inference.ray_engine), and the rest of the run is the same."""
        if self.opts.engine == "ray":
            from brisc.inference.ray_engine import ray_batches

            yield from ray_batches(self)
            return
        batch: list[Decoded] = []
        for d in prefetch(self.todo, lambda i: decode_item(i, self.sess.prep, self.display), workers=self.opts.workers,
                          depth=2 * self.opts.batch_size):
            batch.append(d)
            if sum(not b.error for b in batch) >= self.opts.batch_size:
                yield self._infer(batch)
                batch = []
        if batch:
            yield self._infer(batch)

    def _infer(self, batch: list[Decoded]) -> tuple[list[Decoded], dict[str, np.ndarray], float]:
        ok = [d for d in batch if not d.error]
        if not ok:
            return batch, {}, 0.0
        t = time.perf_counter()
        res = self.sess.run(np.stack([d.x for d in ok]), self.outputs)
        return batch, res, time.perf_counter() - t

    @property
    def outputs(self) -> list[str]:
        """The session outputs a run reads: probabilities, ood_score, and the map it draws."""
        want = {"probabilities", "ood_score"}
        if self.method is not None:  # occlusion needs no map output: it runs the model itself
            want.add({"auto": "heatmap", "rollout": "rollout", "cls": "attentions"}.get(self.opts.explain, ""))
        return [n for n in self.sess.output_names if n in want]

    def _run_batch(self, batch: list[Decoded], res: dict[str, np.ndarray]) -> None:
        # The inputs, for occlusion and the faithfulness curves (the Ray engine returns them only for those)
        x = np.stack([d.x for d in batch]) if batch[0].x is not None else None
        probs = res["probabilities"]
        pred = probs.argmax(1)
        ood = res.get("ood_score")
        maps = self._maps(res, x, pred, probs)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        rows, renders = [], []
        for k, d in enumerate(batch):
            row = self._row(d, probs[k], now, None if ood is None else float(ood[k]))
            mask = None
            if maps is not None and self.opts.masks is not None:
                mask = self._score(row, d.item, None if x is None else x[k], maps[k], int(pred[k]))
            if maps is not None and self.opts.heatmaps:
                row["heatmap"] = "pending"
                renders.append(self.render_pool.submit(render, self.out, d.item, d.display, maps[k], row, self.method,
                                                       self.opts, mask))
            rows.append(row)
        self.pending.append((rows, renders))
        self.new += len(rows)
        self._finish(keep=1)  # the previous batch's heatmaps were drawn while this batch decoded and ran

    def _maps(self, res: dict, x: np.ndarray, pred: np.ndarray, probs: np.ndarray) -> np.ndarray | None:
        m = self.method
        if m is None:
            return None
        if self.opts.explain == "auto":
            return res["heatmap"]  # the graph's recommended map
        if m == "rollout":
            return res["rollout"]
        if m == "cls":
            return cls_map(res["attentions"]).astype(np.float32)  # last layer, mean over heads
        return occlusion_maps(self._predict, x, pred, probs, batch_size=self.opts.batch_size)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.sess.run(images, ["probabilities"])["probabilities"]

    def _row(self, d: Decoded, p: np.ndarray, now: str, ood_score: float | None) -> dict:
        it = d.item
        return new_row(path=it.rel, frame=it.frame, volume=it.volume,
                       probabilities={c: round(float(p[j]), 6) for j, c in enumerate(self.sess.classes)},
                       ood_score=ood_score,
                       in_distribution=in_distribution(ood_score, self.threshold, always_flagged=d.always_flagged),
                       true_label=ground_truth(it), explain=self.method, model=self.sess.name,
                       model_sha256=self.sess.card.model_sha256, provider=self.sess.provider, input_sha256=d.sha256,
                       time=now)

    def _mask_error(self, it: Item, mp: Path, reason: str) -> None:
        self.failures += 1
        self.writer.error(it.key, f"{mp}: {reason}; the scan is classified without mask figures")
        return None

    def _score(self, row: dict, it: Item, x: np.ndarray, m: np.ndarray, pred: int) -> np.ndarray | None:
        """Pointing game and energy against the scan's mask; deletion/insertion AUC for the first
        ``--faithfulness`` scans with a mask (29 extra passes each). Returns the mask (None without one)."""
        mp = mask_for(self.opts.masks, it)
        if not mp.is_file():
            return None
        row["mask"] = mp.name
        try:
            mask = load_mask(mp)
        except (OSError, ValueError) as e:  # the scan keeps its row; the mask is this run's error
            return self._mask_error(it, mp, f"unreadable mask ({e})")
        size = image_size(it.path, it.frame or 0)  # from the header, only for a scan that has a mask
        if size is not None and mask.shape != (size[1], size[0]):
            return self._mask_error(it, mp, f"mask is {mask.shape[1]}x{mask.shape[0]}, the scan {size[0]}x{size[1]}")
        up = resize_map(m, mask.shape)
        row["pointing_hit"] = pointing_game(up, mask)
        row["energy_in_mask"] = energy_in_mask(up, mask)
        row["mask_area"] = float(mask.mean())
        row["pointing_chance"] = pointing_chance(mask)
        if row["pointing_hit"] is not None and it.key in self.faithful:
            # The map's order against a seeded random order of the same patches: the reference it must beat.
            rand = random_maps(1, m.shape[-1], seed=zlib.crc32(it.key.encode("utf-8", "surrogateescape")))
            c = perturbation_curves(self._predict, np.stack([x, x]), np.stack([m, rand[0]]),
                                    classes=np.array([pred, pred]))
            da, ia = auc(c["deletion"]), auc(c["insertion"])
            row.update(deletion_auc=float(da[0]), insertion_auc=float(ia[0]),
                       deletion_auc_random=float(da[1]), insertion_auc_random=float(ia[1]))
        return mask

    def _finish(self, keep: int) -> None:
        """Write the rows of every pending batch but the last ``keep``, once their heatmaps are on disk.
        A batch leaves ``pending`` only after its rows are written, so an interruption cannot lose it."""
        while len(self.pending) > keep:
            rows, renders = self.pending[0]
            for f in renders:
                error = f.result()
                if error:
                    self.failures += 1
                    self.writer.error(*error)
            self.writer.add(rows)
            self.pending.pop(0)

    def _summary(self, elapsed: float, interrupted: KeyboardInterrupt | None) -> dict:
        rows = list(self.writer.done.values())
        summary = summarise(rows, card=self.sess.card, model=self.sess.name, provider=self.sess.provider,
                            failures=self.failures, skipped=self.col.skipped, shard=self.opts.shard,
                            duplicates=self.col.duplicates,
                            new=self.new, elapsed=elapsed, model_seconds=self.model_seconds, threshold=self.threshold,
                            threshold_source="--ood-threshold" if self.opts.ood_threshold is not None else "model card")
        if interrupted is not None:
            summary["interrupted"] = True
        publish(self.out, rows, self.sess.card, summary, skipped=self.col.skipped, gallery=self.opts.heatmaps,
                rule=(self.opts.volume_slices, self.opts.volume_probability))
        return summary



