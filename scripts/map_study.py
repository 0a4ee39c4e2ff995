"""What the map-refinement studies share (``map_upsampling.py``, ``stem_maps.py``): a run's masked scans, a setting
chosen on training masks only, and its validation figures per class."""

from __future__ import annotations

import numpy as np

from brisc.data import discover
from brisc.runfolder import RunFolder


def masked_samples(rf: RunFolder, n_train: int) -> tuple[list, list]:
    """(every k-th training scan with a mask, at most ``n_train``; every validation scan with a mask)."""
    train, val = set(rf.train_paths()), set(rf.val_paths())
    masked = [s for s in discover(rf.data_root("vit")).samples if s.mask]
    tr = [s for s in masked if s.path in train]
    return tr[:: max(1, len(tr) // n_train)][:n_train], [s for s in masked if s.path in val]


def choose_and_report(score, tr: list, va: list, grid: list, *, slack: float, name, every: bool = False) -> dict | None:
    """``score(samples, settings)`` -> {setting: (pointing hits [N], energies [N])}, "bilinear" beside the settings.
    The setting of most training energy whose training pointing is at most ``slack`` below bilinear's is chosen and
    reported on validation per class (``every``: each setting's validation figures too, shown, never chosen on).
    Prints the tables; -> the figures, or None when no setting qualifies."""
    t = score(tr, grid)
    ok = [k for k in grid if t[k][0].mean() >= t["bilinear"][0].mean() - slack]
    chosen = max(ok, key=lambda k: t[k][1].mean()) if ok else None
    print("| setting | training pointing | training energy |\n|---|---:|---:|")
    for k in ["bilinear", *grid]:
        print(f"| {name(k)} | {t[k][0].mean():.3f} | {t[k][1].mean():.3f} |")
    if chosen is None:
        print(f"no setting keeps the training pointing game within {slack}: nothing to report on validation")
        return None
    v = score(va, grid if every else [chosen])
    classes = np.array([s.class_name for s in va])
    print(f"\nchosen on {len(tr)} training masks: {name(chosen)}; validation ({len(va)} masks):\n\n| class | masks | "
          "pointing: bilinear / chosen | energy: bilinear / chosen |\n|---|---:|---:|---:|")
    rows = {}
    for c in [*sorted(set(classes)), "all"]:
        sel = np.ones(len(va), bool) if c == "all" else classes == c
        b, g = v["bilinear"], v[chosen]
        rows[c] = {"n": int(sel.sum()), "pointing": [b[0][sel].mean(), g[0][sel].mean()],
                   "energy": [b[1][sel].mean(), g[1][sel].mean()]}
        print(f"| {c} | {sel.sum()} | {b[0][sel].mean():.3f} / {g[0][sel].mean():.3f} | "
              f"{b[1][sel].mean():.3f} / {g[1][sel].mean():.3f} |")
    out = {"chosen": chosen, "validation": rows}
    if every:
        print("\nevery setting on validation (shown, never chosen on):\n\n| setting | pointing | glioma pointing | "
              "energy |\n|---|---:|---:|---:|")
        gl = classes == "glioma"
        out["every_setting"] = {str(k): [v[k][0].mean(), v[k][0][gl].mean(), v[k][1].mean()] for k in ["bilinear", *grid]}
        for k in ["bilinear", *grid]:
            print(f"| {name(k)} | " + " | ".join(f"{x:.3f}" for x in out["every_setting"][str(k)]) + " |")
    return out
