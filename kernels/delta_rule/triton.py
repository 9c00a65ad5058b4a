"""Triton generalized delta rule (RWKV-7 WKV): a fused recurrent kernel, the CUDA default.

One program per (V-tile, b, h) keeps the state M [K, BV] in float32 registers and steps through time:
    u   = a_tᵀ M                   (the removal read-out, [BV], uses the state before the step)
    M  ← diag(e^{log_w_t}) M + b_t uᵀ + k_t v_tᵀ
    o_t = M r_t                     (stored as Mᵀ r_t, [BV])
Only the vectors r_t, log_w_t, k_t, a_t, b_t [K] and v_t [BV] are read per step, each widened to float32, so the
kernel is latency-bound and meant for inference and decoding; training on long sequences is better served by
the chunked PyTorch path, which is also the backward pass here (recomputation, see
:class:`kernels.triton_utils.RecomputeBackward`). No ``tl.dot``: the K×BV updates are broadcast products.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_utils import autotune, check_launchable, tile, with_recompute_backward
from .chunk import delta_rule_torch


@autotune([triton.Config({"BV": 32}, num_warps=4), triton.Config({"BV": 16}, num_warps=2),
           triton.Config({"BV": 64}, num_warps=4)], key=["H", "K", "V"])
@triton.jit
def _recurrent_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr, o_ptr, st_ptr, H, T, K, V,
                      BK: tl.constexpr, BV: tl.constexpr, HAS_S0: tl.constexpr):
    """Step loop for one (V-tile, b·h). Inputs contiguous: [B·H, T, K] (v: [B·H, T, V]); state [B·H, K, V].

    The vectors of step t + 1 are loaded while step t is computed (a register double buffer), so the
    global-memory latency of the loads overlaps the update instead of adding to every step."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    st_off = i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    m_st = m_k[:, None] & m_v[None, :]
    if HAS_S0:
        m = tl.load(s0_ptr + st_off, mask=m_st, other=0.0).to(tl.float32)
    else:
        m = tl.zeros([BK, BV], dtype=tl.float32)
    key = i_bh.to(tl.int64) * T * K + o_k
    val = i_bh.to(tl.int64) * T * V + o_v
    r_n = tl.load(r_ptr + key, mask=m_k, other=0.0)
    w_n = tl.load(w_ptr + key, mask=m_k, other=0.0)
    k_n = tl.load(k_ptr + key, mask=m_k, other=0.0)
    a_n = tl.load(a_ptr + key, mask=m_k, other=0.0)
    b_n = tl.load(b_ptr + key, mask=m_k, other=0.0)
    v_n = tl.load(v_ptr + val, mask=m_v, other=0.0)
    for t in range(T):
        r, w, k = r_n.to(tl.float32), w_n.to(tl.float32), k_n.to(tl.float32)
        a, b, v = a_n.to(tl.float32), b_n.to(tl.float32), v_n.to(tl.float32)
        more = t + 1 < T
        r_n = tl.load(r_ptr + key + K, mask=m_k & more, other=0.0)
        w_n = tl.load(w_ptr + key + K, mask=m_k & more, other=0.0)
        k_n = tl.load(k_ptr + key + K, mask=m_k & more, other=0.0)
        a_n = tl.load(a_ptr + key + K, mask=m_k & more, other=0.0)
        b_n = tl.load(b_ptr + key + K, mask=m_k & more, other=0.0)
        v_n = tl.load(v_ptr + val + V, mask=m_v & more, other=0.0)
        u = tl.sum(a[:, None] * m, 0)
        m = tl.exp(w)[:, None] * m + b[:, None] * u[None, :] + k[:, None] * v[None, :]
        tl.store(o_ptr + val, tl.sum(r[:, None] * m, 0), mask=m_v)
        key += K
        val += V
    tl.store(st_ptr + st_off, m, mask=m_st)


def _forward(r, log_w, k, v, a, b, s0):
    check_launchable(r, log_w, k, v, a, b, s0)
    r, log_w, k, v, a, b = (x.contiguous() for x in (r, log_w, k, v, a, b))
    s0 = None if s0 is None else s0.contiguous()
    bsz, h, t, dk = r.shape
    dv = v.shape[-1]
    out = torch.empty(bsz, h, t, dv, device=r.device, dtype=torch.float32)
    state = torch.empty(bsz, h, dk, dv, device=r.device, dtype=torch.float32)
    _recurrent_kernel[lambda meta: (triton.cdiv(dv, meta["BV"]), bsz * h)](
        r, log_w, k, v, a, b, state if s0 is None else s0, out, state, h, t, dk, dv, BK=tile(dk, lo=1),
        HAS_S0=s0 is not None)
    return out, state


def _reference(r, log_w, k, v, a, b, s0):
    return delta_rule_torch(r, log_w, k, v, a, b, initial_state=s0)


def delta_rule_triton(r, log_w, k, v, a, b, *, initial_state):
    """Triton backend of :func:`kernels.delta_rule` (float32 output and state; float64 goes to torch).

    Forward by the fused recurrent kernel, backward recomputed through the chunked PyTorch path."""
    tensors = [r, log_w, k, v, a, b, initial_state]
    if any(x is not None and x.dtype == torch.float64 for x in tensors) or r.shape[2] == 0:
        return delta_rule_torch(r, log_w, k, v, a, b, initial_state=initial_state)
    return with_recompute_backward(_forward, _reference, tensors, {})
