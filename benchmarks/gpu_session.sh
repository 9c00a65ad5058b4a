#!/usr/bin/env bash
# One GPU session (device tool): train the shipped piano-roll HDiT and time the operator core on CUDA.
#   run with carry [".whl", ".devcache"]: wheels for packages the GPU image lacks, and the piano-roll cache.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD
export LINGEN_CACHE=$PWD/.devcache
nvidia-smi -L
python3 -c "import torch, diffusers, pretty_midi; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

# 1. the shipped checkpoint: DEVICE_MINUTES of training at batch 64, EMA exported as a pipeline into $OUT
DEVICE_MINUTES=${DEVICE_MINUTES:-5} BATCH=${BATCH:-128} PY=python3 RUN_DIR=/tmp/run ASSET_DIR=$OUT/pipeline \
  EXTRA_ARGS="--checkpoint-every 100000 --lr 1e-3 --lr-scaling none ${TRAIN_ARGS:-}" timeout 420 \
  training/recipes/pianoroll_hdit.sh 2>&1 | tr '\r' '\n' | grep -v "it/s\]$" | tail -25
cp /tmp/run/metrics.jsonl /tmp/run/summary.json "$OUT"/ 2>/dev/null
last=$(ls /tmp/run/samples/*.png 2>/dev/null | tail -1); [ -n "$last" ] && cp "$last" "$OUT"/samples_last.png

# 2. operator core on CUDA (PyTorch paths vs SDPA); SKIP_BENCH=1 leaves it out
[ -n "${SKIP_BENCH:-}" ] || timeout 150 python3 -m kernels.bench --device cuda --quick --repeats 10 --budget 5 --json "$OUT"/kernels_cuda.json
ls -la "$OUT" "$OUT"/pipeline
