"""Benchmark of the operator core: time and peak memory vs sequence length, against softmax attention.

    python -m kernels.bench                 # CPU, B=1 H=8 D=64, T = 1k … 64k
    python -m kernels.bench --quick         # fewer lengths, for a smoke run
    python -m kernels.bench --json out.json
    python -m kernels.bench --device cuda --dtype bf16 --batch 4 --heads 16   # GPU: Triton vs torch vs SDPA

For every op it prints the median wall time of several rounds and the peak resident memory above the
baseline, next to ``scaled_dot_product_attention`` measured in the same run while one call stays under
``--sdpa-budget`` seconds, then fits the log-log slope of time vs T between 4k and 64k tokens (≈ 1 for a
linear-time op, ≈ 2 for softmax attention). Neighborhood attention is measured per pixel over square maps.
The sizes of one op are timed in interleaved rounds (:func:`measure_series`), so a slow spell of a shared
machine does not bend the slope.

With ``--device cuda`` it instead times every op's Triton and PyTorch paths and ``scaled_dot_product_attention``
with ``triton.testing.do_bench`` (forward only), and reports achieved TFLOP/s and GB/s next to two ceilings
measured in the same run: a bf16 matmul and a device-to-device copy. FLOPs and bytes are the algorithmic
counts of :func:`cost` (minimum traffic: every input read once, the output written once, in the input dtype),
so the percentages compare implementations, not hardware counters. flash-linear-attention's
``chunk_linear_attn`` / ``chunk_simple_gla`` / ``chunk_rwkv7`` are added when ``import fla`` works.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kernels import delta_rule, dispatch, linear_attention, native, neighborhood_attention_2d, use_backend


class PeakRSS:
    """Peak resident set size above the value at entry, sampled every millisecond from /proc (Linux)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return 0

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss() - self.base)
            time.sleep(0.001)

    def __enter__(self) -> PeakRSS:
        self.base = self.rss()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss() - self.base)


def measure_series(fns: list[Callable[[], object]], device: torch.device, repeats: int, budget: float,
                   min_sample: float = 0.05, stop: Callable[[float], bool] | None = None) -> list[dict]:
    """Median seconds per call and peak MiB for each of ``fns`` (one op at growing sizes), measured in
    interleaved rounds.

    Each function is warmed up once, in order; ``stop(first_call_seconds)`` may end the series there (the
    sizes after it are not measured). Then ``repeats`` rounds each time every function once, so a slow spell
    of a shared machine falls on all sizes alike instead of on whichever size was being measured, and the
    fitted slope stays put. Each sample of a call shorter than a second starts with one untimed call, so it is
    timed warm (caches and allocator as in a loop of same-size calls), not cold after a larger size's call; a
    cold 64² neighborhood-attention call right after a 512² one took twice its warm time. A sample of a call
    shorter than ``min_sample`` seconds times enough back-to-back calls to last that long. A function whose
    rounds would take more than ``budget`` seconds gets fewer."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm = []
    for fn in fns:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            fn()
            sync()
            first = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - base) if device.type == "cuda" else mem.peak
        warm.append((first, peak))
        if stop is not None and stop(first):
            break
    calls = [max(1, math.ceil(min_sample / max(first, 1e-9))) for first, _ in warm]
    rounds = [repeats if first * repeats < budget else max(1, int(budget / max(first, 1e-9))) for first, _ in warm]
    times: list[list[float]] = [[] for _ in warm]
    for r in range(max(rounds, default=0)):
        for i, fn in enumerate(fns[:len(warm)]):
            if r >= rounds[i]:
                continue
            if warm[i][0] < 1.0:
                fn()
                sync()
            t0 = time.perf_counter()
            for _ in range(calls[i]):
                fn()
            sync()
            times[i].append((time.perf_counter() - t0) / calls[i])
    return [{"seconds": statistics.median(ts), "peak_mib": peak / 2**20, "samples": len(ts), "calls": n}
            for ts, (_, peak), n in zip(times, warm, calls)]


def measure(fn: Callable[[], object], device: torch.device, repeats: int, budget: float) -> dict:
    """One function's median seconds and peak MiB, measured as :func:`measure_series` measures a size."""
    return measure_series([fn], device, repeats, budget)[0]


def loglog_slope(points: list[tuple[int, float]], lo: int, hi: int) -> float | None:
    pts = [(math.log(t), math.log(s)) for t, s in points if lo <= t <= hi and s > 0]
    if len(pts) < 2:
        return None
    mx = statistics.fmean(p[0] for p in pts)
    my = statistics.fmean(p[1] for p in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)


