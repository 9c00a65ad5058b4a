#!/usr/bin/env bash
# Recipe for the larger-resolution VARs FastVAR's score change is measured on (issue 7; not shipped: they land in
# runs/): `make var128` (RES=128) and `make var256` (RES=256, after var128). Nothing is trained from scratch:
#   1. Tokenizer: the 64² tokenizer's weights (assets/shapes-vqvae; its convolutions and codebook do not depend on
#      the image size) under MultiScaleVQVAE.shapes${RES}_config (f = 8; 128²: scales 1, 2, 3, 4, 6, 8, 11, 16 =
#      507 tokens; 256²: … 23, 32 = 2,060 tokens); `train_vqvae.py --max-steps 0 --init` evaluates and saves it
#      (VQ_STEPS > 0 fine-tunes).
#   2. Transformer: a trained VAR with its position / level tables adapted to the longer schedule
#      (genmodels.var.var.adapt_scale_schedule) — at 128² the shipped 64² one (assets/shapes-var), at 256² the
#      128² one (runs/shapes-var128-fp16) — trained STEPS steps on RES² scenes at batch BATCH.
#   3. The last checkpoint's EMA exported as a pipeline in fp16 (loads as float32) as $ASSET_DIR (default
#      runs/shapes-var${RES}-fp16, the folder BENCHMARKS.md's figures were measured on).
# THREADS=1 shares the 2 cores with another run. On this 2-core CPU a step at batch 16 takes ~3.6 s at 128² (one
# thread) and ~14 s at 256² (two threads: 300 steps in 68 min).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RES=${RES:-128}
case "$RES" in
  128) DEFAULT_INIT=assets/shapes-var; DEFAULT_STEPS=900; DEFAULT_DECAY=600; DEFAULT_LR=3e-4; EVERY=(150 300 25) ;;
  256) DEFAULT_INIT=runs/shapes-var128-fp16; DEFAULT_STEPS=300; DEFAULT_DECAY=200; DEFAULT_LR=2e-4; EVERY=(50 100 10) ;;
  *) echo "RES must be 128 or 256, got $RES" >&2; exit 2 ;;
esac
RUN_DIR=${RUN_DIR:-runs/shapes-var$RES}
VQ_DIR=${VQ_DIR:-runs/shapes$RES-vqvae}
VQ_STEPS=${VQ_STEPS:-0}
STEPS=${STEPS:-$DEFAULT_STEPS}
DECAY_START=${DECAY_START:-$DEFAULT_DECAY}
LR=${LR:-$DEFAULT_LR}
MINUTES=${MINUTES:-120}
BATCH=${BATCH:-16}
THREADS=${THREADS:-0}
INIT=${INIT:-$DEFAULT_INIT}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
ASSET_DIR=${ASSET_DIR:-runs/shapes-var$RES-fp16}
export HF_HUB_OFFLINE=1

if [[ ! -e "$INIT" ]]; then
  echo "INIT $INIT is missing (RES=256 starts from the 128² model: run 'make var128' first)" >&2
  exit 2
fi

if [[ ! -d "$VQ_DIR" ]]; then
  "$PY" training/train_vqvae.py --config "shapes$RES" --init assets/shapes-vqvae --max-steps "$VQ_STEPS" \
    --batch-size 16 --lr 2e-4 --warmup-steps 20 --restart-every 0 --threads "$THREADS" --output-dir "$VQ_DIR"
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" - "$INIT" "$RES" > "$CONFIG" <<'PYEOF'
import json, sys
from pathlib import Path
from genmodels.var.var import VARTransformer
width = json.loads((Path(sys.argv[1]) / "transformer" / "config.json").read_text())["width"]
print(json.dumps({**getattr(VARTransformer, f"shapes{sys.argv[2]}_config")(), "width": width}))
PYEOF

"$PY" training/train_var.py --vqvae "$VQ_DIR" --text-encoder "$CLIP_DIR" --config "$CONFIG" --init "$INIT" \
  --output-dir "$RUN_DIR" --batch-size "$BATCH" --lr "$LR" --warmup-steps 50 --weight-decay 0.05 \
  --lr-decay cooldown --decay-start "$DECAY_START" --max-steps "$STEPS" --max-minutes "$MINUTES" \
  --checkpoint-every "${EVERY[0]}" --checkpoints-total-limit 2 --eval-every "${EVERY[1]}" --log-every "${EVERY[2]}" \
  --threads "$THREADS" \
  --resume latest ${EXTRA_ARGS:-}

LATEST=$(ls -d "$RUN_DIR"/checkpoint-* | awk -F'checkpoint-' '{print $NF, $0}' | sort -n | tail -1 | cut -d' ' -f2-)
"$PY" training/export_pipeline.py --model var --config "$CONFIG" --vqvae "$VQ_DIR" --checkpoint "$LATEST" \
  --text-encoder "$CLIP_DIR" --out "$ASSET_DIR" --fp16
echo "wrote $ASSET_DIR from $LATEST"
