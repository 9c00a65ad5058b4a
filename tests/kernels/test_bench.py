"""The CPU benchmark's measuring helpers: interleaved rounds, the over-budget stop, and the slope fit."""

from __future__ import annotations

import math

import pytest
import torch

from kernels.bench import loglog_slope, measure_series


def test_loglog_slope_recovers_the_exponent_within_the_window():
    pts = [(t, 3e-6 * t**1.5) for t in (1024, 2048, 4096, 8192, 16384)]
    assert loglog_slope(pts, 1024, 16384) == pytest.approx(1.5)
    bent = pts + [(65536, 1.0)]  # outside the window: ignored
    assert loglog_slope(bent, 1024, 16384) == pytest.approx(1.5)
    assert loglog_slope(pts, 10**6, 10**7) is None


def test_measure_series_interleaves_rounds_and_stops_before_an_over_budget_size():
    order: list[int] = []

    def fn(i):
        def call():
            order.append(i)
            x = torch.ones(256 * (i + 1))
            return x.sum()
        return call

    rows = measure_series([fn(0), fn(1), fn(2)], torch.device("cpu"), repeats=3, budget=10.0, min_sample=0.0)
    assert [r["samples"] for r in rows] == [3, 3, 3] and all(r["calls"] == 1 for r in rows)
    # one warm-up each, in order, then three rounds that visit every size once (an untimed call, then the
    # timed one)
    assert order == [0, 1, 2] + [0, 0, 1, 1, 2, 2] * 3
    assert all(r["seconds"] > 0 and math.isfinite(r["peak_mib"]) for r in rows)

    order.clear()
    rows = measure_series([fn(0), fn(1), fn(2)], torch.device("cpu"), repeats=2, budget=10.0, min_sample=0.0,
                          stop=lambda first: len(order) >= 2)
    assert len(rows) == 2 and 2 not in order  # the third size is never called


def test_measure_series_batches_short_calls_and_caps_slow_ones_by_budget():
    import time

    def sleeper(seconds):
        return lambda: time.sleep(seconds)

    rows = measure_series([sleeper(0.001), sleeper(0.03)], torch.device("cpu"), repeats=5, budget=0.07,
                          min_sample=0.005)
    assert rows[0]["calls"] >= 2 and rows[0]["samples"] == 5  # 1 ms calls: several per sample, all rounds
    assert rows[1]["calls"] == 1 and rows[1]["samples"] == 2  # 30 ms × 5 rounds > 70 ms budget: 2 rounds
    assert rows[1]["seconds"] == pytest.approx(0.03, rel=0.5)


def test_cuda_targets_read_off_the_rows():
    """The GPU run's verdicts on issue 9's targets: each computed from the two measured sides, met or not."""
    from kernels.bench import cuda_targets

    rows = [
        {"op": "linear non-causal (SANA relu+norm)", "path": "triton", "T": 16384, "ms": 0.5, "x_floor": 3.9},
        {"op": "softmax SDPA", "path": "torch", "T": 16384, "ms": 9.0},
        {"op": "linear causal", "path": "triton", "T": 4096, "ms": 0.20},
        {"op": "linear causal", "path": "fla", "T": 4096, "ms": 0.10},
        {"op": "linear causal", "path": "triton", "T": 16384, "ms": 0.50},
        {"op": "linear causal", "path": "fla", "T": 16384, "ms": 0.45},
        {"op": "delta rule (RWKV-7)", "path": "triton", "T": 4096, "ms": 1.0},  # no fla row: no verdict
        {"op": "neighborhood 7x7", "path": "triton", "T": 256 * 256, "ms": 1.0},
        {"op": "neighborhood 7x7", "path": "torch", "T": 256 * 256, "ms": 13.0},
    ]
    got = {t["target"]: (t["measured"], t["met"]) for t in cuda_targets(rows)}
    assert got == {
        "non-causal at 16k ≥ 5× faster than flash SDPA": ("18.0×", True),
        "non-causal at 16k within 1.25× of the memory floor": ("3.90× the floor", False),
        "linear causal at 4096 within 1.3× of fla": ("2.00× fla's time", False),
        "linear causal at 16384 within 1.3× of fla": ("1.11× fla's time", True),
        "neighborhood 7×7 at 256² ≥ 3× the PyTorch path": ("13.0×", True),
    }
