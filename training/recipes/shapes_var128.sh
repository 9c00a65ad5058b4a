#!/usr/bin/env bash
# Recipe for the 128×128 VAR (`make var128`), the model FastVAR's score change is measured on at a larger
# resolution (issue 7; not shipped: it lands in runs/). Nothing is trained from scratch:
#   1. Tokenizer: the 64² tokenizer's weights (assets/shapes-vqvae; its convolutions and codebook do not depend on
#      the image size) under MultiScaleVQVAE.shapes128_config (f = 8, 16×16 latent, scales 1, 2, 3, 4, 6, 8, 11,
#      16 = 507 tokens); `train_vqvae.py --max-steps 0 --init` evaluates and saves it (VQ_STEPS > 0 fine-tunes).
#   2. Transformer: the shipped 64² VAR (assets/shapes-var) with its position / level tables adapted to the longer
#      schedule (genmodels.var.var.adapt_scale_schedule), trained STEPS steps on 128² scenes at batch BATCH.
#   3. The last checkpoint's EMA exported as a pipeline in fp16 (loads as float32) as $ASSET_DIR (default
#      runs/shapes-var128-fp16, the folder BENCHMARKS.md's figures were measured on).
# THREADS=1 shares the 2 cores with another run.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN_DIR=${RUN_DIR:-runs/shapes-var128}
VQ_DIR=${VQ_DIR:-runs/shapes128-vqvae}
VQ_STEPS=${VQ_STEPS:-0}
STEPS=${STEPS:-900}
DECAY_START=${DECAY_START:-600}
MINUTES=${MINUTES:-120}
BATCH=${BATCH:-16}
THREADS=${THREADS:-0}
INIT=${INIT:-assets/shapes-var}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
ASSET_DIR=${ASSET_DIR:-runs/shapes-var128-fp16}
export HF_HUB_OFFLINE=1

if [[ ! -d "$VQ_DIR" ]]; then
  "$PY" training/train_vqvae.py --config shapes128 --init assets/shapes-vqvae --max-steps "$VQ_STEPS" \
    --batch-size 16 --lr 2e-4 --warmup-steps 20 --restart-every 0 --threads "$THREADS" --output-dir "$VQ_DIR"
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" - "$INIT" > "$CONFIG" <<'PYEOF'
import json, sys
from pathlib import Path
from genmodels.var.var import VARTransformer
width = json.loads((Path(sys.argv[1]) / "transformer" / "config.json").read_text())["width"]
print(json.dumps({**VARTransformer.shapes128_config(), "width": width}))
PYEOF

"$PY" training/train_var.py --vqvae "$VQ_DIR" --text-encoder "$CLIP_DIR" --config "$CONFIG" --init "$INIT" \
  --output-dir "$RUN_DIR" --batch-size "$BATCH" --lr 3e-4 --warmup-steps 50 --weight-decay 0.05 \
  --lr-decay cooldown --decay-start "$DECAY_START" --max-steps "$STEPS" --max-minutes "$MINUTES" \
  --checkpoint-every 150 --checkpoints-total-limit 2 --eval-every 300 --log-every 25 --threads "$THREADS" \
  --resume latest ${EXTRA_ARGS:-}

LATEST=$(ls -d "$RUN_DIR"/checkpoint-* | awk -F'checkpoint-' '{print $NF, $0}' | sort -n | tail -1 | cut -d' ' -f2-)
"$PY" training/export_pipeline.py --model var --config "$CONFIG" --vqvae "$VQ_DIR" --checkpoint "$LATEST" \
  --text-encoder "$CLIP_DIR" --out "$ASSET_DIR" --fp16
echo "wrote $ASSET_DIR from $LATEST"
