"""`brisc-infer`: classify folders of scans with an exported brisc model (onnxruntime only, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from brisc.kinds import INFER_EXPLAIN_CHOICES

CMAPS = ("viridis", "inferno", "magma")  # heatmap.COLORMAPS, spelled here so that --help needs no numpy (tested)
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scans", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="An exported .onnx with its .onnx.json sidecar [default: the model shipped with brisc].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("brisc-out"), show_default=True)
@click.option("--heatmaps", is_flag=True,
              help="Write heatmaps/<path>.jpg (the scan as the model saw it with the map on top, at most 256 px, ~10 KB), thumbnails/<path>.jpg and "
                   "index.html (a gallery to filter and sort).")
@click.option("--panels", is_flag=True, help="With --heatmaps: also heatmaps/<path>.panel.png, scan | overlay with "
                                              "the prediction, true label, mask outline and legend (~210 KB a scan).")
@click.option("--save-maps", is_flag=True, help="With --heatmaps: also the raw 14x14 map as heatmaps/<path>.npy.")
@click.option("--explain", type=click.Choice(INFER_EXPLAIN_CHOICES), default="auto", show_default=True,
              help="auto: the model's recommended `heatmap` output, named in its sidecar (the shipped model: the "
                   "mask-guided last layer's [CLS] attention; the SAE: saliency); rollout: plain attention rollout; "
                   "cls: last-layer [CLS] attention; occlusion: grey-patch probability drop (any model, 196 passes "
                   "per scan).")
@click.option("--masks", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of tumour masks (same stem, .png): score each map (pointing game beside its chance "
                   "level, energy in mask; see --faithfulness).")
@click.option("--faithfulness", type=int, default=100, show_default=True,
              help="With --masks: deletion/insertion curves (RISE) for at most this many scans with a mask "
                   "(29 extra passes each); 0 turns them off.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: all cores].")
@click.option("--workers", type=int, default=2, show_default=True, help="Decode threads.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--resume", is_flag=True, help="Skip scans already in --out/predictions.jsonl.")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that already holds predictions.")
@click.option("--cmap", type=click.Choice(CMAPS), default="viridis", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Heatmap opacity at the map's peak; it fades to clear where the map is low.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def main(scans, model, out, heatmaps, panels, save_maps, explain, masks, faithfulness, batch_size, threads, workers, device, recursive,
         resume, overwrite, cmap, alpha, quiet) -> None:
    """Classify brain MRI scans (JPEG, PNG, BMP, TIFF, DICOM; files or folders) into glioma, meningioma,
    no_tumor and pituitary, and write predictions, attention heatmaps and an HTML gallery to --out.

    --out must be new, empty, or an earlier brisc-infer output (continued with --resume or started over
    with --overwrite); it is locked while a run works in it and never read as input.

    Exit codes: 0 all classified, 1 some files failed (see errors.csv), 2 usage or model error,
    3 nothing could be classified, 130/143 interrupted by Ctrl-C/SIGTERM (what was done is written).
    Research use only: not a medical device."""
    from brisc.fsio import interrupted, raise_on_sigterm
    from brisc.inference.runner import InferOptions, run_inference
    from brisc.inference.session import InferenceError, open_session

    raise_on_sigterm()  # the batches already computed are written, then the run stops

    if batch_size < 1 or workers < 1 or faithfulness < 0:
        click.echo("brisc-infer: error: --batch-size and --workers must be >= 1, --faithfulness >= 0", err=True)
        sys.exit(EXIT_USAGE)
    if (panels or save_maps) and not heatmaps:
        click.echo("brisc-infer: error: --panels and --save-maps add to --heatmaps: pass it too", err=True)
        sys.exit(EXIT_USAGE)
    if masks is not None and not masks.is_dir():
        click.echo(f"brisc-infer: error: {masks}: masks folder not found", err=True)
        sys.exit(EXIT_USAGE)
    try:
        sess = open_session(model, device=device, threads=threads)
        if not quiet:
            click.echo(f"model {sess.path} ({sess.card.model_kind}), provider {sess.provider}", err=True)
        opts = InferOptions(inputs=tuple(scans), out=out, heatmaps=heatmaps, panels=panels, save_maps=save_maps,
                            explain=explain, masks=masks,
                            batch_size=batch_size, recursive=recursive, resume=resume, overwrite=overwrite,
                            cmap=cmap, alpha=alpha, workers=workers, faithfulness=faithfulness)
        s = run_inference(opts, sess, progress=not quiet)
    except InferenceError as e:
        click.echo(f"brisc-infer: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt as e:
        sys.exit(interrupted("brisc-infer", e, f"the scans classified so far are in {out}"))
    if not quiet:
        for line in summary_lines(s, out):
            click.echo(line, err=True)
    if s["classified"] == 0:
        sys.exit(EXIT_NOTHING)
    sys.exit(EXIT_SOME_FAILED if s["failures"] else EXIT_OK)


def summary_lines(s: dict, out: Path) -> list[str]:
    """The run's summary in plain words (the same figures as summary.json)."""
    per = ", ".join(f"{k} {v}" for k, v in s["predicted_per_class"].items())
    lines = [f"classified {s['classified_this_run']} scans this run ({s['classified']} in {out}); predicted: {per}; "
             f"{s['failures']} failed, {s['skipped_non_images']} non-images skipped; {s['img_per_s'] or 0:.1f} img/s"]
    if "ground_truth" in s:
        g = s["ground_truth"]
        lines.append(f"true class known for {g['n']} (from file or folder names): accuracy {g['accuracy']:.3f}, "
                     f"macro-F1 {g['macro_f1']:.3f} over the {len(g['macro_f1_classes'])} classes present")
    if "masks" in s:
        m = s["masks"]
        lines.append(m["explanation"])
        if m["faithfulness_n"]:
            lines.append(f"faithfulness on {m['faithfulness_n']} of them: deletion AUC {m['deletion_auc']:.3f} (lower: "
                         f"hiding the map's top patches first hurts the prediction sooner), insertion AUC "
                         f"{m['insertion_auc']:.3f} (higher is better)")
    lines.append("research use only: not a medical device")
    return lines


if __name__ == "__main__":
    main()
