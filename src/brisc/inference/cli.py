"""`brisc-infer`: classify folders of scans with an exported brisc model (onnxruntime only, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scans", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="An exported .onnx with its .onnx.json sidecar [default: the model shipped with brisc].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("brisc-out"), show_default=True)
@click.option("--heatmaps", is_flag=True, help="Write heatmaps/<path>.png (overlay), .panel.png, .npy and index.html.")
@click.option("--explain", type=click.Choice(["auto", "rollout", "cls", "occlusion"]), default="auto", show_default=True,
              help="auto: the model's recommended `heatmap` output (named in its sidecar: rollout or an early "
                   "layer's [CLS] attention for ViTs, saliency for the SAE); rollout: plain attention rollout; cls: "
                   "last-layer [CLS] attention; occlusion: grey-patch probability drop (any model, 196 passes per scan).")
@click.option("--masks", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of tumour masks (same stem, .png): score each map (pointing game, energy in mask).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: all cores].")
@click.option("--workers", type=int, default=2, show_default=True, help="Decode threads.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--resume", is_flag=True, help="Skip scans already in --out/predictions.jsonl.")
@click.option("--overwrite", is_flag=True, help="Start over in an --out that already holds predictions.")
@click.option("--cmap", type=click.Choice(["viridis", "inferno", "magma", "gray"]), default="viridis", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.4, show_default=True, help="Heatmap opacity.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def main(scans, model, out, heatmaps, explain, masks, batch_size, threads, workers, device, recursive, resume,
         overwrite, cmap, alpha, quiet) -> None:
    """Classify brain MRI scans (JPEG, PNG, BMP, TIFF, DICOM; files or folders) into glioma, meningioma,
    no_tumor and pituitary, and write predictions, attention heatmaps and an HTML gallery to --out.

    Exit codes: 0 all classified, 1 some files failed (see errors.csv), 2 usage or model error,
    3 nothing could be classified. Research use only: not a medical device."""
    from brisc.inference.runner import InferOptions, run_inference
    from brisc.inference.session import InferenceError, open_session

    if batch_size < 1 or workers < 1:
        click.echo("brisc-infer: error: --batch-size and --workers must be >= 1", err=True)
        sys.exit(EXIT_USAGE)
    if masks is not None and not masks.is_dir():
        click.echo(f"brisc-infer: error: {masks}: masks folder not found", err=True)
        sys.exit(EXIT_USAGE)
    try:
        sess = open_session(model, device=device, threads=threads)
        if not quiet:
            click.echo(f"model {sess.path} ({sess.meta.get('model_kind')}), provider {sess.provider}", err=True)
        opts = InferOptions(inputs=tuple(scans), out=out, heatmaps=heatmaps, explain=explain, masks=masks,
                            batch_size=batch_size, recursive=recursive, resume=resume, overwrite=overwrite,
                            cmap=cmap, alpha=alpha, workers=workers)
        s = run_inference(opts, sess, progress=not quiet)
    except InferenceError as e:
        click.echo(f"brisc-infer: error: {e}", err=True)
        sys.exit(EXIT_USAGE)
    if not quiet:
        per = ", ".join(f"{k} {v}" for k, v in s["per_class"].items())
        click.echo(f"classified {s['classified_this_run']} scans this run ({s['classified']} in {out}): {per}; "
                   f"{s['failures']} failed, {s['skipped_non_images']} non-images skipped; "
                   f"{s['img_per_s'] or 0:.1f} img/s", err=True)
        if "ground_truth" in s:
            g = s["ground_truth"]
            click.echo(f"ground truth known for {g['n']}: accuracy {g['accuracy']:.3f}, macro-F1 {g['macro_f1']:.3f}", err=True)
    if s["classified"] == 0:
        sys.exit(EXIT_NOTHING)
    sys.exit(EXIT_SOME_FAILED if s["failures"] else EXIT_OK)


if __name__ == "__main__":
    main()
