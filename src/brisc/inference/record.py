"""The record a run leaves once its rows are written: the per-volume answers (volumes.csv, contact sheets),
summary.json and the gallery, the same for a run and for ``brisc-infer merge``."""

from __future__ import annotations

from pathlib import Path

from brisc.fsio import write_json_atomic
from brisc.inference.outdir import GALLERY_HTML, SUMMARY_JSON


def publish(out: Path, rows: list[dict], card, summary: dict, *, skipped: list[tuple[str, str]], gallery: bool,
            rule: tuple[int, float]) -> None:
    """``rule``: the per-volume rule's (K slices, probability t), recorded in summary.json for merge."""
    from brisc.inference.per_volume import write_volumes

    summary["volume_rule"] = {"slices": rule[0], "probability": rule[1]}
    volumes = write_volumes(out, rows, list(card.classes), skipped, k=rule[0], t=rule[1], sheets=gallery)
    if volumes is not None:
        summary["volumes"] = volumes
    if gallery:
        summary["gallery"] = GALLERY_HTML
    write_json_atomic(out / SUMMARY_JSON, summary)
    if gallery:
        from brisc.inference.gallery import write_gallery

        write_gallery(out, rows, card, summary)
