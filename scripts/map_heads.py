"""Which [CLS] map of the guided layer puts most of its mass on the tumour: the heads fused (mean, max) or one head?

    python scripts/map_heads.py [--model default.onnx] [--data ../shared/data/brisc2025] [--train 600]

Every candidate is made from the graph's own ``attentions`` output (``brisc.maps.cls_map``). The map is chosen on
training scans: highest energy in the mask among the maps whose pointing is at most ``--slack`` below the best's and
that are faithful for every tumour class (deletion AUC below, insertion AUC above a random patch order's, on
``--faithful`` scans a class; ``brisc.faithfulness``). It is reported on the validation masks of the group split
(seed 0, 10%: the split the shipped model was trained on), per class, with the faithfulness test on ``--faithful-val``
validation tumour scans: validation never chooses. A chosen map goes into a graph with ``brisc-export --heatmap``.
"""

from __future__ import annotations

import json

import numpy as np

from brisc.data import classes_in_turn, load_mask
from brisc.export.wrapper import HeatmapSpec
from brisc.faithfulness import auc, perturbation_curves, random_maps
from brisc.imageio import load
from brisc.maps import cls_map, resize_map
from brisc.metrics import energy_in_mask, pointing_game
from graph_study import graph_and_split, study_parser


def candidates(layer: int, heads: int) -> list[str]:
    return [f"cls:layer={layer}", f"cls:layer={layer}:max", *(f"cls:layer={layer}:head={h}" for h in range(1, heads + 1))]


def spec_map(att: np.ndarray, h: HeatmapSpec) -> np.ndarray:
    """The cls map ``h`` of the graph's attentions [B, L, H, P] -> [B, g, g]."""
    return cls_map(att, layer=h.layer, head_fusion=h.head_fusion, head=h.head)


def scores(samples, sess, specs: list[str]) -> dict:
    """{spec: (pointing hits [N], energies [N])} from the graph's attentions."""
    out = {s: ([], []) for s in specs}
    parsed = {s: HeatmapSpec.parse(s) for s in specs}
    for i in range(0, len(samples), 32):
        chunk = samples[i:i + 32]
        att = sess.run(np.stack([load(s.path) for s in chunk]), ["attentions"])["attentions"]
        masks = [load_mask(s.mask) for s in chunk]
        for s, h in parsed.items():
            for m, mask in zip(spec_map(att, h), masks):
                up = resize_map(m, mask.shape)
                out[s][0].append(pointing_game(up, mask))
                out[s][1].append(energy_in_mask(up, mask))
    return {k: (np.asarray(p, float), np.asarray(e, float)) for k, (p, e) in out.items()}


def faithfulness(samples, sess, specs: list[str]) -> dict:
    """{spec or "random": {class: (deletion AUC, insertion AUC)}}, each class's mean over its scans."""
    parsed = {s: HeatmapSpec.parse(s) for s in specs}
    curves = {k: {} for k in [*specs, "random"]}
    predict = lambda x: sess.run(x, ["probabilities"])["probabilities"]  # noqa: E731
    for i, smp in enumerate(samples):
        x = load(smp.path)[None]
        att = sess.run(x, ["attentions"])["attentions"]
        maps = {s: spec_map(att, h) for s, h in parsed.items()}
        maps["random"] = random_maps(1, int(round(np.sqrt(att.shape[-1]))), seed=i)
        for k, m in maps.items():
            c = perturbation_curves(predict, x, m)
            curves[k].setdefault(smp.class_name, []).append((auc(c["deletion"])[0], auc(c["insertion"])[0]))
    return {k: {c: tuple(np.mean(v, 0)) for c, v in per.items()} for k, per in curves.items()}


def auc_pair(per_class: dict, c: str) -> str:
    return f"{per_class[c][0]:.3f} / {per_class[c][1]:.3f}" if c in per_class else "-"


