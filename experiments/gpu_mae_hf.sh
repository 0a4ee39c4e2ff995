#!/usr/bin/env bash
# The second GPU call of the session in docs/archive/results-2026-11.md ("The GPU path"): a 60-epoch MAE (cpu-preset encoder, batch
# 256, alone on the GPU), then the transformers ViT fine-tuned from it for 20 epochs; results copied to $OUT/g2.
# Run on the device machine from the repo root, carrying .gpu (see experiments/gpu_session.sh). The --set flags after
# the loader pin the hf_vit preset of the time (unguided, batch 32, rotation 10).
export PYTHONPATH=src PYTHONUNBUFFERED=1
R=/tmp/g2; mkdir -p $R $OUT/g2
timeout 80 python3 -m brisc.train.pretrain_cli --data .gpu/data --preset cpu --epochs 60 --batch-size 256 --out $R/mae --wandb disabled > $R/mae.log 2>&1; echo "mae rc=$?"
timeout 150 python3 -m brisc.train.cli --data .gpu/data --wandb disabled --device cuda --models hf_vit --preset cpu --hf-model $R/mae --set hf_vit.lr=5e-4 --set hf_vit.epochs=20 --set hf_vit.warmup_epochs=2 --set hf_vit.loader=tensor --set hf_vit.guide_weight=0 --set hf_vit.batch_size=32 --set hf_vit.augment.rotation=10 --out $R/hf > $R/hf.log 2>&1; echo "hf rc=$?"
grep -a -o "\[mae\] epoch [0-9]*/[0-9]*  loss.*" $R/mae.log > $OUT/g2/mae.epochs.txt; tail -c 600 $R/mae.log
grep -a -o "\[hf_vit\] epoch [0-9]*/[0-9]*  loss.*" $R/hf.log > $OUT/g2/hf.epochs.txt; tail -c 600 $R/hf.log
cp $R/hf/hf_vit/metrics.json $OUT/g2/hf.metrics.json; cp $R/mae/pretrain.json $OUT/g2/; cp $R/hf/hf_vit/model.safetensors $OUT/g2/hf.safetensors; cp "$(ls $R/mae/reconstructions/*.png | tail -1)" $OUT/g2/last_reconstruction.png; ls $OUT/g2 | head
