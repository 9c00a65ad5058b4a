"""VAR sampling defaults (no imports, so the CLI's help and the app can read them without loading torch models).

Chosen for the shipped shapes model on 120 validation-split captions, never the evaluation set
(``benchmarks/var_sampling_sweep.py``; figures in BENCHMARKS.md): CFG 4 — ramped from 0 at the first scale to
4 at the last — no top-k, top-p 0.95 (the 5,400-step model wanted CFG 5, the 10,000-step one wants 4).
"""

GUIDANCE = 4.0
TOP_K = 0  # off
TOP_P = 0.95  # 1 = off
