"""What a brisc-infer run will do, decided before it starts: which map it draws, whether the masks folder is one,
whether a resume may continue the folder (same model, same maps, the same names, the same part), which scans get
the costly faithfulness curves, and the out-of-distribution threshold."""

from __future__ import annotations

import os
from pathlib import Path

from brisc.data import classes_in_turn
from brisc.inference.inputs import Item, ground_truth, mask_for
from brisc.inference.session import InferenceError, ModelSession


def skipped_text(skipped: list[tuple[str, str]], limit: int = 3) -> str:
    shown = ", ".join(f"{rel} ({why})" for rel, why in skipped[:limit])
    return shown + (f" and {len(skipped) - limit} more" if len(skipped) > limit else "")


def explain_method(opts, sess: ModelSession) -> str | None:
    """Which map to make (rollout | saliency | cls | occlusion); None when neither --heatmaps nor --masks asks."""
    if not opts.heatmaps and opts.masks is None:
        return None
    m = opts.explain
    if m == "auto":  # the graph's recommended map, as its sidecar names it (e.g. rollout, cls:layer=2, saliency)
        return sess.card.heatmap
    need = {"rollout": "rollout", "cls": "attentions"}.get(m)
    if need and need not in sess.output_names:
        raise InferenceError(f"--explain {m} needs the '{need}' output, which {sess.name} "
                             f"({sess.card.model_kind}) does not have; use --explain auto or occlusion")
    return m


def check_masks(opts, items: list[Item]) -> None:
    """A --masks folder that matches no scan is a wrong folder (its parent, the scans), not a run without masks."""
    if opts.masks is not None and not any(mask_for(opts.masks, it).is_file() for it in items):
        raise InferenceError(f"--masks {opts.masks}: no mask there matches a scan (a mask is <scan name>.png, e.g. "
                             f"{Path(items[0].rel).stem + '.png' if items else 'scan.png'}): is it the folder "
                             "that holds the masks themselves?")


def check_resume(opts, sess: ModelSession, method: str | None) -> str | None:
    """--resume continues one model's rows, with the same maps, on files named as before: -> the input root the
    run started from (None for a new folder). Anything else is refused in one line."""
    from brisc.inference.outdir import marker, previous_rows_model

    sha, explain = previous_rows_model(opts.out)
    if sha and sha != sess.card.model_sha256:
        raise InferenceError(f"--resume: {opts.out} holds the rows of another model (sha256 {sha}); this run's "
                             f"{sess.name} is sha256 {sess.card.model_sha256}: pass that run's --model, or a new --out")
    if explain and method and explain != method:
        raise InferenceError(f"--resume: the maps in {opts.out} are '{explain}', this run asks for '{method}': "
                             "resume with the same --explain, or use --overwrite or a new --out")
    mark = marker(opts.out)
    before = tuple(mark["shard"]) if mark.get("shard") else None
    if "root" in mark and before != opts.shard:
        said = lambda s: f"--shard {s[0]}/{s[1]}" if s else "no --shard"  # noqa: E731
        raise InferenceError(f"--resume: {opts.out} was started with {said(before)}, this run has {said(opts.shard)}: "
                             "resume each part with its own --shard and --out")
    root = mark.get("root")
    if root:
        outside = [i for i in opts.inputs if not (os.path.abspath(i) + os.sep).startswith(root.rstrip(os.sep) + os.sep)]
        if outside:
            raise InferenceError(f"--resume: {opts.out} was started on inputs under {root}; {outside[0]} lies outside "
                                 "it, so its files would get other names: resume with inputs under that folder, or "
                                 "use a new --out")
    return root or None


def faithfulness_keys(items: list[Item], opts) -> set[str]:
    """The scans that get deletion/insertion curves: at most ``--faithfulness`` of those with a mask, the classes
    (from file or folder names) taken in turn, so that every tumour class is measured, not the first by path."""
    if opts.masks is None or opts.faithfulness <= 0:
        return set()
    with_mask = [it for it in items if mask_for(opts.masks, it).is_file()]
    ordered = classes_in_turn(with_mask, label=ground_truth, path=lambda it: it.key)
    return {it.key for it in ordered[:opts.faithfulness]}


def ood_threshold(opts, sess: ModelSession) -> float | None:
    """--ood-threshold, else the model card's; None for a graph without ood_score (or a card without one)."""
    if "ood_score" not in sess.output_names:
        if opts.ood_threshold is not None:
            raise InferenceError(f"--ood-threshold: {sess.name} has no ood_score output (re-export it with this brisc)")
        return None
    if opts.ood_threshold is not None:
        return float(opts.ood_threshold)
    t = (sess.card.ood or {}).get("threshold")
    return None if t is None else float(t)


def in_distribution(score: float | None, threshold: float | None, *, always_flagged: bool = False) -> bool | None:
    """True: like the training scans by the threshold; False: not (always for a blank or coloured picture,
    brisc.ood.image_rule); None: unknown."""
    if always_flagged:
        return False
    if score is None or threshold is None:
        return None
    return bool(score <= threshold)  # NaN is flagged