def sequence_ops(b: int, h: int, d: int, device, dtype) -> dict[str, Callable[[int], Callable[[], object]]]:
    def qkv(t):
        g = torch.Generator(device="cpu").manual_seed(t)
        return [torch.randn(b, h, t, d, generator=g).to(device, dtype) for _ in range(3)]

    def la(**kw):
        def make(t):
            q, k, v = qkv(t)
            return lambda: linear_attention(q, k, v, **kw)
        return make

    def decayed(t):
        q, k, v = qkv(t)
        g = -torch.rand(b, h, t, device=device) * 0.1
        return lambda: linear_attention(q, k, v, causal=True, log_decay=g)

    def blocks(t):
        q, k, v = qkv(t)
        # VAR-like geometric scale schedule: a few small blocks, then large ones
        sizes, rest, s = [], t, 1
        while rest > 0:
            sizes.append(min(s, rest))
            rest -= sizes[-1]
            s *= 4
        return lambda: linear_attention(q, k, v, block_sizes=sizes)

    def delta(t, backend=None):
        q, k, v = qkv(t)
        kappa = F.normalize(torch.randn(b, h, t, d, device=device), dim=-1).to(dtype)
        log_w = (-0.6 * torch.rand(b, h, t, d, device=device)).to(dtype)
        k_small, a, bb = k * 0.1, -kappa, kappa * 0.5  # made once: the call times the op alone

        def call():
            with use_backend(backend) if backend else contextlib.nullcontext():
                return delta_rule(q, log_w, k_small, v, a, bb)
        return call

    def sdpa(t):
        q, k, v = qkv(t)
        return lambda: F.scaled_dot_product_attention(q, k, v)

    return {
        "linear (non-causal, SANA relu+norm)": la(feature_map="relu", normalize=True),
        "linear causal chunked": la(causal=True),
        "linear causal + per-head decay (SSD)": decayed,
        "linear block-causal (VAR scales)": blocks,
        "delta rule (RWKV-7)": delta,
        "delta rule, chunked torch path": lambda t: delta(t, "torch"),
        "softmax attention (SDPA)": sdpa,
    }


