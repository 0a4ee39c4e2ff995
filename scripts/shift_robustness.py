"""How much does a graph's answer depend on where the head sits in the frame? Accuracy with the scan moved a few px.

    python scripts/shift_robustness.py [--model default.onnx] [--data ../shared/data/brisc2025]

On the validation split of the group split, through the exported graph: every scan moved by 4, 8 and 16 px (of 224:
2-7% of the side) down, up, right and left, and 8 and 16 px diagonally, the gap black (``brisc.maps.shift_scans``);
accuracy and the share flagged out of distribution (the card's threshold) at each shift. BRISC's scans are framed
alike, so a model can lean on where the head is; a user's scans need not be framed like BRISC's.
"""

from __future__ import annotations

import json

import numpy as np

from brisc.imageio import load
from brisc.maps import shift_scans
from graph_study import graph_and_split, study_parser

SHIFTS = [(0, 0)] + [v for d in (4, 8, 16) for v in ((d, 0), (-d, 0), (0, d), (0, -d))] + [(8, 8), (16, 16)]


def main() -> None:
    sess, splits = graph_and_split(study_parser(__doc__).parse_args())
    val = splits.val
    y = np.array([s.label for s in val])
    names = ["logits"] + (["ood_score"] if "ood_score" in sess.card.outputs and sess.card.ood else [])
    pred, score = {d: [] for d in SHIFTS}, {d: [] for d in SHIFTS}
    for i in range(0, len(val), 64):
        x = np.stack([load(s.path) for s in val[i:i + 64]])
        for d in SHIFTS:
            o = sess.run(np.ascontiguousarray(shift_scans(x, *d)), names)
            pred[d].append(o["logits"].argmax(1))
            score[d].append(o.get("ood_score", np.zeros(len(x))))
    threshold = (sess.card.ood or {}).get("threshold")
    print(f"{sess.name}, {len(val)} validation scans\n\n| shift (down, right) px | accuracy | errors | flagged |"
          "\n|---|---:|---:|---:|")
    out = {}
    for d in SHIFTS:
        p, sc = np.concatenate(pred[d]), np.concatenate(score[d])
        r = out[f"{d[0]},{d[1]}"] = {"accuracy": float((p == y).mean()), "errors": int((p != y).sum()),
                                     "flagged": float((sc > threshold).mean()) if threshold is not None else None}
        flagged = f"{r['flagged']:.3f}" if r["flagged"] is not None else "-"
        print(f"| {d[0]:+d}, {d[1]:+d} | {r['accuracy']:.3f} | {r['errors']} | {flagged} |")
    worst = min(out.values(), key=lambda r: r["accuracy"])["accuracy"]
    print(f"\nworst {worst:.3f} against {out['0,0']['accuracy']:.3f} unmoved; mean over the moved views "
          f"{np.mean([r['accuracy'] for k, r in out.items() if k != '0,0']):.3f}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
