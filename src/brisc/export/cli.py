"""`brisc-export`: the command over ``brisc.export.run.export_run`` (options in, one line and an exit code out)."""

from __future__ import annotations

from pathlib import Path

import click

from brisc.export.run import EXPORT_ROOT, ExportOptions, export_run, newest_run
from brisc.ood import DEFAULT_SCORE, SCORES
from brisc.runfolder import CHECKPOINTS

__all__ = ["ExportOptions", "export_run", "main"]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--run", "run", type=click.Path(path_type=Path), default=None,
              help="A brisc-train run folder [default: the newest run under artifacts/runs].")
@click.option("--models", default=None, help="Comma-separated subset of vit, hf_vit, sae [default: all in the run].")
@click.option("--format", "fmt", type=click.Choice(["onnx", "torchscript", "pt2"]), default="onnx", show_default=True,
              help="onnx; torchscript (torch.jit.trace, which PyTorch deprecates); pt2 (torch.export).")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="Also write a static INT8 graph (the per-token weight products, scales calibrated on the run's "
                   "training images; attention stays fp32).")
@click.option("--opset", type=int, default=18, show_default=True, help="ONNX opset (18 to 23).")
@click.option("--full-attention", is_flag=True, help="Also output the full [B, L, H, 197, 197] attention stack.")
@click.option("--heatmap", default=None,
              help="The ViTs' recommended `heatmap` output: rollout, rollout:start=K, rollout:max, cls, cls:layer=K, "
                   "cls:layer=K:max, cls:layer=K:head=J (layers and heads from 1) [default: the guided layer's [CLS] "
                   "attention, mean over heads, for a mask-guided "
                   "ViT, rollout otherwise]. The `rollout` output stays plain rollout.")
@click.option("--ood-score", default=DEFAULT_SCORE, show_default=True, type=click.Choice([*SCORES, "none"]),
              help="The graph's `ood_score` output (higher = less like the training scans); its threshold, set on "
                   "validation to flag at most 5%, goes into the model card.")
@click.option("--checkpoint", type=click.Choice(list(CHECKPOINTS)), default="best", show_default=True,
              help="best: " + CHECKPOINTS["best"] + "; last: " + CHECKPOINTS["last"] + ", chosen on nothing, so its "
              "validation figures (temperature refitted on them) are not flattered by the choice.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Output folder [default: artifacts/export/<the run's name>].")
def main(run, models, fmt, quantize, opset, full_attention, heatmap, ood_score, checkpoint, out) -> None:
    """Export a brisc-train run's models with attention, heatmaps and ood_score as named outputs, checked against
    PyTorch. Each file gets a JSON sidecar (<file>.json), its model card, that brisc-infer verifies.

    \b
    brisc-export --format onnx                   # the newest run under artifacts/runs
    brisc-export --run artifacts/runs/NAME --quantize int8 --out artifacts/export/NAME

    Research use only: not a medical device."""
    from brisc.errors import one_line_errors

    with one_line_errors("brisc-export"):
        if run is None:
            run = newest_run()
            click.echo(f"brisc-export: the newest run is {run}", err=True)
    out = out or EXPORT_ROOT / run.name
    opts = ExportOptions(run=run, out=out, models=tuple(m.strip() for m in models.split(",")) if models else None,
                         format=fmt, quantize=quantize, opset=opset, full_attention=full_attention, heatmap=heatmap,
                         ood_score=ood_score, checkpoint=checkpoint)
    with one_line_errors("brisc-export"):  # bad input (2), or a failed self-check (1): one line, nothing written
        export_run(opts)


if __name__ == "__main__":
    main()
