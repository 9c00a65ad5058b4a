#!/usr/bin/env bash
# Recipe for the shipped piano-roll model, assets/pianoroll-hdit (run by `make assets-pianoroll`).
#
# Trains the HDiT of pianoroll_hdit.json on 128-column (8-bar) crops of the Bach chorales and Ryan's Mammoth
# (music21's bundled corpus), EMA weights saved as a diffusers pipeline, then copied into assets/.
#   CPU (default): 80 minutes of training on 2 cores.
#   GPU: DEVICE_MINUTES=6 BATCH=64 training/recipes/pianoroll_hdit.sh
# The shipped weights came from the CPU default: 5,030 steps at batch 16 in 72 minutes (BENCHMARKS.md).
# It resumes from the newest checkpoint in $RUN_DIR when re-run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN_DIR=${RUN_DIR:-runs/pianoroll-hdit}
MINUTES=${DEVICE_MINUTES:-80}
BATCH=${BATCH:-16}
ASSET_DIR=${ASSET_DIR:-assets/pianoroll-hdit}

"$PY" training/train_dit.py \
  --model hdit --config training/recipes/pianoroll_hdit.json \
  --dataset pianoroll --dataset-args '{"width": 128}' \
  --output-dir "$RUN_DIR" --batch-size "$BATCH" --base-batch-size 16 --lr 5e-4 --lr-scaling sqrt \
  --max-steps 200000 --max-minutes "$MINUTES" --checkpoint-every 500 --checkpoints-total-limit 2 \
  --sample-every 1000 --eval-every 1000 --log-every 50 --resume latest ${EXTRA_ARGS:-}

rm -rf "$ASSET_DIR.tmp" && cp -r "$RUN_DIR/pipeline" "$ASSET_DIR.tmp"
rm -rf "$ASSET_DIR" && mv "$ASSET_DIR.tmp" "$ASSET_DIR"
echo "shipped $ASSET_DIR"
