#!/usr/bin/env bash
# Recipe for the shipped assets/shapes-sana (run by `make assets-shapes`; ~15 + 25 + 35 min on one core, then
# ~75 min on two) and the other layout-caption SANA runs of 2026-12-01 (BENCHMARKS.md, issue 5, "Layout
# captions ...", "A place-aware text encoder ..." and "Longer training binds the attributes ..."). Runs in
# $RUN_DIR; the pipeline is written to $ASSET_DIR (default $RUN_DIR/model).
#   0. assets/clip-shapes, the tiny CLIP, as in shapes_sana.sh (skipped when the folder exists), then a
#      place-aware copy of it ($PLACE_CLIP): its text tower fine-tuned 600 steps with the bag-of-words loss on
#      scenes captioned by their layout captions half the time (image tower locked; ~15 min on one core).
#      Without it the generator ignores place words: the tiny CLIP gives "top left" and "bottom right" nearly
#      the same features.
#   1. SanaDiT.shapes_config + x-prediction ("prediction": "sample") + "cross_norm" + the Fourier position
#      embedding ("pos_embed": "sincos"), CROSS_ATTN cross-attention (crosswkv | softmax), trained from scratch
#      with rectified flow at time shift 2 on shapes scenes whose captions are layout captions 3 times in 4
#      (ShapesDataset(layout_share=0.75): "small red circle top left, large blue square bottom"), the short
#      captions otherwise; batch 32, AdamW 6e-4 after 100 warm-up steps, STAGE1 steps (1,000) with a linear
#      cooldown over the last quarter. The saved pipeline plans prompts (prompt_planner="shapes_layout").
#   2. STAGE2 more steps (1,400) from stage 1's EMA weights: 50 warm-up steps, cooldown from step DECAY2 (1,000).
#   3. STAGE3 more steps (3,000) from stage 2's EMA weights, data seed 3: 50 warm-up steps, cooldown from step
#      DECAY3 (2,250); ~75 min on 2 cores. STAGE3=0 stops after stage 2 (that model scored 0.371, this 0.667).
#   4. fp16 storage, all 8 blocks kept (PRUNE=N removes the N least important).
# The shipped model is CROSS_ATTN=softmax; CROSS_ATTN=crosswkv is its CrossWKV twin (run with STAGE2=1100
# DECAY2=800 STAGE3=1500 DECAY3=1100; evaluation 0.304 at 3,600 steps vs softmax's 0.375 at 2,400). THREADS=1
# lets the two share the 2 cores; each stage resumes from its run folder. The previous shipped model's recipe is
# shapes_sana.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
CROSS_ATTN=${CROSS_ATTN:-softmax}
RUN_DIR=${RUN_DIR:-runs/shapes-sana-layout-$CROSS_ATTN}
STAGE1=${STAGE1:-1000}
STAGE2=${STAGE2:-1400}
DECAY2=${DECAY2:-1000}
STAGE3=${STAGE3:-3000}
DECAY3=${DECAY3:-2250}
THREADS=${THREADS:-0}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
PLACE_CLIP=${PLACE_CLIP:-runs/clip-places}
ASSET_DIR=${ASSET_DIR:-$RUN_DIR/model}

if [[ ! -d "$CLIP_DIR" ]]; then
  "$PY" training/train_clip.py --output-dir "$CLIP_DIR" --max-steps 1500 --batch-size 128 --warmup-steps 100
fi
if [[ ! -f "$PLACE_CLIP/open_clip_model.safetensors" ]]; then
  "$PY" training/train_clip.py --data shapes --init "$CLIP_DIR" --word-loss 1 --layout-share 0.5 --max-steps 600 \
    --lr 3e-4 --warmup-steps 50 --threads "$THREADS" --output-dir "$PLACE_CLIP"
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" - "$CROSS_ATTN" > "$CONFIG" <<'PYEOF'
import json, sys
from genmodels.sana import SanaDiT
print(json.dumps({**SanaDiT.shapes_config(), "prediction": "sample", "cross_norm": True, "pos_embed": "sincos",
                  "cross_attn": sys.argv[1]}))
PYEOF

COMMON=(--dataset shapes --dataset-args '{"layout_share": 0.75}' --text-encoder "$PLACE_CLIP" --batch-size 32
        --lr 6e-4 --weight-decay 0 --flow-shift 2 --log-every 25 --threads "$THREADS" --resume latest
        --lr-decay cooldown)

"$PY" training/train_dit.py --model sana --config "$CONFIG" --output-dir "$RUN_DIR/stage1" "${COMMON[@]}" \
  --warmup-steps 100 --max-steps "$STAGE1" --decay-start $((STAGE1 * 3 / 4)) --checkpoint-every 250 \
  --checkpoints-total-limit 2

"$PY" training/train_dit.py --model sana --init "$RUN_DIR/stage1/pipeline" --output-dir "$RUN_DIR/stage2" \
  "${COMMON[@]}" --warmup-steps 50 --max-steps "$STAGE2" --decay-start "$DECAY2" \
  --checkpoint-every 200 --checkpoints-total-limit 2

FINAL="$RUN_DIR/stage2"
if (( STAGE3 > 0 )); then
  "$PY" training/train_dit.py --model sana --init "$RUN_DIR/stage2/pipeline" --output-dir "$RUN_DIR/stage3" \
    "${COMMON[@]}" --warmup-steps 50 --max-steps "$STAGE3" --decay-start "$DECAY3" --seed 3 \
    --checkpoint-every 250 --checkpoints-total-limit 2
  FINAL="$RUN_DIR/stage3"
fi

# fp16 storage (prune_pipeline prints every block's importance); the pipeline keeps its prompt planner.
"$PY" training/prune_pipeline.py --model "$FINAL/pipeline" --remove "${PRUNE:-0}" --out "$ASSET_DIR" --fp16
echo "wrote $ASSET_DIR"
