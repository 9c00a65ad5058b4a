#!/usr/bin/env bash
# One GPU slot for the Triton kernels (issue 9), about 8 minutes on an H100 / H200:
#   1. the Triton tests on CUDA (every kernel against its naive reference, forward and backward);
#   2. python -m kernels.bench --device cuda at the issue's shape (bf16, B = 4, H = 16, D = 64): Triton vs the
#      PyTorch path vs SDPA (flash) vs flash-linear-attention, and the verdict on each target, into $OUT.
# Prepare here with `make gpu-wheels` (the machine has no network), then run it through the device tool with
# command "bash benchmarks/gpu_kernels.sh" and carry [".whl"].
set -uo pipefail
export PYTHONUNBUFFERED=1
# one wheel at a time, so a wheel this Python cannot take is skipped instead of failing the rest
for wheel in .whl/*.whl; do
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$wheel" 2>/dev/null \
    || echo "skipped $(basename "$wheel") (not for this Python)"
done
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi -L
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -c "import fla; print('fla', fla.__version__)" 2>&1 | tail -1
timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/kernels/test_triton.py 2>&1 | tail -5
timeout 330 python3 -m kernels.bench --device cuda --dtype bf16 --batch 4 --heads 16 --dim 64 \
  --json "$OUT"/kernels_triton_cuda.json 2>&1 | tee "$OUT"/kernels_triton_cuda.log | grep -v "^  "
