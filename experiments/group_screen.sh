#!/usr/bin/env bash
# Issue 12's screen of the home-made ViT on the group-aware split (docs/archive/results-2026-11.md, "Screening on the group split"):
# the cpu preset as it is (mask guidance toward the unblurred mask, 4 registers) against one change at a time, all on
# the same short budget (6 epochs, 1 warmup; ~10 min each on 2 cores). A 6-epoch screen favours what fits fastest:
# confirm a winner on the full schedule.
# Usage: bash experiments/group_screen.sh [OUT_ROOT]   (default artifacts/runs/screen; a finished run is kept;
#        NAMES="c0-base c1-conv-stem" runs a subset; TEACHER=RUN/KIND for c3, default the group-split cpu run's ViT).
#        Table: python experiments/guidance_table.py OUT_ROOT/c* --methods cls
set -euo pipefail
root=${1:-artifacts/runs/screen}
teacher=${TEACHER:-artifacts/runs/group-v3/vit}
short=(--models vit --preset cpu --set vit.stem=patch --epochs 6 --set vit.warmup_epochs=1 --split group --wandb disabled)
declare -A variants=(
  [c0-base]=""
  [c1-conv-stem]="--set vit.stem=conv"
  [c2-cutmix]="--set vit.cutmix=0.5"
  [c3-distill]="--set vit.distill_token=true --set vit.distill_from=$teacher"
)
names=${NAMES:-c0-base c1-conv-stem c2-cutmix c3-distill}
for name in $names; do
  [[ -f $root/$name/vit/metrics.json ]] && { echo "$name: done, kept"; continue; }
  # shellcheck disable=SC2086
  python -m brisc.train.cli "${short[@]}" ${variants[$name]} --out "$root/$name" --resume
done
python experiments/guidance_table.py "$root"/c* --methods cls --json "$root/table.json"
