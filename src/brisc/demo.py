"""`make demo`: the whole pipeline end to end on synthetic BRISC, offline, in a few minutes on 2 cores.

synthetic BRISC -> brisc-train (vit, hf_vit, sae; tiny preset) -> brisc-export (ONNX + INT8)
-> brisc-infer --heatmaps. The HF ViT starts from a tiny *random* ViT saved locally, standing in
for google/vit-base-patch16-224-in21k, which these machines cannot download.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import click

from brisc.synth import generate


DEMO_ENTRIES = {".brisc-demo", "synthetic_brisc", "run", "export", "infer", "tiny-random-hf-vit"}


def _tiny_hf_vit(path: Path) -> Path:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        cfg = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                        image_size=224, patch_size=16)
        ViTForImageClassification(cfg).save_pretrained(path)
    return path


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("artifacts/demo"), show_default=True)
@click.option("--per-class", default=60, show_default=True, help="Synthetic train images per class.")
@click.option("--epochs", default=8, show_default=True)
def main(out: Path, per_class: int, epochs: int) -> None:
    from brisc.export.run import ExportOptions, export_run
    from brisc.inference.runner import InferOptions, run_inference
    from brisc.inference.outdir import GALLERY_HTML
    from brisc.inference.session import open_session
    from brisc.train.cli import RunOptions, run_training

    marker = out / ".brisc-demo"  # the demo starts fresh in its own folder only: never wipe anyone else's files
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_ENTRIES) if out.is_dir() else []
    if foreign and not marker.exists():
        raise click.UsageError(f"{out} holds files that brisc-demo did not write ({', '.join(foreign[:3])}): "
                               "choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()
    data = out / "synthetic_brisc"
    s = generate(data, per_class=per_class, test_per_class=max(4, per_class // 4), seed=0)
    click.echo(f"[1/4] synthetic BRISC: {s['images']} images, {s['masks']} masks in {data}")

    run = out / "run"
    shutil.rmtree(run, ignore_errors=True)  # the demo always starts fresh
    hf = _tiny_hf_vit(out / "tiny-random-hf-vit")
    click.echo(f"[2/4] brisc-train --preset tiny --epochs {epochs} (HF ViT from a tiny random local stand-in: {hf})")
    run_training(RunOptions(data=data, out=run, models=("vit", "hf_vit", "sae"), preset="tiny", epochs=epochs,
                            hf_model=str(hf), wandb="offline"),
                 log=click.echo)

    export = out / "export"
    shutil.rmtree(export, ignore_errors=True)
    click.echo("[3/4] brisc-export --format onnx --quantize int8")
    export_run(ExportOptions(run=run, out=export, quantize="int8"), log=click.echo)

    infer = out / "infer"
    click.echo("[4/4] brisc-infer --heatmaps (home-made ViT, INT8) on the synthetic test split")
    sess = open_session(export / "vit.int8.onnx")
    summary = run_inference(InferOptions(inputs=(str(data / "classification_task" / "test"),), out=infer, heatmaps=True,
                                         overwrite=True, masks=data / "segmentation_task" / "test" / "masks"), sess, progress=False)
    click.echo(json.dumps({k: summary[k] for k in ("classified", "failures", "predicted_per_class", "img_per_s")}))
    if "ground_truth" in summary:
        click.echo(f"accuracy on the synthetic test split: {summary['ground_truth']['accuracy']:.3f}")
    click.echo(f"gallery: {infer / GALLERY_HTML}\nResearch use only: not a medical device.")


if __name__ == "__main__":
    sys.exit(main())