def run(args) -> dict:
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    results: dict = {"device": str(device), "threads": torch.get_num_threads(), "dtype": args.dtype,
                     "shape": f"B={args.batch} H={args.heads} D={args.dim}", "ops": {}, "checks": {}}
    lengths = [1024, 4096, 16384, 65536] if args.quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536]
    ops = sequence_ops(args.batch, args.heads, args.dim, device, dtype)
    print(f"# kernels.bench on {device} ({results['threads']} threads), {results['shape']}, {args.dtype}")
    print(f"# delta rule default backend: {dispatch.select('delta_rule', device).__name__} "
          f"(native: {native.status('delta_rule')})")
    print(f"{'op':40s} {'T':>7s} {'median s':>10s} {'peak MiB':>9s}")
    for name, make in ops.items():
        # SDPA is quadratic: stop before a call would take more than --sdpa-budget seconds
        stop = (lambda first: first * 4 > args.sdpa_budget) if name.startswith("softmax") else None
        measured = measure_series([make(t) for t in lengths], device, args.repeats, args.budget,
                                  args.min_sample, stop)
        rows = [{"T": t, **r} for t, r in zip(lengths, measured)]
        for r in rows:
            print(f"{name:40s} {r['T']:7d} {r['seconds']:10.4f} {r['peak_mib']:9.1f}")
        for t in lengths[len(rows):]:
            print(f"{name:40s} {t:7d} {'skipped (over budget)':>20s}")
        slope = loglog_slope([(r["T"], r["seconds"]) for r in rows], 4096, 65536)
        results["ops"][name] = {"rows": rows, "slope_4k_64k": slope}
        print(f"{name:40s} log-log slope 4k..64k: {slope if slope is None else round(slope, 3)}")

    # neighborhood attention: time per pixel over square maps
    sides = [64, 128, 256, 512] if not args.quick else [64, 256]

    def na_call(side):
        g = torch.Generator().manual_seed(side)
        q, k, v = (torch.randn(args.batch, args.heads, side, side, args.dim, generator=g).to(device, dtype)
                   for _ in range(3))
        return lambda: neighborhood_attention_2d(q, k, v, 7)

    na_rows = [{"side": side, **r, "us_per_pixel": r["seconds"] / side**2 * 1e6}
               for side, r in zip(sides, measure_series([na_call(s) for s in sides], device, args.repeats,
                                                        args.budget, args.min_sample))]
    for r in na_rows:
        print(f"{'neighborhood attention 7x7':40s} {r['side']:4d}^2 {r['seconds']:10.4f} {r['peak_mib']:9.1f}"
              f"  {r['us_per_pixel']:.3f} us/pixel")
    per_px = [r["us_per_pixel"] for r in na_rows]
    results["ops"]["neighborhood attention 7x7"] = {
        "rows": na_rows,
        "slope_pixels": loglog_slope([(r["side"] ** 2, r["seconds"]) for r in na_rows], 0, 1 << 40),
        "per_pixel_spread": max(per_px) / statistics.median(per_px) - 1,
    }

    # delta rule: the CPU default (the native kernel when it builds) and the chunked path vs the step loop, T = 1024
    results["delta_rule_default_backend"] = dispatch.select("delta_rule", device).__name__
    loop = measure(ops["delta rule (RWKV-7)"](1024, "naive"), device, 1, args.budget)["seconds"]
    for label, backend in (("delta rule speed-up vs step loop @1k", None),
                           ("delta rule chunked torch speed-up vs step loop @1k", "torch")):
        fast = measure(ops["delta rule (RWKV-7)"](1024, backend), device, args.repeats, args.budget)["seconds"]
        results["checks"][label] = loop / fast

    def at(name, t):
        return next((r["seconds"] for r in results["ops"][name]["rows"] if r["T"] == t), None)

    sdpa16 = at("softmax attention (SDPA)", 16384)
    nc16 = at("linear (non-causal, SANA relu+norm)", 16384)
    c16 = at("linear causal chunked", 16384)
    if sdpa16 and nc16:
        results["checks"]["non-causal speed-up vs SDPA @16k"] = sdpa16 / nc16
    if c16 and nc16:
        results["checks"]["causal / non-causal time @16k"] = c16 / nc16
    print("\n# summary")
    for name, op in results["ops"].items():
        slope = op.get("slope_4k_64k", op.get("slope_pixels"))
        print(f"{name:40s} slope {slope:.3f}" if slope is not None else f"{name:40s} slope n/a")
    spread = results["ops"]["neighborhood attention 7x7"]["per_pixel_spread"]
    print(f"{'NA per-pixel spread (max / median - 1)':40s} {spread:+.1%}")
    for name, value in results["checks"].items():
        print(f"{name:40s} {value:.2f}")
    return results


# ----------------------------------------------------------------------------------------------------------
# GPU: Triton vs torch path vs SDPA (and fla when installed), against measured ceilings


def ceilings() -> dict:
    """Measured peaks of this GPU: a 8192³ bf16 matmul (TFLOP/s) and a 1 GiB device copy (GB/s, read + write)."""
    from triton.testing import do_bench

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = do_bench(lambda: a @ a, warmup=25, rep=200)
    src = torch.empty(1 << 28, device="cuda", dtype=torch.float32)
    dst = torch.empty_like(src)
    ms_copy = do_bench(lambda: dst.copy_(src), warmup=25, rep=200)
    return {"matmul_tflops": 2 * 8192**3 / ms / 1e9, "copy_gbps": 2 * src.numel() * 4 / ms_copy / 1e6}


def cost(op: str, b: int, h: int, t: int, d: int, itemsize: int, chunk: int = 64) -> tuple[float, float]:
    """(FLOPs, bytes) of one forward call: algorithmic counts for [B, H, T, D] inputs with D = K = V."""
    bht = b * h * t
    io = {"sdpa": 4, "delta": 7}.get(op, 4) * bht * d * itemsize  # inputs read once + output written once
    flops = {
        "non-causal": 4 * bht * d * d,  # Kᵀ V and Q S
        "causal": 4 * bht * d * d + 2 * bht * chunk * d,  # state read/update + masked C×C products (half kept)
        "block": 4 * bht * d * d,
        "delta": 8 * bht * d * d,  # removal read-out, decay, two rank-1 updates, output read-out
        "sdpa": 4 * bht * t * d,
        "sdpa-causal": 2 * bht * t * d,
    }[op]
    return float(flops), float(io)


