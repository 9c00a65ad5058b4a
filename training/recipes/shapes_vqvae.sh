#!/usr/bin/env bash
# Recipe for the shipped VAR tokenizer (run by `make assets-vqvae`): the multi-scale residual VQ-VAE
# (MultiScaleVQVAE.shapes_config: 64×64 shapes-world images, f = 8, scales 1,2,3,4,6,8 = 130 tokens, 512 shared
# codes of width 32), training/train_vqvae.py, 1,200 steps at batch 32 (~17 min on 2 cores), resumable from
# runs/shapes-vqvae.ckpt. Copied to $VQVAE_DIR (default assets/shapes-vqvae) with its metrics.json
# (reconstruction per scale prefix, codebook usage per scale).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-0}
VQVAE_DIR=${VQVAE_DIR:-assets/shapes-vqvae}
RUN=${RUN:-runs/shapes-vqvae}
"$PY" training/train_vqvae.py --output-dir "$RUN" --config shapes --max-steps 1200 --batch-size 32 \
  --lr 1e-3 --threads "$THREADS" --resume
"$PY" - "$RUN" "$VQVAE_DIR" <<'PYEOF'
import shutil, sys
from genmodels.io import replace_dir_atomic
from genmodels.var.vqvae import MultiScaleVQVAE
vae = MultiScaleVQVAE.from_pretrained(sys.argv[1], use_safetensors=True)
with replace_dir_atomic(sys.argv[2]) as tmp:
    vae.save_pretrained(tmp, safe_serialization=True)
    shutil.copy(f"{sys.argv[1]}/metrics.json", tmp / "metrics.json")
PYEOF

echo "shipped $VQVAE_DIR"
