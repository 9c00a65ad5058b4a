#!/usr/bin/env bash
# Recipe for the SANA model shipped until 2026-12-01 (`make assets-shapes` now runs shapes_sana_layout.sh):
#   1. assets/clip-shapes: the tiny CLIP (training/train_clip.py, config clip_shapes.json), 1,500 steps at
#      batch 128 (~14 min on 2 cores); skipped when the folder exists (FORCE_CLIP=1 retrains it).
#   2. assets/shapes-sana: the SANA-style linear DiT (SanaDiT.shapes_config, CrossWKV cross-attention),
#      rectified flow, text features of the CLIP above, 10% caption dropout; EMA weights saved as a
#      TextToImagePipeline.
#   3. The 2 least important blocks pruned (PRUNE=0 keeps all), stored in fp16 (loads as fp32).
# CROSS_ATTN=softmax trains the softmax cross-attention baseline with the same budget (not shipped: set
# ASSET_DIR to keep it). THREADS=1 lets two runs share the 2 cores fairly. It resumes from $RUN_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CROSS_ATTN=${CROSS_ATTN:-crosswkv}
RUN_DIR=${RUN_DIR:-runs/shapes-sana-$CROSS_ATTN}
STEPS=${STEPS:-2400}
MINUTES=${MINUTES:-80}
BATCH=${BATCH:-32}
THREADS=${THREADS:-0}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
ASSET_DIR=${ASSET_DIR:-assets/shapes-sana}

if [[ ! -d "$CLIP_DIR" || -n "${FORCE_CLIP:-}" ]]; then
  "$PY" training/train_clip.py --output-dir "$CLIP_DIR" --max-steps 1500 --batch-size 128 --warmup-steps 100
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" - "$CROSS_ATTN" > "$CONFIG" <<'PYEOF'
import json, sys
from genmodels.sana import SanaDiT
print(json.dumps({**SanaDiT.shapes_config(), "cross_attn": sys.argv[1]}))
PYEOF

"$PY" training/train_dit.py \
  --model sana --config "$CONFIG" --dataset shapes --text-encoder "$CLIP_DIR" \
  --output-dir "$RUN_DIR" --batch-size "$BATCH" --lr 6e-4 --warmup-steps 100 --weight-decay 0 \
  --max-steps "$STEPS" --max-minutes "$MINUTES" --checkpoint-every 300 --checkpoints-total-limit 2 \
  --sample-every 300 --eval-every 600 --log-every 25 --threads "$THREADS" --resume latest ${EXTRA_ARGS:-}

# 3. SANA 1.5 depth pruning: drop the PRUNE least important blocks (block importance 1 − cos on fixed validation
#    batches), stored fp16. On the shipped run, removing 2 of 8 blocks doubled the oracle score (BENCHMARKS.md).
"$PY" training/prune_pipeline.py --model "$RUN_DIR/pipeline" --remove "${PRUNE:-2}" --out "$ASSET_DIR" --fp16
echo "shipped $ASSET_DIR"
