"""kernels.aot: every Triton kernel compiles for a real GPU target on this CPU, without spills, and fits an SM.

The compile runs in a subprocess: this pytest process imported triton under the interpreter
(``TRITON_INTERPRET=1``, see tests/conftest.py), and triton fixes that mode at import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.aot import TARGETS, Compiled, occupancy, problems

ROOT = Path(__file__).resolve().parents[2]
KERNELS = {"_kv_partial_kernel", "_q_state_kernel", "_causal_kernel", "_block_causal_kernel", "_chunk_kernel",
           "_recurrent_kernel", "_na2d_kernel"}


def _aot(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return subprocess.run([sys.executable, "-m", "kernels.aot", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _row(**kw) -> Compiled:
    base = dict(kernel="k", case="c", dtype="bf16", constants={}, num_warps=4, num_stages=3, shared=0, registers=64,
                spill_bytes=0, warps_per_sm=0, limited_by="", seconds=0.0)
    return Compiled(**{**base, **kw})


def test_occupancy_follows_the_cuda_rules():
    # 255 registers × 128 threads, allocated per warp in units of 256: 8,192 per warp → 2 blocks of 4 warps
    assert occupancy(90, 255, 16 * 1024, 4) == (8, "registers")
    # 64 registers: 2,048 per warp → 8 blocks of 4 warps; 24 registers: 21 blocks by registers, 16 by warps
    assert occupancy(90, 64, 0, 4) == (32, "registers")
    assert occupancy(90, 24, 0, 4) == (64, "warps")
    # 150 KiB of shared memory: one block per SM on an H100, none on an A100 (164 KiB minus 1 KiB reserved each)
    assert occupancy(90, 32, 150 * 1024, 4) == (4, "shared memory")
    assert occupancy(80, 32, 180 * 1024, 4) == (0, "shared memory")


def test_problems_name_spills_and_kernels_that_cannot_launch():
    limit = TARGETS[90]["smem_block"]
    rows = [_row(), _row(kernel="spilly", spill_bytes=96), _row(kernel="fat", shared=limit + 1)]
    found = problems(rows, 90)
    assert len(found) == 2
    assert "spilly" in found[0] and "96 bytes of register spills" in found[0]
    assert "fat" in found[1] and "shared memory" in found[1]
    assert problems([_row(shared=limit)], 90) == []


def test_refuses_to_run_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run([sys.executable, "-m", "kernels.aot", "--dtypes", "bf16", "--head-dims", "16"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "without TRITON_INTERPRET=1" in run.stderr


def test_every_kernel_compiles_for_sm90_without_spills(tmp_path):
    """bf16 at D = 64 (the shipped models' and the benchmark's shape), every autotune config the rules keep."""
    out = tmp_path / "aot.json"
    run = _aot("--arch", "90", "--dtypes", "bf16", "--head-dims", "64", "--json", str(out))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["kernel"] for r in rows} == KERNELS
    for r in rows:
        assert r["spill_bytes"] == 0 and r["shared"] <= TARGETS[90]["smem_block"] and r["warps_per_sm"] >= 4, r
    # the SANA split-state kernel keeps the normaliser out of the value tile: 64 wide, not 128
    sana = [r for r in rows if r["kernel"] == "_kv_partial_kernel" and r["constants"]["ONES"]]
    assert sana and all(r["constants"]["BV"] == 64 for r in sana)
    # on the GPU the split-state sums dot bf16 tiles as they are (exact products), not widened
    assert all(r["constants"]["NATIVE"] for r in rows if r["kernel"] in ("_kv_partial_kernel", "_block_causal_kernel"))


@pytest.mark.slow
def test_every_kernel_compiles_for_sm80_and_sm90_in_every_dtype_and_head_size(tmp_path):
    """fp32 / fp16 / bf16 × D = 32, 64, 128 on both targets: every kernel launchable and spill-free, except
    IEEE float32 dots with 128-wide keys (listed in BENCHMARKS.md), which must still launch."""
    for arch in (80, 90):
        out = tmp_path / f"aot{arch}.json"
        _aot("--arch", str(arch), "--json", str(out), timeout=1800)
        rows = json.loads(out.read_text())["rows"]
        assert {r["kernel"] for r in rows} == KERNELS
        for r in rows:
            assert r["shared"] <= TARGETS[arch]["smem_block"] and r["warps_per_sm"] > 0, r
            ieee_wide = r["dtype"] == "fp32" and r["constants"].get("PREC") == "ieee" and "D=128" in r["case"]
            assert r["spill_bytes"] == 0 or ieee_wide, r
