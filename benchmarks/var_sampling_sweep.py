"""Choose VAR's sampling settings on validation-split captions (never the evaluation set):

    python benchmarks/var_sampling_sweep.py --model runs/shapes-var-softmax/pipeline [--per-category 10] \\
        [--cfg 1 3 6] [--top-k 0 5] [--top-p 0.6 0.9 1.0] [--json benchmarks/results/var_sampling_sweep.json]

Every combination of CFG scale, top-k and top-p draws one image per caption (each with its caption's own seed)
and is scored by the oracle; the table is sorted by the overall score and the best setting is printed, to be
used for ``benchmarks/var_eval.py`` on the evaluation set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from benchmarks.var_eval import evaluate_t2i, load_var_pipeline  # noqa: E402
from genmodels.eval.shapes_oracle import validation_items  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--per-category", type=int, default=10)
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 6.0])
    p.add_argument("--top-k", type=int, nargs="+", default=[0, 5])
    p.add_argument("--top-p", type=float, nargs="+", default=[0.6, 0.9, 1.0])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_var_pipeline(args.model)
    items = validation_items(args.per_category)
    rows = []
    for cfg, top_k, top_p in itertools.product(args.cfg, args.top_k, args.top_p):
        r = evaluate_t2i(pipe, items, cfg=cfg, top_k=top_k, top_p=top_p, desc=f"cfg {cfg} k {top_k} p {top_p}")
        rows.append({"cfg": cfg, "top_k": top_k, "top_p": top_p, "overall": r["overall"],
                     "per_category": r["per_category"], "seconds": r["seconds"]})
    rows.sort(key=lambda r: -r["overall"])
    print(f"{'cfg':>5s} {'top_k':>5s} {'top_p':>5s} {'overall':>8s}")
    for r in rows:
        print(f"{r['cfg']:5g} {r['top_k']:5d} {r['top_p']:5g} {r['overall']:8.3f}")
    print(f"best on {len(items)} validation captions: cfg {rows[0]['cfg']:g}, top-k {rows[0]['top_k']}, "
          f"top-p {rows[0]['top_p']:g} ({rows[0]['overall']:.3f})")
    if args.json:
        write_text_atomic(args.json, json.dumps({"model": args.model, "captions": len(items), "rows": rows},
                                                indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
