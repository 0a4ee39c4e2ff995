"""`brisc-infer`: classify folders of scans with an exported brisc model (onnxruntime only, no torch)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from brisc.kinds import INFER_EXPLAIN_CHOICES
from brisc.options import device_option

CMAPS = ("viridis", "inferno", "magma")  # heatmap.COLORMAPS, spelled here so that --help needs no numpy (tested)
EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_NOTHING = 0, 1, 2, 3


class InferCommand(click.Command):
    """brisc-infer, whose first word may be ``merge``: ``brisc-infer merge SHARD... --out ALL`` (a folder named
    merge is ./merge)."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] == "merge":
            return merge_command.make_context(f"{info_name} merge", list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx):
        return ctx.command.invoke(ctx) if ctx.command is not self else super().invoke(ctx)


out_option = click.option("--out", type=click.Path(path_type=Path), default=Path("brisc-out"), show_default=True)
overwrite_option = click.option("--overwrite", is_flag=True,
                                help="Start over in an --out that already holds predictions.")


@click.command(cls=InferCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scans", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--model", type=click.Path(path_type=Path), default=None,
              help="An exported .onnx with its .onnx.json sidecar [default: the model shipped with brisc].")
@out_option
@click.option("--heatmaps", is_flag=True,
              help="Write attention PNGs, heatmaps/<path>.png (the scan with the map on top, at most 256 px; ~12 KB a "
                   "scan), and index.html (a gallery to filter and sort).")
@click.option("--heatmap-format", type=click.Choice(["png", "jpg"]), default="png", show_default=True,
              help="The overlays as palette PNGs or as (smaller) JPEGs.")
@click.option("--panels", is_flag=True, help="Also heatmaps/<path>.panel.png (implies --heatmaps): scan | overlay with "
                                              "the prediction, true label, mask outline and legend (~210 KB a scan).")
@click.option("--save-maps", is_flag=True, help="Also the raw 14x14 map as heatmaps/<path>.npy (implies --heatmaps).")
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
@click.option("--ood-threshold", type=float, default=None,
              help="Flag scans whose ood_score is above this as not like the training scans [default: the threshold "
                   "in the model card, which flags at most 5% of its validation scans].")
@click.option("--plane", type=click.Choice(["axial", "coronal", "sagittal"]), default="axial", show_default=True,
              help="NIfTI volumes and DICOM series: the plane their slices are cut along (after reorienting to RAS+).")
@click.option("--volume-index", type=int, default=None, help="The volume of a 4D NIfTI file to classify.")
@click.option("--volume-slices", type=int, default=3, show_default=True,
              help="Per-volume rule: a tumour class when at least this many contiguous slices predict it ...")
@click.option("--volume-probability", type=float, default=0.9, show_default=True,
              help="... each with at least this probability, in distribution; otherwise no_tumor (volumes.csv).")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: all cores].")
@click.option("--workers", type=int, default=2, show_default=True, help="Decode threads.")
@device_option
@click.option("--recursive/--no-recursive", default=True, show_default=True)
@click.option("--resume", is_flag=True, help="Skip scans already in --out/predictions.jsonl.")
@overwrite_option
@click.option("--shard", default=None, metavar="I/N",
              help="Classify only the I-th of N parts of the files (chosen by path, the same on every machine), "
                   "e.g. one Slurm array task each; join the parts with `brisc-infer merge`.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: this process; ray: Ray Data actors with one onnxruntime session each (brisc-mri[ray]).")
@click.option("--ray-address", default=None,
              help="--engine ray: a cluster to join (auto, or ray://host:port) [default: a local Ray for this run].")
@click.option("--concurrency", type=int, default=2, show_default=True, help="--engine ray: actors (sessions).")
@click.option("--gpus-per-worker", type=float, default=0.0, show_default=True,
              help="--engine ray: GPUs each actor asks Ray for (with --device cuda).")
