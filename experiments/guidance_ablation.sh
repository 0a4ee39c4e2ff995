#!/usr/bin/env bash
# Mask-guidance ablation for the home-made ViT on real BRISC (docs/archive/results-2026-11.md, "Maps that point at the tumour"):
# the cpu recipe on a short budget (6 epochs, 1 warmup), switched on one at a time, then the table (experiments/guidance_table.py).
# Usage: bash experiments/guidance_ablation.sh [OUT_ROOT]   (default artifacts/runs/ablation; a finished run is kept;
#        NAMES="a0-base a2-guide" runs a subset). The runs use the random split of the reference run they compare with.
set -euo pipefail
root=${1:-artifacts/runs/ablation}
short=(--models vit --preset cpu --set vit.stem=patch --epochs 6 --set vit.warmup_epochs=1 --split random --wandb disabled)
# The cpu preset itself guides the last layer and has 4 registers: each variant sets both switches explicitly.
declare -A variants=(
  [a0-base]="--set vit.guide_weight=0 --set vit.registers=0"
  [a1-registers]="--set vit.guide_weight=0 --set vit.registers=4"
  [a2-guide]="--set vit.guide_weight=1 --set vit.registers=0"
  [a3-guide-registers]="--set vit.guide_weight=1 --set vit.registers=4"
  [a4-guide-layer3]="--set vit.guide_weight=1 --set vit.guide_layers=3 --set vit.registers=4"
  [a5-guide-weight0.3]="--set vit.guide_weight=0.3 --set vit.registers=4"
  [a6-sharp-registers]="--set vit.guide_weight=2 --set vit.guide_blur=0 --set vit.guide_floor=0.02 --set vit.registers=4"
)
names=${NAMES:-a0-base a3-guide-registers a2-guide a1-registers a6-sharp-registers a4-guide-layer3 a5-guide-weight0.3}
for name in $names; do
  [[ -f $root/$name/vit/metrics.json ]] && { echo "$name: done, kept"; continue; }
  # shellcheck disable=SC2086
  brisc-train "${short[@]}" ${variants[$name]} --out "$root/$name" --resume
done
python experiments/guidance_table.py "$root"/a* --json "$root/table.json"