def _fla_ops():
    """fla's chunked kernels in our [B, H, T, D] convention, or {} when fla is not importable."""
    try:
        from fla.ops.linear_attn import chunk_linear_attn
        from fla.ops.rwkv7 import chunk_rwkv7
        from fla.ops.simple_gla import chunk_simple_gla
    except Exception:
        return {}

    def t(x):  # fla ≥ 0.5 takes [B, T, H, D]
        return x.transpose(1, 2).contiguous()

    return {
        "causal": lambda q, k, v: chunk_linear_attn(t(q), t(k), t(v), scale=1.0, normalize=False),
        "causal-decay": lambda q, k, v, g: chunk_simple_gla(t(q), t(k), t(v), g=g.transpose(1, 2).contiguous(),
                                                            scale=1.0),
        "delta": lambda r, w, k, v, a, b: chunk_rwkv7(t(r), t(w), t(k), t(v), t(a), t(b), scale=1.0),
    }


def run_cuda(args) -> dict:
    import triton
    from triton.testing import do_bench

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    b, h, d = args.batch, args.heads, args.dim
    peak = ceilings()
    results = {"device": torch.cuda.get_device_name(), "dtype": args.dtype, "shape": f"B={b} H={h} D={d}",
               "triton": triton.__version__, "torch": torch.__version__, "ceilings": peak, "rows": []}
    print(f"# kernels.bench on {results['device']}, {results['shape']}, {args.dtype}, triton {triton.__version__}")
    print(f"# ceilings: bf16 matmul {peak['matmul_tflops']:.0f} TFLOP/s, device copy {peak['copy_gbps']:.0f} GB/s")
    print(f"{'op':34s} {'path':7s} {'T':>6s} {'ms':>9s} {'TFLOP/s':>8s} {'%mm':>5s} {'GB/s':>7s} {'%copy':>6s} "
          f"{'×floor':>6s}")
    fla = _fla_ops()
    item = torch.finfo(dtype).bits // 8
    lengths = [1024, 4096, 16384] if args.quick else [1024, 4096, 16384, 65536]

    def report(name, path, t, fn, kind):
        try:
            ms = do_bench(fn, warmup=10, rep=args.rep_ms)
        except Exception as exc:  # a path that fails (fla API drift, out of memory) is reported, not fatal
            print(f"{name:34s} {path:7s} {t:6d} failed: {type(exc).__name__}: {str(exc)[:80]}")
            return
        flops, io = cost(kind, b, h, t, d, item)
        tf, gb = flops / ms / 1e9, io / ms / 1e6
        floor = peak["copy_gbps"] / gb  # time over the memory-bandwidth floor (minimum traffic at copy speed)
        results["rows"].append({"op": name, "path": path, "T": t, "ms": ms, "tflops": tf, "gbps": gb,
                                "x_floor": floor})
        print(f"{name:34s} {path:7s} {t:6d} {ms:9.3f} {tf:8.2f} {tf / peak['matmul_tflops']:5.1%} {gb:7.0f} "
              f"{gb / peak['copy_gbps']:6.1%} {floor:6.2f}")

    def backends(name, t, make, kind, fla_fn=None):
        for path in ("triton", "torch"):
            def call(path=path):
                with use_backend(path):
                    return make()
            report(name, path, t, call, kind)
        if fla_fn is not None:
            report(name, "fla", t, fla_fn, kind)

    def one_length(t):
        g = torch.Generator(device="cuda").manual_seed(t)
        q, k, v = (torch.randn(b, h, t, d, device="cuda", generator=g).to(dtype) for _ in range(3))
        decay = -torch.rand(b, h, t, device="cuda", generator=g) * 0.1
        kappa = F.normalize(torch.randn(b, h, t, d, device="cuda", generator=g), dim=-1).to(dtype)
        log_w = (-0.6 * torch.rand(b, h, t, d, device="cuda", generator=g)).to(dtype)
        k_small, a, bb = k * 0.1, -kappa, kappa * 0.5
        sizes, rest, s = [], t, 1
        while rest > 0:
            sizes.append(min(s, rest))
            rest -= sizes[-1]
            s *= 4
        backends("linear non-causal (SANA relu+norm)", t,
                 lambda: linear_attention(q, k, v, feature_map="relu", normalize=True), "non-causal")
        backends("linear causal", t, lambda: linear_attention(q, k, v, causal=True), "causal",
                 (lambda: fla["causal"](q, k, v)) if "causal" in fla else None)
        backends("linear causal + per-head decay", t, lambda: linear_attention(q, k, v, causal=True, log_decay=decay),
                 "causal", (lambda: fla["causal-decay"](q, k, v, decay)) if "causal-decay" in fla else None)
        backends("linear block-causal (VAR)", t, lambda: linear_attention(q, k, v, block_sizes=sizes), "block")
        if t <= args.delta_max_t:
            backends("delta rule (RWKV-7)", t, lambda: delta_rule(q, log_w, k_small, v, a, bb), "delta",
                     (lambda: fla["delta"](q, log_w, k_small, v, a, bb)) if "delta" in fla else None)
        report("softmax SDPA", "torch", t, lambda: F.scaled_dot_product_attention(q, k, v), "sdpa")
        report("softmax SDPA causal", "torch", t, lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
               "sdpa-causal")

    for t in lengths:
        one_length(t)
    for side in [64, 128] if args.quick else [64, 128, 256]:
        q, k, v = (torch.randn(b, h, side, side, d, device="cuda").to(dtype) for _ in range(3))
        for path in ("triton", "torch"):
            def call(path=path, q=q, k=k, v=v):
                with use_backend(path):
                    return neighborhood_attention_2d(q, k, v, 7)
            try:
                ms = do_bench(call, warmup=10, rep=args.rep_ms)
            except Exception as exc:
                print(f"{'neighborhood 7x7':34s} {path:7s} {side:4d}^2 failed: {type(exc).__name__}")
                continue
            px = b * h * side * side
            tf, gb = 4 * px * 49 * d / ms / 1e9, 4 * px * d * item / ms / 1e6
            results["rows"].append({"op": "neighborhood 7x7", "path": path, "T": side * side, "side": side, "ms": ms,
                                    "tflops": tf, "gbps": gb})
            print(f"{'neighborhood 7x7':34s} {path:7s} {side:4d}^2 {ms:7.3f} {tf:8.2f} "
                  f"{tf / peak['matmul_tflops']:5.1%} {gb:7.0f} {gb / peak['copy_gbps']:6.1%}")
    results["targets"] = cuda_targets(results["rows"])
    print("# issue 9's targets (measured in this run):")
    for line in results["targets"]:
        print(f"#   {line['target']}: {line['measured']} {'✔' if line['met'] else '✘'}")
    return results