@click.option("--cmap", type=click.Choice(CMAPS), default="viridis", show_default=True)
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="Heatmap opacity at the map's peak; it fades to clear where the map is low.")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def main(scans, model, out, heatmaps, heatmap_format, panels, save_maps, explain, masks, faithfulness, ood_threshold,
         plane, volume_index, volume_slices, volume_probability, batch_size, threads, workers, device, recursive, resume,
         overwrite, shard, engine, ray_address, concurrency, gpus_per_worker, cmap, alpha, quiet) -> None:
    """Classify brain MRI scans (JPEG, PNG, BMP, TIFF, DICOM files and series, NIfTI volumes; files or folders)
    into glioma, meningioma, no_tumor and pituitary, and write predictions, attention heatmaps and an HTML gallery
    to --out. A volume gets one row per slice and one in volumes.csv.

    --out must be new, empty, or an earlier brisc-infer output (continued with --resume or started over
    with --overwrite); it is locked while a run works in it and never read as input.

    \b
    brisc-infer ./scans --heatmaps                     # the shipped model; results in ./brisc-out
    brisc-infer ./scans --heatmaps --masks ./masks     # also score the maps against tumour masks
    brisc-infer ./scans --model my.onnx --out my-out   # a model you exported
    brisc-infer study.nii.gz --heatmaps                # a volume: slices, volumes.csv, a contact sheet
    brisc-infer ./scans --shard 2/3 --out part2        # one of three parts (then: brisc-infer merge part1 part2 part3 --out all)
    brisc-infer ./scans --engine ray                   # Ray Data actors (a local Ray, or --ray-address auto)

    Exit codes: 0 all classified, 1 some files failed (see errors.csv), 2 usage or model error,
    3 nothing could be classified, 130/143 interrupted by Ctrl-C/SIGTERM (what was done is written).
    Research use only: not a medical device."""
    from brisc.errors import one_line_errors
    from brisc.fsio import interrupted, raise_on_sigterm
    from brisc.inference.runner import InferOptions, run_inference
    from brisc.inference.session import InferenceError, open_session
    from brisc.inference.shard import parse_shard

    raise_on_sigterm()  # the batches already computed are written, then the run stops
    try:
        with one_line_errors("brisc-infer"):  # usage or model error (2, nothing written); a full disk (1, rows kept)
            if volume_slices < 1 or not 0 <= volume_probability <= 1:
                raise InferenceError("--volume-slices must be >= 1 and --volume-probability between 0 and 1")
            if batch_size < 1 or workers < 1 or concurrency < 1 or faithfulness < 0 or gpus_per_worker < 0:
                raise InferenceError("--batch-size, --workers and --concurrency must be >= 1, --faithfulness and "
                                     "--gpus-per-worker >= 0")
            if engine == "ray":
                from brisc.inference.ray_engine import check_ray

                check_ray()
            if masks is not None and not masks.is_dir():
                raise InferenceError(f"{masks}: masks folder not found")
            heatmaps = heatmaps or panels or save_maps
            sess = open_session(model, device=device, threads=threads, spin=not heatmaps)  # drawing needs the cycles
            if not quiet:
                click.echo(f"model {sess.path} ({sess.card.model_kind}), provider {sess.provider}", err=True)
            opts = InferOptions(inputs=tuple(scans), out=out, heatmaps=heatmaps, panels=panels,
                                save_maps=save_maps, explain=explain, masks=masks, batch_size=batch_size,
                                recursive=recursive, resume=resume, overwrite=overwrite, cmap=cmap, alpha=alpha,
                                workers=workers, faithfulness=faithfulness, ood_threshold=ood_threshold,
                                heatmap_format=heatmap_format, shard=parse_shard(shard), engine=engine,
                                ray_address=ray_address, concurrency=concurrency, gpus_per_worker=gpus_per_worker,
                                plane=plane, volume_index=volume_index, volume_slices=volume_slices,
                                volume_probability=volume_probability)
            s = run_inference(opts, sess, progress=not quiet)
    except KeyboardInterrupt as e:
        sys.exit(interrupted("brisc-infer", e, f"the scans classified so far are in {out}"
                             if out.is_dir() else "nothing was written yet"))
    if not quiet:
        for line in summary_lines(s, out):
            click.echo(line, err=True)
    if s["classified"] == 0 and not (shard and not s["failures"]):  # a part of a small tree may hold no file
        sys.exit(EXIT_NOTHING)
    sys.exit(EXIT_SOME_FAILED if s["failures"] else EXIT_OK)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("shards", nargs=-1, required=True, type=click.Path(path_type=Path))
