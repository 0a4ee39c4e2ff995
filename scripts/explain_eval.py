"""Explanation quality of exported models on the validation tumour masks, through brisc-infer itself.

    python scripts/explain_eval.py --run artifacts/runs/brisc-cpu --export artifacts/export/brisc-cpu \
        [--occlusion-limit 100] [--examples docs/img]
    python scripts/explain_eval.py --also src/brisc/inference/models/default.onnx   # the shipped graph, no run

For every exported model (fp32 graphs) and every method it supports (its own heatmap, [CLS] attention for
the ViTs, occlusion for all), runs ``run_inference`` with ``--masks`` on the run's validation tumour images
and prints pointing game and energy in mask next to the mask area (what a uniform map's energy is), and the
deletion/insertion AUC of 100 of them, the tumour classes in turn (brisc-infer's --faithfulness), per class, each
beside the same curves under a seeded random patch order (the reference a faithful map must beat).
With --examples, copies two hits and two misses of the first model's own map as panel PNGs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from brisc.runfolder import RunFolder
from brisc.data import classes_in_turn, default_data_root, discover, make_splits
from brisc.inference.outdir import OutFolder
from brisc.inference.runner import InferOptions, run_inference
from brisc.inference.session import open_session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None,
                    help="the run whose validation split is used [default: the group split of --data, seed 0, 10%%]")
    ap.add_argument("--data", type=Path, default=default_data_root(), help="without --run")
    ap.add_argument("--export", type=Path, default=None, help="the run's exported graphs (with --run)")
    ap.add_argument("--models", default="vit,sae")
    ap.add_argument("--occlusion-limit", type=int, default=100, help="occlusion costs 196 passes an image")
    ap.add_argument("--examples", type=Path, default=None)
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="more .onnx graphs trained on the same split (e.g. an earlier default), own heatmap only")
    a = ap.parse_args()
    if not (a.also or (a.run and a.export)):
        ap.error("nothing to evaluate: give --run RUN --export DIR, or --also GRAPH")
    if a.run:
        rf = RunFolder(a.run)
        val, data = set(rf.val_paths()), rf.data_root(a.models.split(",")[0])
    else:
        val, data = {s.path for s in make_splits(discover(a.data)).val}, a.data
    samples = classes_in_turn([s for s in discover(data).samples if s.path in val and s.mask])  # 100 span the classes
    masks = Path(samples[0].mask).parent
    rows = ["| model | method | images | pointing game | energy in mask | mask area | deletion AUC (random) | "
            "insertion AUC (random) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    per_class = ["| model | method | class | scans | deletion AUC | random order | insertion AUC | random order |",
                 "|---|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        graphs = [(kind, a.export / f"{kind}.onnx") for kind in a.models.split(",") if a.export] + \
            [(p.name, p) for p in a.also]
        for kind, graph in graphs:
            sess = open_session(graph)
            methods = ["auto"] if graph in a.also else \
                ["auto"] + (["cls"] if "attentions" in sess.output_names else []) + ["occlusion"]
            for method in methods:
                chosen = samples[: a.occlusion_limit] if method == "occlusion" else samples
                out = Path(tmp) / f"{kind}-{method}"
                heat = a.examples is not None and kind == a.models.split(",")[0] and method == "auto"
                s = run_inference(InferOptions(inputs=tuple(s.path for s in chosen), out=out, masks=masks,
                                               explain=method, heatmaps=heat, panels=heat,
                                               faithfulness=0 if method == "occlusion" else 100), sess, progress=False)
                m = s["masks"]
                preds = OutFolder(out).rows()
                name = preds[0]["explain"]
                faith = (f"{m['deletion_auc']:.3f} ({m['deletion_auc_random']:.3f}) | {m['insertion_auc']:.3f} "
                         f"({m['insertion_auc_random']:.3f})" if m["faithfulness_n"] else "- | -")
                for c, f in m["faithfulness_per_class"].items():
                    per_class.append(f"| {kind} | {name} | {c} | {f['n']} | {f['deletion_auc']:.3f} | "
                                     f"{f['deletion_auc_random']:.3f} | {f['insertion_auc']:.3f} | "
                                     f"{f['insertion_auc_random']:.3f} |")
                rows.append(f"| {kind} | {name} | {m['n']} | {m['pointing_game']:.3f} | {m['energy_in_mask']:.3f} | "
                            f"{m['mask_area_fraction']:.3f} | {faith} |")
                if heat:
                    hits = [p for p in preds if p["pointing_hit"] and p["correct"]][:2]
                    misses = [p for p in preds if p["pointing_hit"] is False][:2]
                    a.examples.mkdir(parents=True, exist_ok=True)
                    for tag, group in (("hit", hits), ("miss", misses)):
                        for n, p in enumerate(group, 1):  # numbered: BRISC file names stay out of the repository
                            src = out / p["panel"]
                            shutil.copyfile(src, a.examples / f"{kind}_{tag}_{n}.png")
                            print(f"{kind}_{tag}_{n}.png <- {p['path']}")
    print("\n".join(rows))
    print()
    print("\n".join(per_class))


if __name__ == "__main__":
    main()
