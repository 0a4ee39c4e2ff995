"""The command-line options several brisc commands share, each spelled once (torch-free click decorators).

The data is named the same way everywhere: a positional folder (brisc-data, brisc-infer, brisc-synth, brisc-train,
brisc-pretrain), with ``--data`` kept as an alias where it was an option.
"""

from __future__ import annotations

from pathlib import Path

import click

from brisc.kinds import SPLIT_METHODS

WANDB_MODES = ("offline", "online", "disabled")


def _stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


data_input = _stack(
    click.argument("data_arg", metavar="[DATA]", required=False, type=click.Path(path_type=Path)),
    click.option("--data", type=click.Path(path_type=Path), default=None,
                 help="The BRISC folder, as DATA (any layout brisc-data knows) [default: $BRISC_DATA or "
                      "../shared/data/brisc2025]."),
)

split_options = _stack(
    click.option("--seed", type=int, default=0, show_default=True,
                 help="Seed of the validation split (brisc-train and brisc-pretrain: also of the init and every "
                      "epoch; they must agree)."),
    click.option("--val-fraction", type=float, default=0.1, show_default=True,
                 help="Share of train carved out for validation."),
    click.option("--split", type=click.Choice(SPLIT_METHODS), default="group", show_default=True,
                 help="How validation is carved: group keeps look-alike slices (one patient's neighbours) together, "
                      "so validation does not share patients with train; random draws images (flatters bigger models)."),
)

recipe_overrides = _stack(
    click.option("--epochs", type=int, default=None, help="Override the preset's epochs."),
    click.option("--batch-size", type=int, default=None, help="Override the preset's batch size (per process)."),
    click.option("--lr", type=float, default=None, help="Override the preset's peak learning rate."),
)

resume_option = click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
wandb_option = click.option("--wandb", "wandb_mode", type=click.Choice(WANDB_MODES), default="offline",
                            show_default=True, help="Weights & Biases mode (offline needs no login or network).")
device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                             help="auto: CUDA where it is available, else the CPU.")
bf16_option = click.option("--bf16/--no-bf16", default=None,
                           help="bf16 autocast [default: on CUDA, and on CPUs with AVX-512 BF16/AMX where the preset asks; "
                                "elsewhere fp32, since emulated bf16 is several times slower].")


def data_folder(data_arg: Path | None, data: Path | None) -> Path:
    """DATA or --data (one of them), else the default data root."""
    from brisc.data import default_data_root

    if data_arg is not None and data is not None and Path(data_arg) != Path(data):
        raise click.UsageError(f"two data folders: {data_arg} and --data {data}; name one")
    return Path(data_arg or data or default_data_root())
