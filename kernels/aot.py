"""Compile every Triton kernel for a real GPU target on a machine without one, and report its resources.

The interpreter (``TRITON_INTERPRET=1``) checks what the kernels compute, not whether they compile: an op the
interpreter simulates in numpy can still fail in Triton's GPU lowering or in ``ptxas``, or need more shared
memory than an SM has. This module runs each backend's real host code (the same launch arguments, tile sizes
and autotune configs a GPU run would use) on CPU tensors with a stand-in driver that reports the chosen target
(``sm_80`` A100, ``sm_90`` H100 / H200) and compiles instead of launching; every autotune config is compiled.
``ptxas -v`` (bundled with triton) then gives each kernel's registers and spills; with the shared memory from
Triton's metadata these give the occupancy the kernel can reach (resident warps per SM). Nothing runs, so
nothing is timed: speed still needs ``python -m kernels.bench --device cuda``.

    python -m kernels.aot --arch 90 [--dtypes bf16 fp16 fp32] [--head-dims 32 64 128] [--json out.json]

Exits non-zero when a kernel fails to compile, spills registers, or needs more shared memory than the target
has per block. Must run in a process where triton was imported in compiled mode (not under the interpreter).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch

# Per-SM limits (CUDA occupancy calculator): registers, shared memory per SM and per block (opt-in),
# resident warps, resident blocks. The register file is allocated per warp in units of 256.
TARGETS = {
    80: {"name": "A100 (sm_80)", "regs": 65536, "smem_sm": 167936, "smem_block": 166912, "warps": 64, "blocks": 32},
    90: {"name": "H100 / H200 (sm_90a)", "regs": 65536, "smem_sm": 233472, "smem_block": 232448, "warps": 64,
         "blocks": 32},
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Compiled:
    kernel: str
    case: str
    dtype: str
    constants: dict
    num_warps: int
    num_stages: int
    shared: int
    registers: int
    spill_bytes: int
    warps_per_sm: int
    limited_by: str
    seconds: float


def _fake_driver(arch: int):
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase

    class CompileOnlyDriver(DriverBase):
        """Reports ``GPUTarget('cuda', arch, 32)``; anything that would touch a device fails loudly."""

        target = GPUTarget("cuda", arch, 32)

        @classmethod
        def is_active(cls):
            return False

        def map_python_to_cpp_type(self, ty):
            return ty

        def get_current_target(self):
            return self.target

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_benchmarker(self):
            raise RuntimeError("compile-only driver: nothing can be timed")

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

    return CompileOnlyDriver()


@contextlib.contextmanager
def compile_only(arch: int) -> Iterator[list]:
    """Inside the block, launching a Triton kernel compiles it for ``sm_<arch>`` and returns without running it.

    Yields the list that receives ``(jit_function, keyword_arguments, compiled_kernel, seconds)`` per compile
    (autotuned kernels: one entry per config). Outputs of the "launched" kernels are left unwritten."""
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError("kernels.aot compiles for a GPU target: run it without TRITON_INTERPRET=1")
    import triton.language as tl
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.driver import driver
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    if isinstance(tl.zeros, InterpretedFunction):
        raise RuntimeError("triton was imported under the interpreter in this process; run kernels.aot in a "
                           "fresh process without TRITON_INTERPRET=1")

    from .delta_rule import triton as dr
    from .linear_attention import triton as la
    from .neighborhood import triton as na

    records: list = []
    jit_run, tuner_run = JITFunction.run, Autotuner.run

    def compile_run(self, *args, grid, warmup, **kwargs):
        start = time.perf_counter()
        kernel = jit_run(self, *args, grid=grid, warmup=True, **kwargs)
        records.append((self, kwargs, kernel, time.perf_counter() - start))
        return kernel

    def compile_every_config(self, *args, warmup=False, **kwargs):
        return self.warmup(*args, **kwargs)

    modules = (la, dr, na)
    checks = [m.check_launchable for m in modules]
    previous = driver._active  # None on a machine without a GPU (reset_active would fail there)
    driver.set_active(_fake_driver(arch))
    JITFunction.run, Autotuner.run = compile_run, compile_every_config
    for m in modules:
        m.check_launchable = lambda *tensors: None
    caches = _jit_functions(modules)
    for fn in caches:  # a binder made for another target (or a real device) must not be reused
        fn.device_caches.clear()
    try:
        yield records
    finally:
        JITFunction.run, Autotuner.run = jit_run, tuner_run
        for m, check in zip(modules, checks):
            m.check_launchable = check
        for fn in caches:
            fn.device_caches.clear()
        driver._active = previous


def _jit_functions(modules) -> list:
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    found = []
    for m in modules:
        for value in vars(m).values():
            fn = value.fn if isinstance(value, Autotuner) else value
            if isinstance(fn, JITFunction):
                found.append(fn)
    return found


def cases(dtype: torch.dtype, head_dim: int) -> dict[str, Callable[[], object]]:
    """Every launch shape of the Triton backends for one input dtype and head size (tiny CPU tensors: the
    kernels only see strides, dtypes and constexprs, which do not depend on the sequence length)."""
    from .delta_rule.triton import RECURRENT_MAX, delta_rule_triton
    from .linear_attention.triton import linear_attention_relu_normalized_triton, linear_attention_triton
    from .neighborhood.triton import neighborhood_attention_triton

    b, h, t, d = 1, 2, 128, head_dim

    def x(*shape):
        return torch.randn(*shape).to(dtype)

    q, k, v = x(b, h, t, d), x(b, h, t, d), x(b, h, t, d)
    s0 = torch.zeros(b, h, d, d)
    g_head = -torch.rand(b, h, t)
    g_key = -torch.rand(b, h, t, d)

    def la(**kw):
        opts = {"causal": False, "block_sizes": None, "log_decay": None, "initial_state": None, **kw}
        return lambda: linear_attention_triton(q, k, v, **opts)

    found = {
        "linear non-causal": la(),
        "linear non-causal, SANA ReLU + normaliser": lambda: linear_attention_relu_normalized_triton(
            q, k, v, eps=1e-6, initial_state=None),
        "linear causal": la(causal=True),
        "linear causal, initial state": la(causal=True, initial_state=s0),
        "linear causal, per-head decay": la(causal=True, log_decay=g_head),
        "linear causal, per-key decay": la(causal=True, log_decay=g_key),
        "linear block-causal": la(block_sizes=[1, 4, 16, 43, 64]),
    }
    for name, steps in (("delta rule (chunked)", t), ("delta rule (fused recurrent)", RECURRENT_MAX)):
        dr = [x(b, h, steps, d), -torch.rand(b, h, steps, d).to(dtype), *(x(b, h, steps, d) for _ in range(4))]
        found[name] = lambda dr=dr: delta_rule_triton(*dr, initial_state=None)
        found[f"{name}, initial state"] = lambda dr=dr: delta_rule_triton(*dr, initial_state=s0)
    for ks in (3, 7):
        qa, ka, va = (x(b, h, 16, 16, d) for _ in range(3))
        found[f"neighborhood {ks}x{ks}"] = (
            lambda qa=qa, ka=ka, va=va, ks=ks: neighborhood_attention_triton(qa, ka, va, kernel_size=ks,
                                                                           scale=d ** -0.5))
    return found


def ptxas_resources(ptx: str, arch: int) -> tuple[int, int]:
    """(registers per thread, spill bytes stored + loaded) of the kernel in ``ptx``, from ``ptxas -v``."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ptx")
        with open(path, "w") as f:
            f.write(ptx)
        # the flags triton's own make_cubin passes, so the counts are those of the cubin it builds
        run = subprocess.run([get_ptxas(arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                              f"--gpu-name={sm_arch_from_capability(arch)}", path, "-o",
                              os.path.join(tmp, "kernel.cubin")], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"ptxas failed:\n{run.stderr[-2000:]}")
    text = run.stdout + run.stderr
    regs = re.search(r"Used (\d+) registers", text)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
    if regs is None or spills is None:
        raise RuntimeError(f"unexpected ptxas -v output:\n{text[-2000:]}")
    return int(regs.group(1)), int(spills.group(1)) + int(spills.group(2))


def occupancy(arch: int, registers: int, shared: int, num_warps: int) -> tuple[int, str]:
    """Resident warps per SM for a kernel of this size, and the limit that binds (CUDA occupancy rules)."""
    lim = TARGETS[arch]
    regs_per_warp = -(-registers * 32 // 256) * 256
    by = {
        "registers": lim["regs"] // (regs_per_warp * num_warps) if registers else lim["blocks"],
        "shared memory": (lim["smem_sm"] // (shared + 1024)) if shared else lim["blocks"],
        "warps": lim["warps"] // num_warps,
        "blocks": lim["blocks"],
    }
    limit = min(by, key=lambda name: by[name])
    return by[limit] * num_warps, limit


def compile_all(arch: int, dtypes: list[str], head_dims: list[int], only: str | None = None,
                progress: Callable[[str], None] = lambda _: None) -> list[Compiled]:
    """Compile every case (whose name contains ``only``) for ``sm_<arch>``; one row per distinct kernel."""
    torch.manual_seed(0)
    rows: list[Compiled] = []
    seen: set[str] = set()
    with compile_only(arch) as records:
        for dname in dtypes:
            for d in head_dims:
                for case, call in cases(DTYPES[dname], d).items():
                    if only is not None and only not in case:
                        continue
                    progress(f"{dname} D={d}: {case}")
                    records.clear()
                    call()
                    for fn, kwargs, kernel, seconds in records:
                        if kernel.hash in seen:
                            continue
                        seen.add(kernel.hash)
                        regs, spills = ptxas_resources(kernel.asm["ptx"], arch)
                        meta = kernel.metadata
                        warps, limit = occupancy(arch, regs, meta.shared, meta.num_warps)
                        constants = {name: value for name, value in kwargs.items()
                                     if name not in ("num_warps", "num_stages", "num_ctas", "maxnreg")}
                        rows.append(Compiled(fn.__name__, f"{case}, D={d}", dname, constants, meta.num_warps,
                                             meta.num_stages, meta.shared, regs, spills, warps, limit,
                                             round(seconds, 3)))
    return rows


def problems(rows: list[Compiled], arch: int) -> list[str]:
    out = []
    for r in rows:
        if r.spill_bytes:
            out.append(f"{r.kernel} ({r.case}, {r.dtype}, {r.constants}): {r.spill_bytes} bytes of register spills")
        if r.shared > TARGETS[arch]["smem_block"]:
            out.append(f"{r.kernel} ({r.case}, {r.dtype}): {r.shared} bytes of shared memory > the "
                       f"{TARGETS[arch]['smem_block']} a block may use")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=int, choices=sorted(TARGETS), default=90, help="compute capability ×10")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["bf16", "fp16", "fp32"])
    p.add_argument("--head-dims", nargs="+", type=int, default=[32, 64, 128])
    p.add_argument("--only", help="compile only the cases whose name contains this (e.g. 'causal', 'SANA')")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    if any(d < 1 or d > 256 for d in args.head_dims):
        p.error("--head-dims must be between 1 and 256")
    start = time.perf_counter()
    rows = compile_all(args.arch, args.dtypes, args.head_dims, args.only,
                       progress=lambda msg: print(f"  compiling {msg}", file=sys.stderr, flush=True))
    print(f"# {len(rows)} kernels compiled for {TARGETS[args.arch]['name']} in {time.perf_counter() - start:.0f} s")
    print("| kernel | case | dtype | constexprs | warps | stages | regs | spills | shared KiB | warps/SM (limit) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        consts = ", ".join(f"{k}={v}" for k, v in r.constants.items())
        print(f"| {r.kernel} | {r.case} | {r.dtype} | {consts} | {r.num_warps} | {r.num_stages} | {r.registers} | "
              f"{r.spill_bytes} | {r.shared / 1024:.0f} | {r.warps_per_sm} ({r.limited_by}) |")
    if args.json:
        from genmodels.io import write_text_atomic

        write_text_atomic(args.json, json.dumps({"arch": args.arch, "target": TARGETS[args.arch]["name"],
                                                 "rows": [asdict(r) for r in rows]}, indent=1))
    bad = problems(rows, args.arch)
    for line in bad:
        print(f"PROBLEM: {line}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
