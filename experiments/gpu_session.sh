#!/usr/bin/env bash
# One GPU session for issue 12's GPU path, as run through the `device` tool (docs/archive/results-2026-11.md, "The GPU path"):
# the loader benchmark alone, then six trainings side by side on the one GPU, then the results packed into $OUT.
#
#   python3 ../shared/tools/gpu-pack.py .gpu/data                       # here: a 224-px copy, ~32 MiB
#   python scripts/carry_split.py --run artifacts/runs/group-v3 .gpu/data   # ... with group-v3's validation split
#   bash experiments/gpu_session.sh                                           # there, carrying .gpu
#
# DRY=1 runs the same steps with the tiny presets on the CPU in a minute or two (a check before spending GPU time).
LIMIT=${LIMIT:-390}  # seconds for each training, so that everything is packed before the call's own limit
source scripts/gpu_common.sh
if [ "${DRY:-0}" = 1 ]; then
  BIG=tiny SMALL=tiny DEV=cpu BENCH="--preset tiny --limit 64 --epochs 1" EP="--epochs 1" MAE_EP=1 HF_EP=1
else
  BIG=gpu SMALL=cpu DEV=cuda BENCH="--preset gpu --device cuda --workers 8 --limit 4096" EP="" MAE_EP=150 HF_EP=20
fi
timeout 120 python3 benchmarks/loader_speed.py --data "$D" $BENCH > "$R/loader.md" 2>&1
echo "loader rc=$?" >> "$R/status.txt"

T="python3 -m brisc.train.cli --data $D --wandb disabled --device $DEV $EP"
GUIDED="--set vit.guide_weight=2 --set vit.guide_blur=0 --set vit.guide_floor=0.02"
LIGHT="--set vit.augment.rotation=5 --set vit.augment.scale=1,1 --set vit.augment.translate=0"
UNGUIDED_HF="--set hf_vit.guide_weight=0 --set hf_vit.batch_size=32 --set hf_vit.augment.rotation=10"  # the preset then
START=$SECONDS
OLD="--set vit.guide_weight=0 --set vit.augment.rotation=15 --set vit.augment.scale=0.9,1.1 --set vit.augment.translate=0.05"
job gpu-base $LIMIT  $T --models vit --preset $BIG $OLD --out "$R/gpu-base" &  # the gpu preset before this session
job gpu-guided $LIMIT $T --models vit --preset $BIG $GUIDED $LIGHT --out "$R/gpu-guided" &
job gpu-guided-conv $LIMIT $T --models vit --preset $BIG $GUIDED $LIGHT --set vit.stem=conv --out "$R/gpu-guided-conv" &
job cpu-patch $LIMIT $T --models vit --preset $SMALL --set vit.loader=tensor --set vit.stem=patch --out "$R/cpu-patch" &
job cpu-conv $LIMIT $T --models vit --preset $SMALL --set vit.loader=tensor --set vit.stem=conv --out "$R/cpu-conv" &
( job mae $((LIMIT / 2)) python3 -m brisc.train.pretrain_cli --data "$D" --preset $SMALL --epochs $MAE_EP --batch-size 256 \
      --out "$R/mae" --wandb disabled
  job hf $((LIMIT - SECONDS + START)) $T --models hf_vit --preset $SMALL --hf-model "$R/mae" --set hf_vit.lr=5e-4 --set hf_vit.epochs=$HF_EP \
      --set hf_vit.warmup_epochs=2 --set hf_vit.loader=tensor $UNGUIDED_HF --out "$R/hf" ) &
wait
cat "$R/status.txt"
tar czf "$OUT/results.tgz" -C "$R" --exclude='*.safetensors' --exclude='*.pt' --exclude='reconstructions' --exclude='./mae/mae' --exclude=./synth --exclude='.*.tmp*' .
for f in cpu-conv/vit/model.safetensors cpu-patch/vit/model.safetensors hf/hf_vit/model.safetensors; do
  [ -f "$R/$f" ] && cp "$R/$f" "$OUT/$(echo "$f" | cut -d/ -f1).safetensors"
done
ls -la "$OUT"
