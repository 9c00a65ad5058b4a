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
#   more with LR 2e-4 cooled down from half-way and 20% given prefixes, in $RUN_DIR-stage5. Stage 6 (STAGE6=1,
#   the default; needs stage 5): the CLIP fine-tuned on filmstrips with the bag-of-words loss
#   (train_clip.py --word-loss 1, in $WORDS_CLIP_DIR), so "left" and "right" differ to the text side; then
#   three runs on its frozen text tower with 60% of the clips given a prefix, nearly all of one frame (image to
#   video, where only the direction is unknown): words1 (LR 5e-4, cooled down from 500 of 1,000, stopped at 824),
#   words1b (LR 3e-4, from 100 of 600, stopped at 403), words1c (LR 3e-4, from 500 of 1,300, global batch 16 as
#   PROCS=2 DDP processes of 8, or one process with 2 accumulated micro-batches). The exported pipeline carries
#   that text tower. Stage 7 (STAGE7=1, the default; needs stage 6): layout conditioning added to words1c's
#   model (zero-initialised, so it starts as words1c) and trained on the clips' layouts (per object its noun
#   phrase and its box in every frame), 25 % of the clips without one, 40 % given a prefix (half of them one
#   frame), LR 3e-4 cooled down from 500 of 900 steps, global batch 16, in $RUN_DIR-layout; the pipeline
#   plans a layout from each prompt (layout_planner "moving_shapes"). The last stage's EMA weights are
#   exported as a TextToVideoPipeline (sampler at that stage's shift) in fp16 (loads as fp32).
# SCAN=raster trains the plain raster-order ablation with the same budget (not shipped: set ASSET_DIR to keep it).
# THREADS=1 lets two runs share the 2 cores fairly. Every stage resumes from its folder. The shipped weights:
# stage 1 for 2,502 steps (115 min), resumed with STEPS=6000 MINUTES=37 THREADS=1 (stopped at step 3,411); then
# stage 2 with STAGE2_MINUTES=55 THREADS=1 (stopped at step 993 of 1,000); stage 3 from the fp16 export of
# stage 2 (the previously shipped folder; this recipe starts it from stage 2's fp32 EMA instead) for all 1,300
# steps (68 min on one core); stages 4 and 5 likewise from the fp16 export of the stage before, all 1,300 steps
# (61 min) and all 900 (55 min, the other core busy); stage 6 from the shipped stage-5 folder: the CLIP 11 min,
# words1 and words1b on one core each stopped by 50- and 30-minute limits (replayed here by --stop-at-step),
# words1c all 1,300 steps on two DDP processes with THREADS=1 (83 min); stage 7 from the shipped stage-6 folder
# (this recipe: from words1c's fp32 EMA) on two DDP processes with THREADS=1, ~5 s a step (the first 500 steps
# under a longer schedule whose LR was the same constant there, then resumed with this one).
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
STAGE6=${STAGE6:-1}
STAGE6_MINUTES=${STAGE6_MINUTES:-240}
STAGE7=${STAGE7:-1}
PROCS=${PROCS:-2}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
WORDS_CLIP_DIR=${WORDS_CLIP_DIR:-$RUN_DIR-clip-words}
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