@out_option
@overwrite_option
@click.option("--quiet", is_flag=True, help="No summary.")
def merge_command(shards, out, overwrite, quiet) -> None:
    """Join the output folders of `brisc-infer --shard I/N` (every part once, each finished) into one --out:
    rows, errors, skipped files, heatmaps, summary and gallery, as one run on every file would have written them.

    \b
    brisc-infer merge part1 part2 part3 --out all"""
    from brisc.errors import one_line_errors
    from brisc.inference.merge import merge

    with one_line_errors("brisc-infer merge"):
        s = merge(list(shards), out, overwrite=overwrite)
    if not quiet:
        for line in summary_lines(s, out):
            click.echo(line, err=True)
    sys.exit(EXIT_SOME_FAILED if s["failures"] else EXIT_OK)


def summary_lines(s: dict, out: Path) -> list[str]:
    """The run's summary in plain words (the same figures as summary.json)."""
    per = ", ".join(f"{k} {v}" for k, v in s["predicted_per_class"].items())
    done = (f"merged {len(s['merged_from'])} shards: {s['classified']} scans in {out}" if s.get("merged_from") else
            f"classified {s['classified_this_run']} scans this run ({s['classified']} in {out})")
    lines = [f"{done}; predicted: {per}; {s['failures']} failed, {s['skipped_non_images']} other files skipped"
             + ("" if s.get("merged_from") else f"; {s['img_per_s'] or 0:.1f} img/s")]
    if s["skipped_non_images"]:
        from brisc.inference.runner import skipped_text

        lines.append("skipped (listed in skipped.csv): " + skipped_text([(k["path"], k["reason"]) for k in s["skipped"]]))
    if s.get("duplicates_ignored"):
        lines.append(f"{s['duplicates_ignored']} input(s) named a file already listed: each file is classified once")
    o = s.get("ood", {})
    if o.get("threshold") is not None or s.get("out_of_distribution"):
        rule = (f"ood_score above {o['threshold']:.4g}, from the {o.get('threshold_from')}" if o.get("threshold") is not None
                else "blank and coloured pictures; this model has no ood_score")
        lines.append(f"{s['out_of_distribution']} of {s['classified']} flagged as not like the training scans ({rule}): "
                     "their class is not reliable")
    if "ground_truth" in s:
        g = s["ground_truth"]
        lines.append(f"true class known for {g['n']} (from file or folder names): accuracy {g['accuracy']:.3f}, "
                     f"macro-F1 {g['macro_f1']:.3f} over the " + (f"{len(g['macro_f1_classes'])} classes present"
                     if len(g["macro_f1_classes"]) > 1 else f"one class present ({g['macro_f1_classes'][0]})"))
        if "ground_truth_in_distribution" in s:
            gi = s["ground_truth_in_distribution"]
            lines.append(f"  over the {gi['n']} of them in distribution: accuracy {gi['accuracy']:.3f}, "
                         f"macro-F1 {gi['macro_f1']:.3f}")
    if "volumes" in s:
        v = s["volumes"]
        lines.append(f"{v['n']} volume(s), one row each in volumes.csv: " + ", ".join(
            f"{c} {n}" for c, n in v["predicted_per_class"].items() if n) + f" (rule: {v['rule']})")
    if "masks" in s:
        m = s["masks"]
        lines.append(m["explanation"])
        if m["faithfulness_n"]:
            lines.append(f"faithfulness on {m['faithfulness_n']} of them: deletion AUC {m['deletion_auc']:.3f} against "
                         f"{m['deletion_auc_random']:.3f} for a random patch order (lower: hiding the map's top patches "
                         f"first hurts the prediction sooner), insertion AUC {m['insertion_auc']:.3f} against "
                         f"{m['insertion_auc_random']:.3f} (higher is better)")
            for c, f in m["faithfulness_per_class"].items():
                lines.append(f"  {c} ({f['n']}): deletion {f['deletion_auc']:.3f} (random {f['deletion_auc_random']:.3f}), "
                             f"insertion {f['insertion_auc']:.3f} (random {f['insertion_auc_random']:.3f})")
    lines.append(f"results in {out}: predictions.csv, summary.json, errors.csv" + (", volumes.csv" if "volumes" in s else "")
                 + (", index.html (open it in a browser)" if s.get("gallery") else ""))
    lines.append("research use only: not a medical device")
    return lines


if __name__ == "__main__":
    main()
