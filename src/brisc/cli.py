"""`brisc`: one command for all of brisc, `brisc train|pretrain|export|infer|data|synth ...`, each the same command as
its hyphenated twin (`brisc infer ./scans` is `brisc-infer ./scans`). Subcommands are imported when named, so
`brisc --help` and `brisc infer --help` stay as light as the twins' own."""

from __future__ import annotations

import importlib

import click

# name -> (module, what it does); the hyphenated console scripts point at the same `main`s (pyproject.toml).
COMMANDS = {
    "train": ("brisc.train.cli", "train and compare the three models"),
    "pretrain": ("brisc.train.pretrain_cli", "masked-autoencoder pretraining of a ViT encoder, offline"),
    "export": ("brisc.export.cli", "self-checking ONNX graphs with attention and ood_score"),
    "infer": ("brisc.inference.cli", "classify folders of scans, write heatmaps and a gallery (torch-free)"),
    "data": ("brisc.data_cli", "what a BRISC folder holds and the validation split it carves"),
    "synth": ("brisc.synth_cli", "write a synthetic BRISC of procedural phantoms"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).main

    def format_commands(self, ctx, formatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, what) for name, (_, what) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Explainable brain-tumour MRI classification on BRISC 2025. Research use only: not a medical device.

    \b
    brisc train                      # train the three models into a new run folder
    brisc export --format onnx       # export the newest run
    brisc infer ./scans --heatmaps   # classify a folder, write attention PNGs and index.html
    """


if __name__ == "__main__":
    main()
