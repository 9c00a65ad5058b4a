#!/usr/bin/env bash
# Recipe for the shipped VAR models (run by `make assets-var`):
#   1. assets/shapes-vqvae (training/recipes/shapes_vqvae.sh, `make assets-vqvae`) when it is missing
#      (FORCE_VQVAE=1 retrains it).
#   2. The VAR transformer (VARTransformer.shapes_config at width WIDTH, ATTENTION=softmax|linear) on the frozen
#      tokenizer with the tiny CLIP's text features (assets/clip-shapes), 10 % caption dropout; it resumes from
#      $RUN_DIR. The final EMA weights are saved as a VARPipeline in $RUN_DIR/pipeline.
#   3. That pipeline stored in fp16 (loads as float32) as $ASSET_DIR (default assets/shapes-var, only for the
#      softmax run: ATTENTION=linear trains the side-by-side baseline and ships nothing unless ASSET_DIR is set).
# THREADS=1 lets two runs share the 2 cores fairly. The shipped weights: STEPS=1800 (74 min on one core, the
# linear twin on the other), then the same run resumed with STEPS=2600 MINUTES=32 (stopped at step 2,549), then
# resumed again with STEPS=5400 THREADS=1 (to step 5,400, ~2 h on one core), then twice more at a constant LR
# of 3e-4 cooled down linearly at the end: STEPS=8000 THREADS=1 EXTRA_ARGS="--lr 3e-4 --lr-decay cooldown
# --decay-start 6800" and STEPS=10000 THREADS=1 EXTRA_ARGS="--lr 3e-4 --lr-decay cooldown --decay-start 9400"
# (~3 h more on one core).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
ATTENTION=${ATTENTION:-softmax}
RUN_DIR=${RUN_DIR:-runs/shapes-var-$ATTENTION}
STEPS=${STEPS:-2600}
MINUTES=${MINUTES:-120}
BATCH=${BATCH:-32}
WIDTH=${WIDTH:-192}
THREADS=${THREADS:-0}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
VQVAE_DIR=${VQVAE_DIR:-assets/shapes-vqvae}
if [[ "$ATTENTION" == softmax ]]; then ASSET_DIR=${ASSET_DIR:-assets/shapes-var}; else ASSET_DIR=${ASSET_DIR:-}; fi
export HF_HUB_OFFLINE=1

if [[ ! -d "$VQVAE_DIR" || -n "${FORCE_VQVAE:-}" ]]; then
  PY="$PY" THREADS="$THREADS" VQVAE_DIR="$VQVAE_DIR" training/recipes/shapes_vqvae.sh
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" - "$ATTENTION" "$WIDTH" > "$CONFIG" <<'PYEOF'
import json, sys
from genmodels.var.var import VARTransformer
print(json.dumps({**VARTransformer.shapes_config(), "attention": sys.argv[1], "width": int(sys.argv[2])}))
PYEOF

"$PY" training/train_var.py --vqvae "$VQVAE_DIR" --text-encoder "$CLIP_DIR" --config "$CONFIG" \
  --output-dir "$RUN_DIR" --batch-size "$BATCH" --lr 6e-4 --warmup-steps 100 --weight-decay 0.05 \
  --max-steps "$STEPS" --max-minutes "$MINUTES" --checkpoint-every 250 --checkpoints-total-limit 2 \
  --sample-every 250 --log-every 25 --threads "$THREADS" --resume latest ${EXTRA_ARGS:-}

if [[ -n "$ASSET_DIR" ]]; then
  "$PY" - "$RUN_DIR/pipeline" "$ASSET_DIR" <<'PYEOF'
import sys, torch
from genmodels.io import replace_dir_atomic
from genmodels.loading import load_pipeline
from genmodels.pipelines.var import VARPipeline
pipe = load_pipeline(VARPipeline, sys.argv[1])
with replace_dir_atomic(sys.argv[2]) as tmp:
    pipe.to(torch.float16).save_pretrained(tmp)
print(f"shipped {sys.argv[2]}")
PYEOF
fi
