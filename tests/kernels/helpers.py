"""Comparison helpers for kernel tests."""

from __future__ import annotations

import torch

from kernels import use_backend


def rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    """Relative RMS error ‖out − ref‖ / ‖ref‖ (the fla convention), 0 for two zero tensors."""
    ref, out = ref.detach().double(), out.detach().double()
    denom = ref.norm().item()
    diff = (out - ref).norm().item()
    return diff / denom if denom > 0 else diff


def run_backend(backend: str, fn, *tensors: torch.Tensor, **kwargs):
    """Run ``fn`` under ``backend`` on fresh leaf copies; return (output(s), grads of every tensor input).

    The backward pass uses a fixed random cotangent on every output so all paths are exercised."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    with use_backend(backend):
        out = fn(*leaves, **kwargs)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(1234)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    return outs, [leaf.grad for leaf in leaves]


def assert_paths_agree(fn, *tensors, tol: float, **kwargs) -> None:
    """The torch path matches the naive reference, forward and backward, by relative error."""
    ref_out, ref_grads = run_backend("naive", fn, *tensors, **kwargs)
    out, grads = run_backend("torch", fn, *tensors, **kwargs)
    for i, (a, b) in enumerate(zip(ref_out, out)):
        assert rel_err(a, b) < tol, f"output {i}: rel err {rel_err(a, b):.2e}"
    for i, (a, b) in enumerate(zip(ref_grads, grads)):
        if a is None:
            continue
        assert rel_err(a, b) < tol, f"grad of input {i}: rel err {rel_err(a, b):.2e}"
