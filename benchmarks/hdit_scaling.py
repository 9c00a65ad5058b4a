"""HDiT forward time vs resolution against a same-width global-attention DiT, measured in one run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/hdit_scaling.py --json benchmarks/results/hdit_scaling.json

Both models use patch 4 and width 128 at every level (d_head 64). HDiT adds a neighborhood-attention level
(k = 7) per doubling of resolution, so its global level stays at ≤ 16×16 tokens, as in the paper; the DiT is
one flat stack of global softmax layers with the same number of layers. Batch 1, forward only (a sampling
step), median of a few runs; the log-log slope of time vs pixel count is fitted over 64²…512².
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from genmodels.hdit import HDiT  # noqa: E402
from genmodels.io import write_text_atomic  # noqa: E402
from kernels.bench import loglog_slope  # noqa: E402

WIDTH, PATCH, D_HEAD = 128, 4, 64


def hdit_config(side: int) -> dict:
    tokens = side // PATCH
    n_na = max(1, int(math.ceil(math.log2(max(tokens / 16, 1)))))
    na = {"type": "neighborhood", "d_head": D_HEAD, "kernel_size": 7}
    return dict(in_channels=3, out_channels=3, patch_size=PATCH, depths=[1] * n_na + [2],
                widths=[WIDTH] * (n_na + 1), self_attns=[na] * n_na + [{"type": "global", "d_head": D_HEAD}],
                mapping_width=128, mapping_depth=1)


def dit_config(side: int) -> dict:
    n_layers = sum(d * (1 if i == len(hdit_config(side)["depths"]) - 1 else 2)
                   for i, d in enumerate(hdit_config(side)["depths"]))
    return dict(in_channels=3, out_channels=3, patch_size=PATCH, depths=[n_layers], widths=[WIDTH],
                self_attns=[{"type": "global", "d_head": D_HEAD}], mapping_width=128, mapping_depth=1)


@torch.no_grad()
def time_forward(config: dict, side: int, repeats: int, budget: float) -> float:
    torch.manual_seed(0)
    model = HDiT(**config).eval()
    x, sigma = torch.randn(1, 3, side, side), torch.tensor([1.0])
    model(x, sigma)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x, sigma)
        times.append(time.perf_counter() - t0)
        if sum(times) > budget:
            break
    return statistics.median(times)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="*", default=[64, 128, 256, 512])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=30.0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    rows = []
    print(f"{'side':>6s} {'HDiT levels':>11s} {'HDiT s':>9s} {'DiT layers':>10s} {'DiT s':>9s} {'ratio':>7s}")
    for side in args.sides:
        hcfg, dcfg = hdit_config(side), dit_config(side)
        th = time_forward(hcfg, side, args.repeats, args.budget)
        td = time_forward(dcfg, side, args.repeats, args.budget)
        rows.append({"side": side, "hdit_s": th, "dit_s": td, "hdit_levels": len(hcfg["depths"]),
                     "dit_layers": dcfg["depths"][0]})
        print(f"{side:6d} {len(hcfg['depths']):11d} {th:9.4f} {dcfg['depths'][0]:10d} {td:9.4f} {td / th:7.1f}x")
    result = {
        "rows": rows, "threads": torch.get_num_threads(),
        "hdit_slope": loglog_slope([(r["side"] ** 2, r["hdit_s"]) for r in rows], 0, 1 << 40),
        "dit_slope": loglog_slope([(r["side"] ** 2, r["dit_s"]) for r in rows], 0, 1 << 40),
    }
    if result["hdit_slope"] is not None:  # needs two or more sides
        print(f"log-log slope of time vs pixels: HDiT {result['hdit_slope']:.3f}, "
              f"global DiT {result['dit_slope']:.3f}")
    if args.json:
        write_text_atomic(args.json, json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
