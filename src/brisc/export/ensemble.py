"""Exported graphs of one split as one graph with one map, which brisc-infer runs like any other.

    python -m brisc.export.ensemble A.onnx B.onnx --out artifacts/export/ensemble/vit.ensemble.onnx
    python -m brisc.export.ensemble A.onnx [B.onnx] --mirror --out artifacts/export/ensemble/vit.mirror.onnx

The members run side by side on the same input inside one ONNX graph, and a small head combines their outputs
(``combine`` is the definition, in numpy; ``brisc.export.ensemble_graph`` writes it as graph operations). With ``--mirror`` every
member also runs on the scan's left-right mirror, a view whose maps and attention rows are flipped back into the
scan's frame (``mirror_back``) before they are combined like any member's: flip averaging inside the graph, each
member run once on a batch twice as large (its weights are in the file once).
- logits: the mean of the members' calibrated logits (logits_i / T_i); probabilities: softmax(logits / T), with T
  fitted anew on validation;
- attentions: the members' [CLS] rows side by side, [B, L, sum of H, 196]: the ensemble's heads are its members';
  members of different depth stand side by side on their last L layers, L the shallowest member's depth;
- heatmap: the members' map (``cls:layer=K``, the same layer counted from the end in every member) over all those
  heads, or, for a rollout map, the mean of the members' maps; rollout: the mean of the members' rollouts (not
  rescaled: where the members disagree, the peak stays below 1, and a nearly flat map stays flat);
- ood_score: the mean of the members' scores, each divided by its own threshold (1 is a member's 5% point), with a
  threshold set anew on validation.
The members must share the classes, preprocessing, outputs, map, patch grid and training split (their cards say).
The written graph is checked against ``combine`` of the members' own outputs on validation scans and two outliers, and its card
gets its validation metrics, temperature and OOD threshold from the graph's own outputs.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from brisc.errors import BriscError
from brisc.export.ensemble_graph import compose, head_graph
from brisc.maps import cls_map
from brisc.sidecar import ModelCard, read_sidecar, write_sidecar

PER_MEMBER = ("logits", "heatmap", "attentions", "rollout", "ood_score")  # what the head reads of each member
SAME = ("model_kind", "classes", "preprocessing", "outputs")  # what the members must share (and the map: ensemble_map)
SPLIT = ("layout", "split_seed", "val_fraction", "split_method", "train_images", "val_images", "data")


class EnsembleError(BriscError):
    """Members that cannot form one graph, or an output that exists: nothing is written (exit 2)."""


def member_inputs(names: tuple[str, ...]) -> list[str]:
    return [n for n in PER_MEMBER if n in names]


def mirror_back(outputs: dict[str, np.ndarray], grid: int) -> dict[str, np.ndarray]:
    """A member's outputs on the mirrored scan -> the scan's frame: the maps [B, g, g] and the attention rows
    [B, L, H, g*g] flipped left-right (the 16-px patches tile the 224-px scan exactly, so a mirrored scan's patch
    columns are the scan's in reverse); logits and OOD score are the same in either frame."""
    res = dict(outputs)
    for n in ("heatmap", "rollout"):
        if n in res:
            res[n] = res[n][..., ::-1]
    if "attentions" in res:
        a = res["attentions"]
        res["attentions"] = a.reshape(*a.shape[:-1], grid, grid)[..., ::-1].reshape(a.shape)
    return {k: np.ascontiguousarray(v) for k, v in res.items()}


def combine(outs: list[dict[str, np.ndarray]], temperatures, thresholds, heatmap: str,
            temperature: float = 1.0) -> dict[str, np.ndarray]:
    """The members' outputs -> the ensemble's (the module docstring says how each is formed)."""
    from brisc.export.wrapper import HeatmapSpec
    from brisc.metrics import softmax

    spec = HeatmapSpec.parse(heatmap)
    logits = np.mean([o["logits"].astype(np.float64) / t for o, t in zip(outs, temperatures)], 0)
    depth = min(o["attentions"].shape[1] for o in outs)
    att = np.concatenate([o["attentions"][:, -depth:] for o in outs], 2)  # [B, L, sum H, patches]

    def mean_map(name):
        return np.mean([o[name].astype(np.float64) for o in outs], 0)

    heat = (cls_map(att, layer=spec.layer, head_fusion=spec.head_fusion) if spec.method == "cls"
            else mean_map("heatmap"))
    res = {"logits": logits, "probabilities": softmax(logits, temperature), "heatmap": heat,
           "attentions": att, "rollout": mean_map("rollout")}
    if "ood_score" in outs[0]:
        res["ood_score"] = np.mean([o["ood_score"].astype(np.float64) / t for o, t in zip(outs, thresholds)], 0)
    return {k: v.astype(np.float32) for k, v in res.items()}


def ensemble_map(paths: list[Path], cards: list[ModelCard], depths: list[int]) -> str:
    """The ensemble's ``heatmap`` over its attentions (the members' last min(depths) layers): the members' own when
    their depths agree; a [CLS] map must name the same layer counted from the end in every member."""
    from brisc.export.wrapper import HeatmapSpec

    specs = [HeatmapSpec.parse(c.heatmap) for c in cards]
    if len(set(depths)) == 1 and len({c.heatmap for c in cards}) == 1:
        return cards[0].heatmap
    from_end = [d - 1 - (s.layer % d) for s, d in zip(specs, depths)]  # 0: the last layer
    alike = [replace(s, layer=f) for s, f in zip(specs, from_end)]
    for p, c, a, d in zip(paths[1:], cards[1:], alike[1:], depths[1:]):
        if a != alike[0]:
            raise EnsembleError(f"{p}: its map ({c.heatmap} of {d} layers) is not {paths[0].name}'s "
                                f"({cards[0].heatmap} of {depths[0]}); members must share the map, counted from the "
                                "last layer")
    s0 = specs[0]
    if s0.method != "cls":
        return cards[0].heatmap
    if from_end[0] >= min(depths):
        raise EnsembleError(f"{paths[0]}: its map ({cards[0].heatmap}) is not among the last {min(depths)} layers, "
                            "which the members share")
    return f"cls:layer={min(depths) - from_end[0]}" + (":max" if s0.head_fusion == "max" else "")


def _check_members(paths: list[Path], mirror: bool = False) -> list[ModelCard]:
    if len(paths) < (1 if mirror else 2):
        raise EnsembleError("an ensemble needs at least two member graphs, or one with --mirror")
    cards = []
    for p in paths:
        card = read_sidecar(p)
        if card.format != "onnx" or "attentions" not in card.outputs:
            raise EnsembleError(f"{p}: an ensemble is made of ViT ONNX graphs (this one is a {card.model_kind} "
                                f"{card.format} file)")
        cards.append(card)
    for p, c in zip(paths[1:], cards[1:]):
        for f in SAME:
            if getattr(c, f) != getattr(cards[0], f):
                raise EnsembleError(f"{p}: its {f} ({getattr(c, f)}) differs from {paths[0].name}'s "
                                    f"({getattr(cards[0], f)}); members must share it")
        for f in SPLIT:
            if c.training_data.get(f) != cards[0].training_data.get(f):
                raise EnsembleError(f"{p}: trained on another split ({f} {c.training_data.get(f)} against "
                                    f"{cards[0].training_data.get(f)}); the ensemble is calibrated on validation, "
                                    "which must be every member's")
    from brisc.export.wrapper import HeatmapSpec

    if HeatmapSpec.parse(cards[0].heatmap).head >= 0:
        raise EnsembleError(f"{paths[0]}: a one-head map ({cards[0].heatmap}) names no head of an ensemble; export "
                            "the members with a map over every head")
    if "ood_score" in cards[0].outputs and any((c.ood or {}).get("threshold") is None for c in cards):
        raise EnsembleError("every member needs an OOD threshold in its card (export it with validation reachable)")
    return cards


def validation_images(card: ModelCard, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """The members' validation split, rebuilt from the card's split parameters on ``data`` -> (images, labels)."""
    from brisc.data import discover, make_splits
    from brisc.export.ood import load_images

    td = card.training_data
    if data.name != td.get("data"):
        raise EnsembleError(f"{data}: the members were trained on '{td.get('data')}', not '{data.name}' (--data)")
    splits = make_splits(discover(data), val_fraction=td["val_fraction"], seed=td["split_seed"],
                         method=td["split_method"])
    if len(splits.train) != td.get("train_images") or len(splits.val) != td.get("val_images"):
        raise EnsembleError(f"{data}: its split has {len(splits.train)} / {len(splits.val)} images, the members' "
                            f"{td.get('train_images')} / {td.get('val_images')}; is it the same data?")
    images, keep = load_images([s.path for s in splits.val])
    return images, np.array([splits.val[k].label for k in keep])


def build(paths: list[Path], out: Path, *, data: Path, mirror: bool = False, log=print) -> Path:
    """Write the ensemble graph ``out`` and its card (``mirror``: every member on the scan and on its mirror); refuses
    to overwrite, and a failed check leaves nothing."""
    import onnx

    from brisc.export.onnx import metadata_props
    from brisc.export.ood import calibrate, cached_evaluation_set
    from brisc.export.run import check_set
    from brisc.export.selfcheck import TOLERANCE, ExportCheckError, compare, ort_runner
    from brisc.export.wrapper import HeatmapSpec
    from brisc.fsio import atomic_path
    from brisc.metrics import classification_metrics, fit_temperature

    if out.exists():
        raise EnsembleError(f"{out}: exists; brisc never overwrites a graph (remove it or choose another --out)")
    cards = _check_members(paths, mirror)
    c0 = cards[0]
    names = member_inputs(c0.outputs)
    temps = [c.temperature for c in cards]
    thresholds = [c.ood["threshold"] for c in cards] if "ood_score" in names else []
    val, y = validation_images(c0, data)
    if not len(val):
        raise EnsembleError(f"{data}: no validation scan decodes")
    flipped = [False] * len(paths) + [True] * (len(paths) if mirror else 0)  # one entry a view
    views = paths * (2 if mirror else 1)
    temps, thresholds = temps * (2 if mirror else 1), thresholds * (2 if mirror else 1)
    runners = {p: ort_runner(p) for p in paths}
    probe = {p: runners[p](val[:1])["attentions"].shape for p in paths}  # [1, L, H, g*g]
    for p in paths[1:]:
        if probe[p][-1] != probe[paths[0]][-1]:
            raise EnsembleError(f"{p}: {probe[p][-1]} patches differ from {paths[0].name}'s {probe[paths[0]][-1]}; "
                                "members' attentions must stand side by side")
    grid = int(round(probe[paths[0]][-1] ** 0.5))  # the patch grid, g x g
    depths = [probe[p][1] for p in paths]
    heatmap = ensemble_map(paths, cards, depths)

    def member_outputs(x):
        xm = np.ascontiguousarray(x[..., ::-1])
        outs = [{k: v for k, v in runners[p](xm if f else x).items() if k in names} for p, f in zip(views, flipped)]
        return [mirror_back(o, grid) if f else o for o, f in zip(outs, flipped)]

    chunks = [member_outputs(val[i:i + 64]) for i in range(0, len(val), 64)]
    outs = [{n: np.concatenate([c[m][n] for c in chunks]) for n in names} for m in range(len(views))]
    raw = combine(outs, temps, thresholds, heatmap)
    temperature = fit_temperature(raw["logits"], y)
    what = (f"{len(paths)} member{'s' * (len(paths) > 1)}"
            + (f",{' each' * (len(paths) > 1)} on the scan and its mirror" if mirror else ""))
    log(f"ensemble of {what}: temperature {temperature:.3f} fitted on {len(y)} validation scans")
    checks = check_set(val[:32])
    ref = combine(member_outputs(checks), temps, thresholds, heatmap, temperature)
    head = head_graph(outs, names, temps, thresholds, heatmap, temperature, c0.opset or 18)
    metrics = classification_metrics(raw["logits"], y, temperature)
    card = replace(
        c0, model_name=f"ensemble of {what} ({c0.model_name})", temperature=temperature, heatmap=heatmap,
        heatmap_method=(f"{HeatmapSpec.parse(heatmap).describe()}, over the heads of all {len(views)} views"
                        if heatmap.startswith("cls") else f"the mean of the views' maps ({c0.heatmap_method})")
        + (f", each member's last {min(depths)} layers" if len(set(depths)) > 1 else "")
        + (", the mirror's flipped back" if mirror else ""),
        validation_metrics={k: metrics[k] for k in ("n", "accuracy", "macro_f1", "macro_auc", "ece")}
        | {"ece_uncalibrated": classification_metrics(raw["logits"], y)["ece"]},
        checkpoint_sha256="+".join(c.checkpoint_sha256 for c in cards),
        quantization={"members": [c.quantization for c in cards]} if any(c.quantization for c in cards) else None,
        shipped_from=None, ood=None)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        model = compose([onnx.load(str(p)) for p in paths], head, mirror, names, grid)
        for k, v in metadata_props(card).items():
            model.metadata_props.add(key=k, value=v)
        onnx.save(model, str(tmp))
        run = ort_runner(tmp)
        diffs = compare(ref, run(checks))
        bad = {n: d for n, d in diffs.items() if not d <= TOLERANCE[n]}
        if bad:
            raise ExportCheckError(f"{out.name} disagrees with its members' combined outputs: " +
                                   ", ".join(f"{n} {d:.2e} > {TOLERANCE[n]:.0e}" for n, d in bad.items()))
        ood = None
        if thresholds:
            ood = calibrate(run, c0.ood["score"], c0.model_kind, val, cached_evaluation_set())
            ood |= {"score": f"mean over the members of {c0.ood['score']} / the member's threshold",
                    "feature": c0.ood.get("feature", "")}
            log(f"ood threshold {ood['threshold']:.4g}: flags {ood['validation']['flag_rate']:.1%} of validation")
    card = replace(card, ood=ood, self_check={"max_abs_diff": diffs, "images": int(len(checks)),
                                              "reference": "brisc.export.ensemble.combine of the members' outputs",
                                              "members": [{"file": p.name, "sha256": c.model_sha256}
                                                          for p, c in zip(paths, cards)],
                                              "mirror": mirror})
    write_sidecar(out, card)
    log(f"{out} ({out.stat().st_size / 1e6:.1f} MB): validation accuracy {metrics['accuracy']:.4f}, macro-F1 "
        f"{metrics['macro_f1']:.4f}, ECE {metrics['ece']:.4f}; max abs diff {max(diffs.values()):.1e}")
    return out


@click.command(help=__doc__.splitlines()[0])
@click.argument("members", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="The graph to write.")
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The BRISC folder the members were trained on [default: $BRISC_DATA or ../shared/data/brisc2025].")
@click.option("--mirror", is_flag=True, help="Also run every member on the scan's left-right mirror (flip averaging "
              "inside the graph, twice the cost).")
def main(members, out: Path, data: Path | None, mirror: bool) -> None:
    from brisc.data import default_data_root
    from brisc.errors import one_line_errors

    with one_line_errors("brisc.export.ensemble"):
        build(list(members), out, data=data or default_data_root(), mirror=mirror, log=click.echo)


if __name__ == "__main__":
    main()
