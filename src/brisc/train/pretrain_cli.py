"""`brisc-pretrain`: masked-autoencoder pretraining on the training split, offline. A thin shell over ``pretrain``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from brisc.data import SPLIT_METHODS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="BRISC folder (any layout brisc-data knows) [default: $BRISC_DATA or ../shared/data/brisc2025].")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: a transformers ViT directory for --hf-model / --init, with the MAE beside it.")
@click.option("--preset", type=click.Choice(["tiny", "cpu", "gpu"]), default="cpu", show_default=True,
              help="tiny: tests; cpu: encoder 192x6 (the cpu ViT's), 30 epochs (~27 min on 2 cores); gpu: 384x12 (ViT-S), 200 epochs.")
@click.option("--epochs", type=int, default=None)
@click.option("--batch-size", type=int, default=None)
@click.option("--lr", type=float, default=None)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the run and of the split: the same as brisc-train's, so validation is never seen.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True)
@click.option("--split", type=click.Choice(SPLIT_METHODS), default="group", show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last completed epoch.")
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast [default: where the GPU/CPU runs it natively].")
@click.option("--wandb", type=click.Choice(["offline", "online", "disabled"]), default="offline", show_default=True)
@click.option("--loader", metavar="pil|tensor", default=None,
              help="pil: one image at a time through a DataLoader; tensor: whole batches augmented on the device "
                   "(brisc.train.batches) [default: tensor on a GPU, pil on the CPU].")
def main(data, out, preset, epochs, batch_size, lr, seed, val_fraction, split, resume, bf16, wandb, loader) -> None:
    """Pretrain a ViT encoder as a masked autoencoder (transformers' ViTMAEForPreTraining) on the images of the
    BRISC training split only (no labels, never validation), and write it where `brisc-train --models hf_vit
    --hf-model OUT` and `brisc-train --models vit --init OUT` pick it up. Reconstructions of four training images
    are saved each epoch (OUT/reconstructions)."""
    from brisc.data import default_data_root
    from brisc.fsio import interrupted, raise_on_sigterm
    from brisc.errors import one_line_errors
    from brisc.train.pretrain import PretrainOptions, pretrain

    raise_on_sigterm()  # a kill leaves no temporary file; --resume continues from the last completed epoch
    try:
        with one_line_errors("brisc-pretrain"):
            pretrain(PretrainOptions(data=data or default_data_root(), out=out, preset=preset, epochs=epochs,
                                     batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction, split=split,
                                     resume=resume, bf16=bf16, wandb=wandb, loader=loader), log=click.echo)
    except KeyboardInterrupt as e:
        sys.exit(interrupted("brisc-pretrain", e, f"the epochs completed are saved in {out}"))


if __name__ == "__main__":
    main()
