"""One answer per volume from its slices' rows: volumes.csv / volumes.jsonl, summary.json's ``volumes`` and a
contact sheet per volume (with --heatmaps).

The rule (stated in every row): a tumour class when at least K contiguous slices, each in distribution, predict
that class with probability at least t (the longest such run wins, then the higher peak); otherwise no_tumor.
BRISC's slices were chosen by people to show the tumour or a tumour-free brain; a whole volume also holds many
slices without the tumour and slices unlike any BRISC slice (the top of the head, the neck), so the rule asks
for agreement across neighbouring slices rather than trusting one. It is a screening summary of the slice
answers, not a diagnosis, and it has not been validated on volumes with known labels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

from brisc.fsio import atomic_path
from brisc.inference.heatmap import font
from brisc.inference.outdir import VOLUMES, VOLUMES_CSV, VOLUMES_JSONL
from brisc.inference.outputs import output_path, spreadsheet_safe
from brisc.volumes import nifti_stem

NO_TUMOR = "no_tumor"
SHEET_TILES, TILE = 8, 192
FIELDS = ["volume", "series_uid", "predicted", "slices", "background_slices_skipped", "driving_slices",
          "strongest_slice", "strongest_probability", "out_of_distribution_slices", "in_distribution", "true_label",
          "correct", "rule", "contact_sheet"]


def rule_text(k: int, t: float) -> str:
    return (f"a tumour class when >= {k} contiguous in-distribution slices predict it with probability >= {t:g}; "
            "otherwise no_tumor")


def _runs(slices: list[dict], cls: str, t: float) -> list[list[dict]]:
    """Maximal runs of consecutive slice numbers that predict ``cls`` at >= t, in distribution."""
    runs, cur = [], []
    for r in slices:
        ok = r["predicted"] == cls and r["probabilities"][cls] >= t and r.get("in_distribution") is not False
        if ok and cur and r["frame"] == cur[-1]["frame"] + 1:
            cur.append(r)
        else:
            if cur:
                runs.append(cur)
            cur = [r] if ok else []
    return runs + ([cur] if cur else [])


def decide(slices: list[dict], classes: list[str], *, k: int, t: float) -> tuple[str, list[dict], dict]:
    """-> (the volume's class, the slices that drove it, the slice with the strongest evidence). ``slices``: one
    volume's rows, sorted by slice number."""
    runs = [run for c in classes if c != NO_TUMOR for run in _runs(slices, c, t)]
    best = max(runs, key=lambda run: (len(run), max(r["probability"] for r in run)), default=[])
    if len(best) >= k:
        return best[0]["predicted"], best, max(best, key=lambda r: r["probability"])
    tumour = lambda r: 1.0 - r["probabilities"].get(NO_TUMOR, 0.0)  # noqa: E731
    return NO_TUMOR, [], max(slices, key=tumour)


def volume_rows(rows: list[dict], classes: list[str], skipped: list[tuple[str, str]], *, k: int,
                t: float) -> list[dict]:
    """One row per volume among ``rows`` (the slice rows that name a volume)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r.get("volume") is not None:
            groups.setdefault(r["path"], []).append(r)
    out = []
    for path, slices in sorted(groups.items()):
        slices.sort(key=lambda r: r["frame"])
        cls, driving, strongest = decide(slices, classes, k=k, t=t)
        flagged = sum(r.get("in_distribution") is False for r in slices)
        truths = {r["true_label"] for r in slices if r.get("true_label")}
        truth = truths.pop() if len(truths) == 1 else None
        uid = slices[0]["volume"] if slices[0]["volume"] != path else None
        out.append({
            "volume": path, "series_uid": uid, "predicted": cls, "slices": len(slices),
            "background_slices_skipped": sum(s.startswith(path + "#frame") for s, _ in skipped),
            "driving_slices": [r["frame"] for r in driving], "strongest_slice": strongest["frame"],
            "strongest_probability": round(float(strongest["probabilities"][cls] if cls != NO_TUMOR else
                                                 1.0 - strongest["probabilities"].get(NO_TUMOR, 0.0)), 6),
            "out_of_distribution_slices": flagged, "in_distribution": flagged * 2 <= len(slices),
            "true_label": truth, "correct": (truth == cls) if truth else None, "rule": rule_text(k, t),
            "contact_sheet": None, "_slices": slices})
    return out


def outcome(v: dict) -> str:
    d = v["driving_slices"]
    if v["predicted"] == NO_TUMOR:
        return f"no_tumor: no run of slices agreed on a tumour class (strongest tumour evidence: slice {v['strongest_slice']})"
    return f"{v['predicted']}: {len(d)} contiguous slices ({d[0]}-{d[-1]}), the strongest {v['strongest_slice']}"


def contact_sheet(out: Path, v: dict) -> Path | None:
    """The volume's most telling slices (those that drove the answer, else the most tumour-like) with their
    maps and slice numbers, under the rule's outcome. None when its slices have no overlays."""
    slices = [r for r in v["_slices"] if r.get("heatmap")]
    if not slices:
        return None
    cls = v["predicted"]
    score = (lambda r: r["probabilities"][cls]) if cls != NO_TUMOR else (lambda r: 1 - r["probabilities"][NO_TUMOR])
    pool = [r for r in slices if r["frame"] in set(v["driving_slices"])] or slices
    tiles = sorted(sorted(pool, key=score, reverse=True)[:SHEET_TILES], key=lambda r: r["frame"])
    cols = min(4, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    head, cap = 44, 22
    sheet = Image.new("RGB", (cols * TILE, head + rows * (TILE + cap)), (16, 16, 16))
    draw = ImageDraw.Draw(sheet)
    flag = "" if v["in_distribution"] else f"  [{v['out_of_distribution_slices']} slices not like the training scans]"
    draw.text((6, 4), f"{v['volume']}", fill=(235, 235, 235), font=font(15))
    draw.text((6, 23), outcome(v) + flag, fill=(255, 210, 90) if flag else (170, 220, 170), font=font(13))
    for n, r in enumerate(tiles):
        x, y = (n % cols) * TILE, head + (n // cols) * (TILE + cap)
        with Image.open(out / r["heatmap"]) as im:
            tile = im.convert("RGB")
        tile.thumbnail((TILE, TILE))
        sheet.paste(tile, (x + (TILE - tile.width) // 2, y + (TILE - tile.height) // 2))
        odd = r.get("in_distribution") is False
        draw.text((x + 4, y + TILE + 3), f"slice {r['frame']}: {r['predicted']} {r['probability']:.2f}"
                  + (" (not like training)" if odd else ""), fill=(255, 150, 120) if odd else (220, 220, 220),
                  font=font(12))
    path = output_path(out, VOLUMES, nifti_stem(v["volume"]), ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", compress_level=1)
    return path


def write_volumes(out: Path, rows: list[dict], classes: list[str], skipped: list[tuple[str, str]], *, k: int,
                  t: float, sheets: bool) -> dict | None:
    """volumes.csv, volumes.jsonl and (with ``sheets``) the contact sheets; -> summary.json's ``volumes`` (None
    without volumes)."""
    vols = volume_rows(rows, classes, skipped, k=k, t=t)
    if not vols:
        return None
    for v in vols:
        if sheets:
            p = contact_sheet(out, v)
            v["contact_sheet"] = p.relative_to(out).as_posix() if p else None
        del v["_slices"]
    with atomic_path(out / VOLUMES_JSONL) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(v, ensure_ascii=False) + "\n" for v in vols)
    with atomic_path(out / VOLUMES_CSV) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(v | {"volume": spreadsheet_safe(v["volume"]),
                         "driving_slices": " ".join(map(str, v["driving_slices"]))} for v in vols)
    counts = {c: sum(v["predicted"] == c for v in vols) for c in classes}
    return {"n": len(vols), "rule": rule_text(k, t), "rule_parameters": {"slices": k, "probability": t},
            "predicted_per_class": counts, "out_of_distribution": sum(not v["in_distribution"] for v in vols),
            "volumes": [{f: v[f] for f in ("volume", "predicted", "slices", "driving_slices", "strongest_slice",
                                           "in_distribution", "contact_sheet")} for v in vols[:100]],
            "meaning": "a summary of the slice answers by the rule above, for research screening; not a diagnosis"}
