#!/usr/bin/env bash
# Recipe for the layout-caption experiment of 2026-12-01 (BENCHMARKS.md, issue 5; NOT the shipped model, which
# scores higher: training/recipes/shapes_sana.sh). Written to $ASSET_DIR (default runs/shapes-sana-layout/model).
#   0. assets/clip-shapes, the tiny CLIP, as in shapes_sana.sh (skipped when the folder exists).
#   1. SanaDiT.shapes_config + x-prediction ("prediction": "sample") + "cross_norm", trained with rectified flow
#      at time shift 2 on shapes scenes whose captions are layout captions 3 times in 4
#      (ShapesDataset(layout_share=0.75): "small red circle top left, large blue square bottom"), the short
#      captions otherwise; batch 32, AdamW 6e-4 after 100 warm-up steps, STAGE1 steps (1,500; ~55 min on one
#      core). The saved pipeline plans prompts (prompt_planner="shapes_layout").
#   2. The same model given a Fourier position embedding ("pos_embed": "sincos") and trained STAGE2 more
#      steps (1,300: constant 6e-4 after 50 warm-up steps, linear cooldown to 10 % from step 1,000); PRUNE
#      blocks pruned (default 0), stored in fp16.
# Neither stage follows the place words: the tiny CLIP's features for them are nearly identical (see
# BENCHMARKS.md), so a place-aware text encoder comes first. THREADS=1 lets it share the 2 cores with another
# job; each stage resumes from its run folder.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN_DIR=${RUN_DIR:-runs/shapes-sana-layout}
STAGE1=${STAGE1:-1500}
STAGE2=${STAGE2:-1300}
THREADS=${THREADS:-0}
CLIP_DIR=${CLIP_DIR:-assets/clip-shapes}
ASSET_DIR=${ASSET_DIR:-$RUN_DIR/model}

if [[ ! -d "$CLIP_DIR" ]]; then
  "$PY" training/train_clip.py --output-dir "$CLIP_DIR" --max-steps 1500 --batch-size 128 --warmup-steps 100
fi

CONFIG="$RUN_DIR.config.json"
mkdir -p "$(dirname "$CONFIG")"
"$PY" -c 'import json; from genmodels.sana import SanaDiT
print(json.dumps({**SanaDiT.shapes_config(), "prediction": "sample", "cross_norm": True}))' > "$CONFIG"

COMMON=(--dataset shapes --dataset-args '{"layout_share": 0.75}' --text-encoder "$CLIP_DIR" --batch-size 32
        --lr 6e-4 --weight-decay 0 --flow-shift 2 --log-every 25 --threads "$THREADS" --resume latest)

"$PY" training/train_dit.py --model sana --config "$CONFIG" --output-dir "$RUN_DIR/stage1" "${COMMON[@]}" \
  --warmup-steps 100 --max-steps "$STAGE1" --checkpoint-every 500 --checkpoints-total-limit 2

"$PY" training/train_dit.py --model sana --init "$RUN_DIR/stage1/pipeline" --init-config '{"pos_embed": "sincos"}' \
  --output-dir "$RUN_DIR/stage2" "${COMMON[@]}" --warmup-steps 50 --max-steps "$STAGE2" --lr-decay cooldown \
  --decay-start $((STAGE2 * 10 / 13)) --checkpoint-every 300 --checkpoints-total-limit 2

# SANA 1.5 depth pruning of the PRUNE least important blocks (0: keep all 8; it prints every block's
# importance) and fp16 storage; the pipeline keeps its prompt planner.
"$PY" training/prune_pipeline.py --model "$RUN_DIR/stage2/pipeline" --remove "${PRUNE:-0}" --out "$ASSET_DIR" --fp16
echo "shipped $ASSET_DIR"