def cuda_targets(rows: list[dict]) -> list[dict]:
    """Issue 9's GPU targets read off one run's rows (each only where both sides were measured)."""
    ms = {(r["op"], r["path"], r["T"]): r["ms"] for r in rows}
    floor = {(r["op"], r["path"], r["T"]): r.get("x_floor") for r in rows}
    out = []

    def add(target, measured, met):
        out.append({"target": target, "measured": measured, "met": bool(met)})

    sana = ("linear non-causal (SANA relu+norm)", "triton", 16384)
    if sana in ms and ("softmax SDPA", "torch", 16384) in ms:
        ratio = ms[("softmax SDPA", "torch", 16384)] / ms[sana]
        add("non-causal at 16k ≥ 5× faster than flash SDPA", f"{ratio:.1f}×", ratio >= 5)
        add("non-causal at 16k within 1.25× of the memory floor", f"{floor[sana]:.2f}× the floor", floor[sana] <= 1.25)
    for op, bound in (("linear causal", 1.3), ("linear causal + per-head decay", 1.3), ("delta rule (RWKV-7)", 1.5)):
        for t in sorted({key[2] for key in ms if key[0] == op and 4096 <= key[2] <= 32768}):
            if (op, "triton", t) in ms and (op, "fla", t) in ms:
                ratio = ms[(op, "triton", t)] / ms[(op, "fla", t)]
                add(f"{op} at {t} within {bound}× of fla", f"{ratio:.2f}× fla's time", ratio <= bound)
    na = [r["T"] for r in rows if r["op"] == "neighborhood 7x7"]
    for t in sorted(set(na)):
        if ("neighborhood 7x7", "triton", t) in ms and ("neighborhood 7x7", "torch", t) in ms:
            ratio = ms[("neighborhood 7x7", "torch", t)] / ms[("neighborhood 7x7", "triton", t)]
            side = int(math.isqrt(t))
            add(f"neighborhood 7×7 at {side}² ≥ 3× the PyTorch path", f"{ratio:.1f}×", ratio >= 3)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget", type=float, default=20.0, help="seconds of repeats per measurement")
    p.add_argument("--min-sample", type=float, default=0.05,
                   help="a timing sample of a shorter call repeats it back to back for this many seconds")
    p.add_argument("--sdpa-budget", type=float, default=30.0, help="stop SDPA when one call would exceed this")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--rep-ms", type=int, default=100, help="(cuda) do_bench repetition time per measurement")
    p.add_argument("--delta-max-t", type=int, default=16384, help="(cuda) longest T for the delta rule")
    args = p.parse_args(argv)
    results = run_cuda(args) if args.device.startswith("cuda") else run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
