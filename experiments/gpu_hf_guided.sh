#!/usr/bin/env bash
# Issue 12's HF ViT row on the GPU (docs/archive/results-2026-11.md, "The HF ViT with mask guidance"): the transformers ViT
# fine-tuned from the CPU's 10-epoch MAE encoder (artifacts/runs/mae-cpu) with the home-made ViT's recipe: guidance of
# the last layer's [CLS] attention toward the tumour mask, rotation 5, batch 64. Three learning-rate / schedule
# variants side by side on the one GPU; logs and metrics packed into $OUT/results.tgz, the weights beside it.
#
#   python3 ../shared/tools/gpu-pack.py .gpu/data && python scripts/carry_split.py --run artifacts/runs/group-v3 .gpu/data
#   mkdir -p .gpu/mae && cp artifacts/runs/mae-cpu/{config.json,model.safetensors} .gpu/mae/
#   bash experiments/gpu_hf_guided.sh                                       # there, carrying .gpu
#
# DRY=1 runs the same steps on synthetic data with the tiny preset on the CPU (a check before spending GPU time).
LIMIT=${LIMIT:-330}  # seconds for each training, so that everything is packed before the call's own limit
MAE=${MAE:-.gpu/mae}
source scripts/gpu_common.sh
if [ "${DRY:-0}" = 1 ]; then PRESET=tiny DEV=cpu EP_SHORT=1 EP_LONG=2; else PRESET=cpu DEV=cuda EP_SHORT=60 EP_LONG=100; fi

T="python3 -m brisc.train.cli --data $D --wandb disabled --device $DEV --models hf_vit --preset $PRESET --hf-model $MAE"
RECIPE="--set hf_vit.guide_weight=2 --set hf_vit.guide_blur=0 --set hf_vit.guide_floor=0.02 --set hf_vit.augment.rotation=5
        --set hf_vit.batch_size=64 --set hf_vit.warmup_epochs=3 --set hf_vit.loader=tensor"
job hf-lr5e-4 $LIMIT $T $RECIPE --set hf_vit.lr=5e-4 --set hf_vit.epochs=$EP_SHORT --out "$R/hf-lr5e-4" &
job hf-lr1e-3 $LIMIT $T $RECIPE --set hf_vit.lr=1e-3 --set hf_vit.epochs=$EP_SHORT --out "$R/hf-lr1e-3" &
job hf-lr5e-4-long $LIMIT $T $RECIPE --set hf_vit.lr=5e-4 --set hf_vit.epochs=$EP_LONG --out "$R/hf-lr5e-4-long" &
wait
cat "$R/status.txt"
for n in hf-lr5e-4 hf-lr1e-3 hf-lr5e-4-long; do
  grep -a -o "\[hf_vit\] epoch [0-9]*/[0-9]*  loss.*" "$R/$n.log" > "$R/$n.epochs.txt"; tail -n 3 "$R/$n.epochs.txt"
  [ -f "$R/$n/hf_vit/model.safetensors" ] && cp "$R/$n/hf_vit/model.safetensors" "$OUT/$n.safetensors"
done
tar czf "$OUT/results.tgz" -C "$R" --exclude='*.safetensors' --exclude='*.pt' --exclude=./synth --exclude='.*.tmp*' .
ls -la "$OUT"