# One stage at time shift 3 from the previous stage's EMA weights (FINAL_DIR) with the text encoder TEXT_DIR,
# LR cooled down linearly from step DECAY_START: OUT LR GIVEN_PROB STEPS MINUTES DECAY_START [more train_dit
# flags]. WARMUP warm-up steps; LAUNCH runs the script (python, or accelerate launch for DDP). Moves FINAL_DIR to OUT.
TEXT_DIR=$CLIP_DIR
WARMUP=50
LAUNCH=("$PY")
shift3_stage() {
  "${LAUNCH[@]}" training/train_dit.py \
    --model dim --init "$FINAL_DIR/pipeline" --dataset moving_shapes --text-encoder "$TEXT_DIR" \
    --output-dir "$1" --batch-size "$BATCH" --lr "$2" --warmup-steps "$WARMUP" --weight-decay 0 \
    --flow-shift "$SHIFT" --given-frames-prob "$3" --max-steps "$4" --max-minutes "$5" --lr-decay cooldown \
    --decay-start "$6" --checkpoint-every 250 --checkpoints-total-limit 2 --sample-every 500 --log-every 25 \
    --threads "$THREADS" --resume latest "${@:7}"
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
        if [[ "$STAGE6" == 1 ]]; then
          # Stage 6: a text encoder that tells direction words apart (the CLIP fine-tuned on filmstrips with the
          # bag-of-words loss), then three runs on it with mostly image-to-video clips (60 % given a prefix,
          # all or 85 % of those one frame); the first two replayed to the step where the original run's time
          # limit stopped it (--stop-at-step; the LR schedule still runs to --max-steps).
          if [[ ! -f "$WORDS_CLIP_DIR/metrics.json" ]]; then
            "$PY" training/train_clip.py --data moving_shapes --init "$CLIP_DIR" --word-loss 1 --max-steps 600 \
              --lr 3e-4 --warmup-steps 50 --threads "$THREADS" --output-dir "$WORDS_CLIP_DIR"
          fi
          TEXT_DIR=$WORDS_CLIP_DIR
          shift3_stage "$RUN_DIR-words1" 5e-4 0.6 1000 "$STAGE6_MINUTES" 500 --one-frame-share 1.0 \
            --stop-at-step 824
          WARMUP=25
          shift3_stage "$RUN_DIR-words1b" 3e-4 0.6 600 "$STAGE6_MINUTES" 100 --one-frame-share 1.0 \
            --stop-at-step 403
          # words 1c: a global batch of 16, as 2 DDP processes of 8 (PROCS=2) or one with 2 accumulated micro-batches
          ACCUM=2
          if [[ "$PROCS" -gt 1 ]]; then
            LAUNCH=("$(dirname "$PY")/accelerate" launch --config_file training/configs/ddp.yaml \
              --num_processes "$PROCS")
            ACCUM=1
          fi
          shift3_stage "$RUN_DIR-words1c" 3e-4 0.6 1300 "$STAGE6_MINUTES" 500 --one-frame-share 0.85 \
            --grad-accum "$ACCUM"
          if [[ "$STAGE7" == 1 ]]; then
            # Stage 7: layouts (the pipeline plans one per prompt and the model draws along it)
            shift3_stage "$RUN_DIR-layout" 3e-4 0.4 900 "$STAGE6_MINUTES" 500 --one-frame-share 0.5 \
              --grad-accum "$ACCUM" --init-config '{"layout_conditioning": true}' --dataset-args '{"layout": true}' \
              --layout-drop-prob 0.25 --eval-every 250
            LAYOUT=1
          fi
        fi
      fi
    fi
  fi
fi

LATEST=$(ls -d "$FINAL_DIR"/checkpoint-* | awk -F'checkpoint-' '{print $NF, $0}' | sort -n | tail -1 | cut -d' ' -f2-)
EXPORT_ARGS=()
if [[ "${LAYOUT:-0}" == 1 ]]; then
  "$PY" -c 'import json, sys; c = json.load(open(sys.argv[1])); c["layout_conditioning"] = True; print(json.dumps(c))' \
    "$CONFIG" > "$RUN_DIR-layout.config.json"
  CONFIG="$RUN_DIR-layout.config.json"
  EXPORT_ARGS=(--layout-planner moving_shapes)
fi
"$PY" training/export_pipeline.py --model dim --config "$CONFIG" --sample-size 32 --flow-shift "$SHIFT" \
  --checkpoint "$LATEST" --text-encoder "$TEXT_DIR" --out "$ASSET_DIR" --fp16 "${EXPORT_ARGS[@]}"
echo "shipped $ASSET_DIR from $LATEST"