def main() -> None:
    ap = study_parser(__doc__)
    ap.add_argument("--train", type=int, default=600, help="training masks to choose on (every k-th)")
    ap.add_argument("--slack", type=float, default=0.01, help="how much training pointing the chosen map may lose")
    ap.add_argument("--faithful", type=int, default=20, help="training scans a tumour class for the faithfulness test")
    ap.add_argument("--faithful-val", type=int, default=100, help="validation tumour scans (classes in turn) for it")
    a = ap.parse_args()
    sess, splits = graph_and_split(a)
    own = HeatmapSpec.parse(sess.card.heatmap if sess.card.heatmap.startswith("cls") else "cls")
    shape = [o for o in sess.session.get_outputs() if o.name == "attentions"][0].shape  # [B, L, H, P]
    layer = own.layer % shape[1] + 1
    specs = candidates(layer, shape[2])
    tr = [s for s in splits.train if s.mask]
    tr = tr[:: max(1, len(tr) // a.train)][: a.train]
    va = [s for s in splits.val if s.mask]
    t = scores(tr, sess, specs)
    tumours = classes_in_turn([s for s in splits.train if s.mask], label=lambda s: s.class_name)
    n_classes = len({s.class_name for s in tumours})
    f = faithfulness(tumours[: a.faithful * n_classes], sess, specs)
    rnd = f["random"]
    faithful = {s: all(f[s][c][0] < rnd[c][0] and f[s][c][1] > rnd[c][1] for c in rnd) for s in specs}
    best = max(t[s][0].mean() for s in specs)
    eligible = [s for s in specs if t[s][0].mean() >= best - a.slack and faithful[s]]
    chosen = max(eligible, key=lambda s: t[s][1].mean()) if eligible else None
    cls = sorted(rnd)
    print(f"the graph's own map: {sess.card.heatmap}; training: {len(tr)} masks, {a.faithful} scans a class for "
          f"deletion / insertion AUC\n\n| map | pointing | energy | " + " | ".join(cls) + " | faithful |\n"
          "|---|---:|---:|" + "---:|" * len(cls) + "---|")
    for s in [*specs, "random"]:
        pe = f"{t[s][0].mean():.3f} | {t[s][1].mean():.3f}" if s in t else "- | -"
        print(f"| {s} | {pe} | " + " | ".join(auc_pair(f[s], c) for c in cls)
              + f" | {('yes' if faithful[s] else 'no') if s in faithful else ''} |")
    shown = list(dict.fromkeys([specs[0], *([chosen] if chosen else []), max(specs, key=lambda s: t[s][1].mean())]))
    v = scores(va, sess, shown)
    classes = np.array([s.class_name for s in va])
    print(f"\nchosen on {len(tr)} training masks: {chosen or 'none (no map is faithful and points as well)'}; "
          f"validation ({len(va)} masks):\n\n"
          f"| class | masks | pointing: {' / '.join(shown)} | energy: {' / '.join(shown)} |\n|---|---:|---:|---:|")
    rows = {}
    for c in [*sorted(set(classes)), "all"]:
        sel = np.ones(len(va), bool) if c == "all" else classes == c
        p, e = [v[s][0][sel].mean() for s in shown], [v[s][1][sel].mean() for s in shown]
        rows[c] = {"n": int(sel.sum()), "pointing": p, "energy": e}
        print(f"| {c} | {sel.sum()} | {' / '.join(f'{x:.3f}' for x in p)} | {' / '.join(f'{x:.3f}' for x in e)} |")
    vf = faithfulness(classes_in_turn(va, label=lambda s: s.class_name)[: a.faithful_val], sess, shown)
    print(f"\ndeletion / insertion AUC on {a.faithful_val} validation tumour scans (lower / higher is better)\n\n"
          "| map | " + " | ".join(cls) + " |\n|---|" + "---:|" * len(cls))
    for s in [*shown, "random"]:
        print(f"| {s} | " + " | ".join(auc_pair(vf[s], c) for c in cls) + " |")
    print(json.dumps({"chosen": chosen, "maps": shown, "validation": rows, "validation_faithfulness": vf}))


if __name__ == "__main__":
    main()
