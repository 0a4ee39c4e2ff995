"""Every out-of-distribution score of brisc.ood on one trained model: the table in docs/results.md.

    python scripts/ood_eval.py --run artifacts/runs/oe-conv [--kind vit] [--json out.json]
    python scripts/ood_eval.py --graph src/brisc/inference/models/default.onnx      # an exported graph's own flags

Fits the class-conditional Gaussians on the run's training split, sets each score's threshold on validation
(at most 5% flagged), and reports AUROC and flag rate per kind of outlier: the project's OOD evaluation set
(``brisc.ood_eval``: package images, pydicom's files, drawn pictures), the MNI152 template's axial slices (apart),
and, as a check of the training itself, fresh procedural outliers of the kinds outlier exposure trains on (another
seed) with the all-black frame and a scan with every patch deleted. PyTorch model, fp32; the exported graph
computes the same score (the export's self-check) and its own threshold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from brisc import CLASSES
from brisc.data import label_from_path
from brisc.export.loading import load_trained
from brisc.export.ood import fit_run, load_images, run_features
from brisc.metrics import classification_metrics, softmax
from brisc.imageio import DEFAULT
from brisc.ood import IMAGE_RULE, SCORES, evaluate, image_rule, score, threshold_for
from brisc.ood_eval import evaluation_set, mni152_slices
from brisc.runfolder import RunFolder
from brisc.train.outliers import KINDS, deleted, make_outliers


def trained_kinds(scans: np.ndarray, per_kind: int = 8, seed: int = 12345) -> dict[str, np.ndarray]:
    """Fresh outliers of the training kinds (a seed training never used), plus black and fully deleted scans."""
    torch.manual_seed(seed)
    x = torch.from_numpy(scans[:16])
    out = {"trained kinds (fresh draw)": make_outliers(x, per_kind * len(KINDS)).numpy()}
    out["all-black frame"] = np.full((1, *scans.shape[1:]), -1.0, np.float32)
    out["every patch deleted"] = deleted(x[:8], low=1.0).numpy()
    return out


def graph_report(graph: Path) -> None:
    """An exported graph with its card's threshold (onnxruntime, as brisc-infer runs it): the share of the evaluation
    set it flags, the images it lets through, and its answer on each MNI152 slice."""
    from brisc.inference.session import open_session

    sess = open_session(graph)
    t = sess.card.ood["threshold"]

    def run(x):
        out = [sess.run(x[i:i + 32], ["probabilities", "ood_score"]) for i in range(0, len(x), 32)]
        return np.concatenate([o["probabilities"] for o in out]), np.concatenate([o["ood_score"] for o in out])

    ev, _ = evaluation_set()
    images = np.stack([o.image for o in ev])
    p, s = run(images)
    flags = (s > t) | image_rule(images, sess.prep.mean, sess.prep.std)  # as brisc-infer flags them
    passed = [(o.name, sess.classes[int(q.argmax())], float(q.max())) for o, q, f in zip(ev, p, flags) if not f]
    print(f"{graph}: threshold {t:.4g} ({sess.card.ood['score']}); flags {flags.mean():.3f} of the {len(ev)} "
          f"evaluation images ({(s > t).mean():.3f} by the score alone, the rest by the image rule: {IMAGE_RULE}); "
          "not flagged: " + (", ".join(f"{n} ({c} {q:.3f})" for n, c, q in passed) or "none"))
    mni = mni152_slices()
    for o, q, v in zip(mni, *run(np.stack([o.image for o in mni]))):
        print(f"  {o.name}: {sess.classes[int(q.argmax())]} {q.max():.3f}, ood_score {v:.1f} "
              + ("flagged" if v > t else "in distribution"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None)
    ap.add_argument("--kind", default="vit")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--graph", type=Path, default=None, help="report an exported graph's own flags instead")
    a = ap.parse_args()
    if a.graph is not None:
        return graph_report(a.graph)
    if a.run is None:
        ap.error("--run or --graph")

    tm = load_trained(a.run, a.kind)
    model, temperature = tm.model.eval(), float(tm.config.get("temperature", 1.0))
    stats = fit_run(model, a.run)
    val_paths = RunFolder(a.run).val_paths()
    val_images, keep = load_images(val_paths)
    y = np.array([CLASSES.index(label_from_path(val_paths[i])) for i in keep])
    f_val, l_val = run_features(model, val_images)
    acc = classification_metrics(l_val, y, temperature)["accuracy"]

    groups: dict[str, np.ndarray] = {}
    ev, sources = evaluation_set()
    for kind in sorted({o.kind for o in ev}):
        groups[f"evaluation set: {kind}"] = np.stack([o.image for o in ev if o.kind == kind])
    groups["evaluation set: all"] = np.stack([o.image for o in ev])
    mni = mni152_slices()
    if mni:
        groups["MNI152 template slices (apart)"] = np.stack([o.image for o in mni])
    groups |= trained_kinds(val_images)

    results: dict = {"val_accuracy": acc, "val_n": len(y), "sources": sources, "scores": {}}
    feats = {g: run_features(model, imgs) for g, imgs in groups.items()}
    for name in SCORES:
        s_val = score(name, logits=l_val, features=f_val, stats=stats, temperature=temperature)
        t = threshold_for(s_val)
        res = {}
        for g, (f, lg) in feats.items():
            s = score(name, logits=lg, features=f, stats=stats, temperature=temperature)
            res[g] = evaluate(s_val, s, t) | {"max_probability": float(softmax(lg, temperature).max(1).max())}
        results["scores"][name] = res

    print(f"validation: {len(y)} scans, accuracy {acc:.4f} (temperature {temperature:.3f}); OOD evaluation set "
          f"sources: {sources}")
    head = list(groups)
    print("| score | " + " | ".join(head) + " |")
    print("|---|" + "---:|" * len(head))
    for name, res in results["scores"].items():
        print(f"| {name} | " + " | ".join(f"{res[g]['auroc']:.3f} / {res[g]['ood_flag_rate']:.2f}" for g in head) + " |")
    print("(each cell: AUROC against validation / share flagged at the threshold that flags at most 5% of validation; "
          f"validation flag rate {results['scores']['mahalanobis']['evaluation set: all']['id_flag_rate']:.3f})")
    rule = {g: image_rule(imgs, DEFAULT.mean, DEFAULT.std) for g, imgs in groups.items()}
    s_val = score("mahalanobis", logits=l_val, features=f_val, stats=stats)
    t = threshold_for(s_val)
    with_rule = {g: float(((score("mahalanobis", logits=lg, features=f, stats=stats) > t) | rule[g]).mean())
                 for g, (f, lg) in feats.items()}
    results["mahalanobis_with_image_rule"] = with_rule
    print(f"mahalanobis with the image rule (brisc-infer's flags; {IMAGE_RULE}): "
          + ", ".join(f"{g} {v:.2f}" for g, v in with_rule.items()))
    top = {g: results["scores"]["mahalanobis"][g]["max_probability"] for g in head}
    print("highest class probability in each group: " + ", ".join(f"{g} {p:.3f}" for g, p in top.items()))
    if a.json:
        a.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
