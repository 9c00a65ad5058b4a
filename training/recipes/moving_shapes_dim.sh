#!/usr/bin/env bash
# Recipe for the shipped text-to-video model (run by `make assets-video`):
#   assets/moving-shapes-dim: Diffusion Mamba (DiffusionMamba.moving_shapes_config: 8-frame 32×32 clips, patch 4,
#   width 128, depth 8, bidirectional SSD scans over zigzag / spatio-temporal orders, CrossWKV text), rectified
#   flow, text features of the tiny CLIP (assets/clip-shapes, built by `make assets-shapes` if missing),
#   10% caption dropout, half the clips with a given prefix of 1-7 frames (so one model also continues clips).
#   Stage 1: time shift 1, constant LR, in $RUN_DIR. Stage 2 (STAGE2_STEPS > 0): its EMA weights trained on at
#   time shift 3 (more training at the high noise levels where layout and colour are decided) with the LR
#   cooled down linearly from half-way, in $RUN_DIR-shift3. Stage 3 (STAGE3_STEPS > 0, needs stage 2): those EMA
#   weights trained on at shift 3 with LR 3e-4, cooled down from step STAGE3_STEPS·7/13, in $RUN_DIR-stage3.
#   Stage 4 (STAGE4_STEPS > 0, needs stage 3): the same again with 30% of the clips given a prefix instead of
#   half (more text-only training), in $RUN_DIR-stage4. Stage 5 (STAGE5_STEPS > 0, needs stage 4): 900 steps
#   more with LR 2e-4 cooled down from half-way and 20% given prefixes, in $RUN_DIR-stage5.
#   The last stage's EMA weights are exported as a TextToVideoPipeline (sampler at that stage's shift) in fp16
#   (loads as fp32).
# SCAN=raster trains the plain raster-order ablation with the same budget (not shipped: set ASSET_DIR to keep it).
# THREADS=1 lets two runs share the 2 cores fairly. Every stage resumes from its folder. The shipped weights:
# stage 1 for 2,502 steps (115 min), resumed with STEPS=6000 MINUTES=37 THREADS=1 (stopped at step 3,411); then
# stage 2 with STAGE2_MINUTES=55 THREADS=1 (stopped at step 993 of 1,000); stage 3 from the fp16 export of
# stage 2 (the previously shipped folder; this recipe starts it from stage 2's fp32 EMA instead) for all 1,300
# steps (68 min on one core); stages 4 and 5 likewise from the fp16 export of the stage before, all 1,300 steps
# (61 min) and all 900 (55 min, the other core busy).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
SCAN=${SCAN:-zigzag}
RUN_DIR=${RUN_DIR:-runs/moving-shapes-dim-$SCAN}
STEPS=${STEPS:-3000}
MINUTES=${MINUTES:-100}
BATCH=${BATCH:-8}
THREADS=${THREADS:-0}
STAGE2_STEPS=${STAGE2_STEPS:-1000}
STAGE2_MINUTES=${STAGE2_MINUTES:-120}
STAGE3_STEPS=${STAGE3_STEPS:-1300}
STAGE3_MINUTES=${STAGE3_MINUTES:-120}
STAGE4_STEPS=${STAGE4_STEPS:-1300}
STAGE4_MINUTES=${STAGE4_MINUTES:-120}
STAGE5_STEPS=${STAGE5_STEPS:-900}
STAGE5_MINUTES=${STAGE5_MINUTES:-120}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
ASSET_DIR=${ASSET_DIR:-assets/moving-shapes-dim}

if [[ ! -d "$CLIP_DIR" ]]; then
  "$PY" training/train_clip.py --output-dir "$CLIP_DIR" --max-steps 1500 --batch-size 128 --warmup-steps 100
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" - "$SCAN" > "$CONFIG" <<'PYEOF'
import json, sys
from genmodels.dim import DiffusionMamba
print(json.dumps({**DiffusionMamba.moving_shapes_config(), "scan": sys.argv[1]}))
PYEOF

"$PY" training/train_dit.py \
  --model dim --config "$CONFIG" --dataset moving_shapes --text-encoder "$CLIP_DIR" \
  --output-dir "$RUN_DIR" --batch-size "$BATCH" --lr 5e-4 --warmup-steps 100 --weight-decay 0 --flow-shift 1 \
  --given-frames-prob 0.5 --max-steps "$STEPS" --max-minutes "$MINUTES" --checkpoint-every 250 \
  --checkpoints-total-limit 2 --sample-every 500 --log-every 25 --threads "$THREADS" --resume latest ${EXTRA_ARGS:-}

# One stage at time shift 3 from the previous stage's EMA weights (FINAL_DIR), LR cooled down linearly from
# step DECAY_START: OUT LR GIVEN_PROB STEPS MINUTES DECAY_START. Moves FINAL_DIR to OUT.
shift3_stage() {
  "$PY" training/train_dit.py \
    --model dim --init "$FINAL_DIR/pipeline" --dataset moving_shapes --text-encoder "$CLIP_DIR" \
    --output-dir "$1" --batch-size "$BATCH" --lr "$2" --warmup-steps 50 --weight-decay 0 --flow-shift "$SHIFT" \
    --given-frames-prob "$3" --max-steps "$4" --max-minutes "$5" --lr-decay cooldown --decay-start "$6" \
    --checkpoint-every 250 --checkpoints-total-limit 2 --sample-every 500 --log-every 25 --threads "$THREADS" \
    --resume latest
  FINAL_DIR=$1
}

FINAL_DIR=$RUN_DIR
SHIFT=1
if [[ "$STAGE2_STEPS" -gt 0 ]]; then
  SHIFT=3
  shift3_stage "$RUN_DIR-shift3" 5e-4 0.5 "$STAGE2_STEPS" "$STAGE2_MINUTES" $((STAGE2_STEPS / 2))
  if [[ "$STAGE3_STEPS" -gt 0 ]]; then
    shift3_stage "$RUN_DIR-stage3" 3e-4 0.5 "$STAGE3_STEPS" "$STAGE3_MINUTES" $((STAGE3_STEPS * 7 / 13))
    if [[ "$STAGE4_STEPS" -gt 0 ]]; then
      shift3_stage "$RUN_DIR-stage4" 3e-4 0.3 "$STAGE4_STEPS" "$STAGE4_MINUTES" $((STAGE4_STEPS * 7 / 13))
      if [[ "$STAGE5_STEPS" -gt 0 ]]; then
        shift3_stage "$RUN_DIR-stage5" 2e-4 0.2 "$STAGE5_STEPS" "$STAGE5_MINUTES" $((STAGE5_STEPS / 2))
      fi
    fi
  fi
fi

LATEST=$(ls -d "$FINAL_DIR"/checkpoint-* | awk -F'checkpoint-' '{print $NF, $0}' | sort -n | tail -1 | cut -d' ' -f2-)
"$PY" training/export_pipeline.py --model dim --config "$CONFIG" --sample-size 32 --flow-shift "$SHIFT" \
  --checkpoint "$LATEST" --text-encoder "$CLIP_DIR" --out "$ASSET_DIR" --fp16
echo "shipped $ASSET_DIR from $LATEST"
