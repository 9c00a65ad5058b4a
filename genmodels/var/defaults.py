"""VAR sampling defaults (no imports, so the CLI's help and the app can read them without loading torch models).

Chosen for the shipped shapes model on 120 validation-split captions, never the evaluation set
(``benchmarks/var_sampling_sweep.py``; figures in BENCHMARKS.md): CFG 5 — ramped from 0 at the first scale to
5 at the last — no top-k, top-p 0.95.
"""

GUIDANCE = 5.0
TOP_K = 0  # off
TOP_P = 0.95  # 1 = off
