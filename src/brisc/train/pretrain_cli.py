"""`brisc-pretrain`: masked-autoencoder pretraining on the training split, offline. A thin shell over ``pretrain``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from brisc.kinds import PRESET_NAMES
from brisc.options import bf16_option, data_folder, data_input, recipe_overrides, resume_option, split_options, wandb_option


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@data_input
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Output folder: a transformers ViT directory for --hf-model / --init, with the MAE beside it.")
@click.option("--preset", type=click.Choice(list(PRESET_NAMES)), default="cpu", show_default=True,
              help="tiny: tests; cpu: encoder 192x6 (the cpu ViT's), 30 epochs (~27 min on 2 cores); gpu: 384x12 (ViT-S), 200 epochs.")
@recipe_overrides
@split_options
@resume_option
@bf16_option
@wandb_option
@click.option("--loader", metavar="pil|tensor", default=None,
              help="pil: one image at a time through a DataLoader; tensor: whole batches augmented on the device "
                   "(brisc.train.batches) [default: tensor on a GPU, pil on the CPU].")
def main(data_arg, data, out, preset, epochs, batch_size, lr, seed, val_fraction, split, resume, bf16, wandb_mode,
         loader) -> None:
    """Pretrain a ViT encoder as a masked autoencoder (transformers' ViTMAEForPreTraining) on the images of the
    BRISC training split only (no labels, never validation), and write it where `brisc-train --models hf_vit
    --hf-model OUT` and `brisc-train --models vit --init OUT` pick it up. Reconstructions of four training images
    are saved each epoch (OUT/reconstructions).

    \b
    brisc-pretrain --out artifacts/runs/mae                        # cpu preset, the default data
    brisc-train --models hf_vit --hf-model artifacts/runs/mae      # then fine-tune the HF ViT from it"""
    from brisc.fsio import interrupted, raise_on_sigterm
    from brisc.errors import one_line_errors
    from brisc.train.pretrain import PretrainOptions, pretrain

    raise_on_sigterm()  # a kill leaves no temporary file; --resume continues from the last completed epoch
    try:
        with one_line_errors("brisc-pretrain"):
            pretrain(PretrainOptions(data=data_folder(data_arg, data), out=out, preset=preset, epochs=epochs,
                                     batch_size=batch_size, lr=lr, seed=seed, val_fraction=val_fraction, split=split,
                                     resume=resume, bf16=bf16, wandb=wandb_mode, loader=loader), log=click.echo)
    except KeyboardInterrupt as e:
        sys.exit(interrupted("brisc-pretrain", e, f"the epochs completed are saved in {out}"))


if __name__ == "__main__":
    main()
