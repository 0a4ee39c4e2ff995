"""summary.json: counts, accuracy against the truth when known, and the maps against tumour masks, in plain words."""

from __future__ import annotations

from collections import Counter

import numpy as np

from brisc.sidecar import ModelCard
from brisc.metrics import classification_metrics


def summarise(rows: list[dict], *, card: ModelCard, model: str, provider: str, failures: int,
              skipped: list[tuple[str, str]], new: int, elapsed: float, model_seconds: float,
              threshold: float | None = None, threshold_source: str = "model card", duplicates: int = 0,
              shard: tuple[int, int] | None = None) -> dict:
    """summary.json's content; the model card goes in whole, so that the folder says what made its rows (merge
    reads it back)."""
    classes = list(card.classes)
    counts = Counter(r["predicted"] for r in rows)
    s = {
        "model": model, "model_sha256": card.model_sha256, "model_kind": card.model_kind,
        "provider": provider, "classified": len(rows), "classified_this_run": new, "failures": failures,
        "skipped_non_images": len(skipped), "skipped": [{"path": p, "reason": r} for p, r in skipped[:100]],
        "duplicates_ignored": duplicates, "predicted_per_class": {c: counts.get(c, 0) for c in classes},
        "seconds": round(elapsed, 3), "img_per_s": round(new / elapsed, 2) if elapsed > 0 and new else None,
        "model_img_per_s": round(new / model_seconds, 2) if model_seconds > 0 else None,
        "note": "research use only: not a medical device",
    }
    flags = [r.get("in_distribution") for r in rows]
    s["out_of_distribution"] = sum(f is False for f in flags)
    s["ood"] = {"score": (card.ood or {}).get("score"), "threshold": threshold, "threshold_from": threshold_source,
                "in_distribution": sum(f is True for f in flags), "out_of_distribution": s["out_of_distribution"],
                "unknown": sum(f is None for f in flags),
                "meaning": "out_of_distribution: the scan is not like the training scans, so its class is not "
                           "reliable; in distribution does not mean correct"}
    labelled = [r for r in rows if r["true_label"] in classes]
    if labelled:
        s["ground_truth"] = ground_truth_summary(labelled, classes)
        inside = [r for r in labelled if r.get("in_distribution") is True]
        if inside and len(inside) < len(labelled):
            s["ground_truth_in_distribution"] = ground_truth_summary(inside, classes)
    scored = [r for r in rows if r.get("pointing_hit") is not None]
    if scored:
        s["masks"] = mask_summary(scored)
    if shard is not None:
        s["shard"] = {"index": shard[0], "count": shard[1]}
    s["model_card"] = card.to_json()
    return s


def ground_truth_summary(labelled: list[dict], classes: list[str]) -> dict:
    """Accuracy, macro-F1 over the classes that occur in the ground truth (a class with no scans has no
    meaningful F1), and the confusion matrix with its axes named."""
    y = np.array([classes.index(r["true_label"]) for r in labelled])
    p = np.array([[r["probabilities"][c] for c in classes] for r in labelled])
    m = classification_metrics(np.log(np.clip(p, 1e-12, 1)), y)  # log-probabilities: same argmax and ranks
    present = [c for c in classes if m["per_class"][c]["support"] > 0]
    return {"n": len(labelled), "accuracy": m["accuracy"],
            "macro_f1": float(np.mean([m["per_class"][c]["f1"] for c in present])), "macro_f1_classes": present,
            "classes": classes, "confusion": m["confusion"],
            "confusion_axes": "rows: true class, columns: predicted class, both in the order of 'classes'"}


FAITHFULNESS = ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random")


def faithfulness(rows: list[dict]) -> dict:
    """Mean deletion/insertion AUC of the maps, and of a seeded random patch order on the same scans."""
    return {k: (float(np.mean([r[k] for r in rows if r.get(k) is not None]))
                if any(r.get(k) is not None for r in rows) else None) for k in FAITHFULNESS}


def by_class(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by true class where the name gives it, else by predicted class."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r.get("true_label") or r["predicted"], []).append(r)
    return out


def mask_summary(scored: list[dict]) -> dict:
    """The maps against the tumour masks, with the pointing game's chance level and what it means."""
    en = [r["energy_in_mask"] for r in scored if r["energy_in_mask"] is not None]
    chance = [r["pointing_chance"] for r in scored if r.get("pointing_chance") is not None]
    faithful = [r for r in scored if r.get("deletion_auc") is not None]
    m = {"n": len(scored), "pointing_game": float(np.mean([r["pointing_hit"] for r in scored])),
         "pointing_chance": float(np.mean(chance)) if chance else None,
         "energy_in_mask": float(np.mean(en)) if en else None,
         "mask_area_fraction": float(np.mean([r["mask_area"] for r in scored])),
         "faithfulness_n": len(faithful), **faithfulness(faithful),
         "faithfulness_per_class": {c: {"n": len(rs), **faithfulness(rs)} for c, rs in sorted(by_class(faithful).items())}}
    m["explanation"] = (
        f"The map's brightest point fell on the tumour (within 15 px of its mask) in {m['pointing_game']:.0%} of "
        f"{m['n']} scans with a mask; a point picked at random would land there in "
        f"{m['pointing_chance'] or 0:.0%}. {m['energy_in_mask'] or 0:.0%} of the map's mass lay inside the mask, "
        f"which covers {m['mask_area_fraction']:.1%} of a scan. This says where the model looked, not that it "
        f"looked for the right reason.")
    return m
