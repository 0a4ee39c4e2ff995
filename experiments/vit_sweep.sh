#!/usr/bin/env bash
# Screening sweep for the home-made ViT on real BRISC (docs/archive/results-2026-11.md, "Tuning the home-made ViT"): one change at a time
# against the first cpu recipe, each on the same short budget (6 epochs, 1 warmup) so four fit in an hour on 2 cores.
# Usage: bash experiments/vit_sweep.sh [OUT_ROOT]   (default artifacts/runs/sweep; a finished run is kept, not redone)
set -euo pipefail
root=${1:-artifacts/runs/sweep}
# The first cpu recipe's augmentation, spelled out (the preset now holds the sweep's winner); later --set items win.
first=(--set vit.augment.rotation=15 --set vit.augment.scale=0.9,1.1 --set vit.augment.translate=0.05)
short=(--models vit --preset cpu --set vit.stem=patch --epochs 6 --set vit.warmup_epochs=1 "${first[@]}" --wandb disabled)
declare -A variants=(
  [s0-base]=""
  [s1-no-droppath]="--set vit.drop_path=0"
  [s2-light-aug]="--set vit.augment.rotation=5 --set vit.augment.scale=1,1 --set vit.augment.translate=0"
  [s3-wide-shallow]="--set vit.dim=256 --set vit.depth=4 --set vit.heads=4 --set vit.head_hidden=256"
)
for name in s0-base s1-no-droppath s2-light-aug s3-wide-shallow; do
  [[ -f $root/$name/vit/metrics.json ]] && { echo "$name: done, kept"; continue; }
  # shellcheck disable=SC2086
  brisc-train "${short[@]}" ${variants[$name]} --out "$root/$name" $([[ -d $root/$name/vit ]] && echo --resume)
done
