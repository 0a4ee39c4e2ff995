"""The comparison of a run: comparison.json, comparison.md and figures (curves, confusions, attention)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from brisc import CLASSES
from brisc.data import Sample, load_mask
from brisc.maps import resize_map
from brisc.fsio import write_text_atomic
from brisc.kinds import display_name
from brisc.train.checkpoint import write_json




def _row(kind: str, m: dict) -> dict:
    v = m["val"]
    row = {
        "model": kind, "name": display_name(kind), "parameters": m["parameters"],
        "train_seconds": m["train_seconds"], "train_img_s": m["train_img_s"], "infer_img_s": m["infer_img_s"],
        "best_epoch": m["best_epoch"], "temperature": m["temperature"],
        "val_accuracy": v["accuracy"], "val_macro_f1": v["macro_f1"], "val_macro_auc": v["macro_auc"],
        "val_ece_uncalibrated": v["ece_uncalibrated"], "val_ece": v["ece"],
        "val_ece_cross_fitted": v.get("ece_cross_fitted"),  # runs before it was measured: n/a
        "val_ece_floor": v.get("ece_floor"), "val_ece_floor_half": v.get("ece_floor_half"),
        "val_held_apart": v.get("held_apart"),  # brisc.selection: the epoch chosen on one half, scored on the other
        "val_held_apart_mirror": v.get("held_apart_mirror"),  # the same of the scan's and its mirror's mean logits
        "val_per_class": v["per_class"], "val_confusion": v["confusion"],
        "explanations": m.get("explanations", {}),
    }
    if "test" in m:
        row |= {"test_accuracy": m["test"]["accuracy"], "test_macro_f1": m["test"]["macro_f1"],
                "test_macro_auc": m["test"]["macro_auc"], "test_ece": m["test"]["ece"]}
    return row


def comparison(results: dict[str, dict], run_info: dict) -> dict:
    return {"run": run_info, "classes": list(CLASSES), "models": [_row(k, m) for k, m in results.items()]}


def _f(x, fmt="{:.3f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def markdown(comp: dict) -> str:
    run = comp["run"]
    lines = [f"# brisc comparison: {run.get('name', '')}", "",
             f"Data: `{run.get('data')}` ({run.get('layout')}); {run.get('split_method', 'random')} split, "
             f"seed {run.get('split_seed')}, "
             f"val fraction {run.get('val_fraction')}: train {run.get('train_images')}, val {run.get('val_images')}, "
             f"test {run.get('test_images')}. Preset `{run.get('preset')}`, device {run.get('device')}.",
             "Models are selected on the validation split (macro-F1); the test split, when present, is only reported. "
             "ECE (T): after the temperature fitted on validation, measured there; cross-fitted: the temperature "
             "fitted on one half of validation, the ECE measured on the other (both ways, averaged). Floor: the ECE a "
             "perfectly calibrated model with the same confidences scores on all of validation / on a half (ECE is "
             "biased upward on small sets). Held apart: the best epoch chosen on one half of validation (whole groups of "
             "look-alike slices) and scored on the other, both ways, pooled: the figure a choice on validation earns; "
             "with the mirror: the same for the mean of the scan's and its left-right mirror's logits."]
    if run.get("hf_model_source"):
        lines.append(f"The HF ViT started from `{Path(str(run.get('hf_model'))).name}`: {run['hf_model_source']}.")
    lines += ["",
             "| model | params | train time | train img/s | infer img/s | val acc | val macro-F1 | held apart: acc / F1 "
             "| held apart with the mirror | val AUC | ECE | ECE (T) "
             "| ECE (T, cross-fitted) | floor (all / half) | T |"
             + (" test acc | test macro-F1 |" if any("test_accuracy" in r for r in comp["models"]) else ""),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
             + ("---:|---:|" if any("test_accuracy" in r for r in comp["models"]) else "")]
    for r in comp["models"]:
        ha, hm = r.get("val_held_apart"), r.get("val_held_apart_mirror")
        line = (f"| {r['name']} | {r['parameters'] / 1e6:.2f} M | {r['train_seconds']:.0f} s | {_f(r['train_img_s'], '{:.0f}')} "
                f"| {_f(r['infer_img_s'], '{:.0f}')} | {_f(r['val_accuracy'])} | {_f(r['val_macro_f1'])} "
                f"| {_f(ha and ha['accuracy'])} / {_f(ha and ha['macro_f1'])} "
                f"| {_f(hm and hm['accuracy'])} / {_f(hm and hm['macro_f1'])} "
                f"| {_f(r['val_macro_auc'])} | {_f(r['val_ece_uncalibrated'])} | {_f(r['val_ece'])} "
                f"| {_f(r['val_ece_cross_fitted'])} | {_f(r['val_ece_floor'])} / {_f(r['val_ece_floor_half'])} "
                f"| {r['temperature']:.2f} |")
        if "test_accuracy" in r:
            line += f" {_f(r['test_accuracy'])} | {_f(r['test_macro_f1'])} |"
        lines.append(line)
    lines += ["", "Per-class sensitivity / specificity (validation):", "",
              "| model | " + " | ".join(CLASSES) + " |", "|---|" + "---|" * len(CLASSES)]
    for r in comp["models"]:
        pc = r["val_per_class"]
        lines.append(f"| {r['name']} | " + " | ".join(
            f"{_f(pc[c]['sensitivity'])} / {_f(pc[c]['specificity'])}" for c in CLASSES) + " |")
    lines += ["", "Explanations on validation tumour masks (pointing game: map maximum within 15 px of the mask, chance: "
              "the share of pixels within 15 px, i.e. a random maximum's hit rate; energy: share of the map inside the "
              "mask, which a uniform map scores at the mask area):", "",
              "| model | method | images | pointing game | chance | energy in mask | mask area |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in comp["models"]:
        for method, e in r["explanations"].items():
            if e.get("n"):
                lines.append(f"| {r['name']} | {method} | {e['n']} | {_f(e['pointing_game'])} | {_f(e.get('pointing_chance'))} | "
                             f"{_f(e['energy_in_mask'])} | {_f(e['mask_area_fraction'])} |")
    lines += ["", "Research use only: not a medical device.", ""]
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(results: dict[str, dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for kind, m in results.items():
        ep = [h["epoch"] for h in m["history"]]
        axes[0].plot(ep, [h["train_loss"] for h in m["history"]], label=display_name(kind))
        axes[1].plot(ep, [h["val_macro_f1"] for h in m["history"]], label=display_name(kind))
    axes[0].set(xlabel="epoch", ylabel="train loss", title="training loss")
    axes[1].set(xlabel="epoch", ylabel="macro-F1", title="validation macro-F1", ylim=(0, 1))
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusions(results: dict[str, dict], path: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(4 * len(results), 3.8), squeeze=False)
    for ax, (kind, m) in zip(axes[0], results.items()):
        cm = np.asarray(m["val"]["confusion"])
        ax.imshow(cm, cmap="Blues")
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="black")
        ax.set(xticks=range(len(CLASSES)), yticks=range(len(CLASSES)), xlabel="predicted", ylabel="true",
               title=display_name(kind))
        ax.set_xticklabels(CLASSES, rotation=30, fontsize=7)
        ax.set_yticklabels(CLASSES, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_attention(model: torch.nn.Module, samples: list[Sample], path: Path, *, device, n: int = 6) -> np.ndarray | None:
    """Validation tumour images with the model's recommended map overlaid and the mask outlined."""
    from brisc.imageio import load
    from brisc.train.explain import explanation_maps

    chosen = [s for s in samples if s.mask][:n]
    if not chosen:
        return None
    x = torch.from_numpy(np.stack([load(s.path) for s in chosen])).to(device)
    maps = explanation_maps(model, x)
    method = next(iter(maps))
    plt = _plt()
    fig, axes = plt.subplots(1, len(chosen), figsize=(2.4 * len(chosen), 2.7), squeeze=False)
    for ax, s, m, img in zip(axes[0], chosen, maps[method], x.cpu().numpy()):
        gray = (img[0] + 1) / 2
        mask = load_mask(s.mask)
        mask = resize_map(mask.astype(np.float32), gray.shape) > 0.5
        ax.imshow(gray, cmap="gray")
        ax.imshow(resize_map(m, gray.shape), cmap="inferno", alpha=0.45)
        ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title(s.class_name, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{display_name(model.kind)}: {method} (cyan: tumour mask)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def write_report(out: Path, results: dict[str, dict], run_info: dict) -> dict:
    comp = comparison(results, run_info)
    write_json(out / "comparison.json", comp)
    write_text_atomic(out / "comparison.md", markdown(comp))
    plot_curves(results, out / "curves.png")
    plot_confusions(results, out / "confusion.png")
    return comp


def publish(out: Path, results: dict, run_info: dict, tracker, log) -> dict:
    """comparison.md/json and figures, the comparison table to the tracker, and the offline-sync hint."""
    comp = write_report(out, results, run_info)
    tracker.start("comparison", run_info)
    cols = ["model", "parameters", "train_seconds", "val_accuracy", "val_macro_f1", "val_macro_auc", "val_ece"]
    tracker.log_table("comparison", cols, [[r[c] for c in cols] for r in comp["models"]])
    tracker.finish()
    log((out / "comparison.md").read_text())
    hint = tracker.sync_hint()
    if hint:
        log(f"wandb runs were saved offline; upload them with:\n  {hint}")
    return comp
