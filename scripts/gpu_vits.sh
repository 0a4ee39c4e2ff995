#!/usr/bin/env bash
# One GPU session for issue 30's first lever: the `gpu` preset's ViT-S for its full 100 epochs, alone on the GPU, on
# the 224-px copy with the CPU runs' validation split; its run (without weights) and its weights in fp16 pieces back.
#
#   echo /.gpu/ >> .git/info/exclude; python3 ../shared/tools/gpu-pack.py .gpu/data   # here: 224 px, ~32 MiB
#   python scripts/carry_split.py --run artifacts/runs/oe-seed2 .gpu/data    # ... with the CPU runs' split
#   bash scripts/gpu_vits.sh                                    # there: the device's run, carry .gpu, timeout 600
#   tar xzf FILES/results.tgz -C /tmp/vits && python scripts/gpu_weights.py unpack --run /tmp/vits/vits-s0 \
#       --weights FILES/vits-s0.fp16 --like artifacts/runs/oe-seed2 --out artifacts/runs/vits-h200    # here
#
# 88 epochs took 270 s alone on an H200 (docs/archive/results-2026-11.md); LIMIT stops it in time to pack what was
# done (the trainer keeps every finished epoch). DRY=1: the tiny preset on synthetic data on the CPU, a check first.
LIMIT=${LIMIT:-500}
source scripts/gpu_common.sh
if [ "${DRY:-0}" = 1 ]; then P="--preset tiny --device cpu"; else P="--preset gpu --device cuda"; fi
job vits-s0 "$LIMIT" python3 -m brisc.train.cli --data "$D" --models vit $P --wandb disabled --out "$R/vits-s0"
cat "$R/status.txt"
tar czf "$OUT/results.tgz" -C "$R" --exclude='*.safetensors' --exclude='*.pt' --exclude=./synth --exclude='.*.tmp*' .
python3 scripts/gpu_weights.py pack "$R/vits-s0" "$OUT"
ls -la "$OUT"
