"""Helpers shared by the ops: precision promotion, padding to chunks, decayed pairwise products."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# exp(±70) stays well inside the float32 range, so factorised decays e^{G_t - G_ref} · e^{G_ref - G_s}
# are safe whenever the cumulative log-decay inside a chunk spans less than this.
_FACTORISE_SPAN = 70.0
# Elements per slab when the exact [C, C, K] pairwise tensor has to be materialised.
_SLAB_ELEMENTS = 1 << 25


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """At least float32: float64 inputs stay float64 (tests), half and bfloat16 are promoted."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def pad_time(x: torch.Tensor, chunk: int, dim: int = 2) -> torch.Tensor:
    """Zero-pad dimension ``dim`` (time) of ``x`` up to a multiple of ``chunk``."""
    pad = (-x.shape[dim]) % chunk
    if pad == 0:
        return x
    spec = [0, 0] * (x.ndim - 1 - dim) + [0, pad]
    return F.pad(x, spec)


def to_chunks(x: torch.Tensor, chunk: int) -> torch.Tensor:
    """[B, H, T, ...] (T a multiple of chunk) -> [B, H, N, C, ...]."""
    b, h, t = x.shape[:3]
    return x.reshape(b, h, t // chunk, chunk, *x.shape[3:])


def can_factorise(g_last: torch.Tensor) -> bool:
    """Whether e^{±G} stays in float32 range inside every chunk: G is cumulative from 0 down to G_last."""
    return float(-g_last.detach().min()) <= _FACTORISE_SPAN


def decayed_pairs(
    x: torch.Tensor, gx: torch.Tensor, y: torch.Tensor, gy: torch.Tensor, *, strict: bool, factorise: bool
) -> torch.Tensor:
    """A[..., t, s] = Σ_k x[t, k] y[s, k] exp(gx[t, k] - gy[s, k]) for s ≤ t (s < t when ``strict``), else 0.

    x, gx: [..., C, K]; y, gy: [..., C, K]; returns [..., C, C]. The log-gates are cumulative within a chunk
    and non-increasing in time, so every kept exponent is ≤ 0. When the chunk's span of log-gates is small
    (``factorise``, see :func:`can_factorise`) the product splits into one matmul around a reference point;
    otherwise the exact pairwise exponent is formed slab by slab, so no intermediate can overflow.
    """
    c = x.shape[-2]
    mask = torch.ones(c, c, dtype=torch.bool, device=x.device).tril(-1 if strict else 0)
    if factorise:
        ref = gy[..., c // 2 : c // 2 + 1, :]
        a = (x * torch.exp(gx - ref)) @ (y * torch.exp(ref - gy)).transpose(-1, -2)
        return a.masked_fill(~mask, 0.0)
    lead = x.shape[:-2]
    k = x.shape[-1]
    xf, gxf = x.reshape(-1, c, k), gx.reshape(-1, c, k)
    yf, gyf = y.reshape(-1, c, k), gy.reshape(-1, c, k)
    out = x.new_empty(xf.shape[0], c, c)
    step = max(1, _SLAB_ELEMENTS // (c * c * k))
    for i in range(0, xf.shape[0], step):
        sl = slice(i, i + step)
        expo = (gxf[sl, :, None, :] - gyf[sl, None, :, :]).masked_fill(~mask[..., None], float("-inf"))
        out[sl] = (xf[sl, :, None, :] * yf[sl, None, :, :] * torch.exp(expo)).sum(-1)
    return out.reshape(*lead, c, c)


def records_graph(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records an op on ``tensors`` (grad mode on and any of them requiring grad)."""
    return torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in tensors)


def segmented(fn, tensors: list[torch.Tensor], state: torch.Tensor, segment: int):
    """Run a causal op segment by segment along time (dim 2), carrying the state.

    Keeps every temporary at most ``segment`` tokens long, so time stays linear in T (no cache or page-fault
    blow-up from T-sized temporaries). ``fn(*pieces, state) -> (out, state)``."""
    t = tensors[0].shape[2]
    if t <= segment:
        return fn(*tensors, state)
    if records_graph(*tensors, state):
        outs = []
        for s in range(0, t, segment):
            out, state = fn(*(x[:, :, s : s + segment] for x in tensors), state)
            outs.append(out)
        return torch.cat(outs, dim=2), state
    whole = None  # without a graph: each segment's output copied into one tensor, no list and no concatenation
    for s in range(0, t, segment):
        out, state = fn(*(x[:, :, s : s + segment] for x in tensors), state)
        if whole is None:
            whole = out.new_empty(*out.shape[:2], t, *out.shape[3:])
        whole[:, :, s : s + segment] = out
    return whole, state
