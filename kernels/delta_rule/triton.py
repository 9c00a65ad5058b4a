"""Triton generalized delta rule (RWKV-7 WKV), the CUDA default: a chunked kernel and a fused recurrent one.

Both keep the state M [K, BV] in float32 registers, one program per (V-tile, b, h), and never write it out
between steps. The step (the naive reference):
    u   = a_tᵀ M                   (the removal read-out, [BV], uses the state before the step)
    M  ← diag(e^{log_w_t}) M + b_t uᵀ + k_t v_tᵀ
    o_t = M r_t                     (stored as Mᵀ r_t, [BV])

* **Chunked** (sequences longer than ``RECURRENT_MAX``): chunks of C = 16 steps. With Γ the in-chunk cumulative
  log-decay (Γ_prev = Γ − log_w), the chunk's removal read-outs U [C, BV] solve a unit-lower-triangular system

      (I − A_ab) U = Ã M + A_ak V,    A_xy[t, s] = Σ_k x_tk y_sk e^{Γ_prev[t, k] − Γ[s, k]}  (s < t),

  Ã = a ⊙ e^{Γ_prev}; the kernel inverts I − A_ab by forward substitution (C row updates of a [C, C] tile) and
  forms U with one dot. Then, with inclusive pairs A_rb, A_rk (exponent Γ[t] − Γ[s], s ≤ t) and R̃ = r ⊙ e^{Γ},

      O = R̃ M + A_rb U + A_rk V,    M ← diag(e^{Γ_C}) M + (b ⊙ e^{Γ_C − Γ})ᵀ U + (k ⊙ e^{Γ_C − Γ})ᵀ V.

  The pair matrices are formed with their exact per-key exponents as [C, C, BKS] products over K-slices of BKS
  keys, so every exponent is ≤ 0 and nothing can overflow whatever the decay (the chunked PyTorch path has to
  check its factorised form; this kernel does not factorise). The pair work does not depend on V and is
  repeated by each V-tile's program: the price of not writing per-chunk intermediates to memory.
* **Fused recurrent** (short sequences, decoding): step by step, only the vectors r_t, log_w_t, k_t, a_t, b_t
  [K] and v_t [BV] are read per step, each widened to float32; latency-bound, no ``tl.dot``.

Backward: recomputed through the chunked PyTorch path (:class:`kernels.triton_utils.RecomputeBackward`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_tiles import state_tile
from ..triton_utils import (
    autotune,
    check_launchable,
    dot_precision,
    gpu_arch,
    shape_of,
    tile,
    with_recompute_backward,
)
from .chunk import delta_rule_torch


def _recurrent_keep(config, BK, **_):
    """A 64-value tile spills at 4 warps with keys ≤ 64 wide and at 8 warps with wider ones (``kernels.aot``)."""
    return shape_of(config)[0] != 64 or config.num_warps == (8 if BK <= 64 else 4)


@autotune([triton.Config({"BV": 32}, num_warps=4), triton.Config({"BV": 16}, num_warps=2),
           triton.Config({"BV": 64}, num_warps=8), triton.Config({"BV": 64}, num_warps=4)], key=["H", "K", "V"],
          keep=_recurrent_keep)
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
    st_off, m_st, m = state_tile(s0_ptr, i_bh, K, V, o_k, o_v, HAS_S0, BK, BV)
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


def _chunk_keep(config, BK, PREC, **_):
    """IEEE float32 dots (whole operands in registers), and TF32 dots on sm_80, spill with 64-value tiles, and
    with 32-value ones for 128-wide keys (``kernels.aot``)."""
    bv = shape_of(config)[0]
    if PREC != "tf32" or gpu_arch() < 90:
        return bv <= (32 if BK <= 64 else 16)
    return True


# 8 warps: at 4 or 2 most tiles spill for some key width (``kernels.aot``: 32, 64 and 128, fp32 / bf16)
@autotune([triton.Config({"BV": bv}, num_warps=8) for bv in (32, 64, 16)], key=["H", "K", "V", "PREC"],
          keep=_chunk_keep)
@triton.jit
def _chunk_kernel(r_ptr, w_ptr, k_ptr, v_ptr, a_ptr, b_ptr, s0_ptr, o_ptr, st_ptr, H, T, K, V,
                  C: tl.constexpr, BK: tl.constexpr, BKS: tl.constexpr, BV: tl.constexpr, HAS_S0: tl.constexpr,
                  PREC: tl.constexpr):
    """Chunked delta rule for one (V-tile, b·h). Inputs contiguous [B·H, T, K] (v: [B·H, T, V]); state
    [B·H, K, V].

    Registers: the state M [BK, BV] (float32) for the whole sequence; per chunk the [C, BK] tiles of r, log_w,
    k, a, b and their cumulative gates, v [C, BV], four [C, C] pair matrices, (I − A_ab)⁻¹ and U [C, BV]; the
    pair products are [C, C, BKS] tiles, reloaded slice by slice (from cache)."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    o_c, o_k = tl.arange(0, C), tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    lower = o_c[:, None] > o_c[None, :]  # s < t
    lower_eq = o_c[:, None] >= o_c[None, :]  # s ≤ t
    st_off, m_st, m = state_tile(s0_ptr, i_bh, K, V, o_k, o_v, HAS_S0, BK, BV)
    key_base = i_bh.to(tl.int64) * T * K
    val_base = i_bh.to(tl.int64) * T * V
    for t0 in range(0, T, C):
        rows = t0 + o_c
        m_t = rows < T
        m_tk = m_t[:, None] & m_k[None, :]
        at = key_base + rows[:, None] * K + o_k[None, :]
        # padded steps load zeros: no decay (log_w = 0), no read-out, no write
        r = tl.load(r_ptr + at, mask=m_tk, other=0.0).to(tl.float32)
        lw = tl.load(w_ptr + at, mask=m_tk, other=0.0).to(tl.float32)
        k = tl.load(k_ptr + at, mask=m_tk, other=0.0).to(tl.float32)
        a = tl.load(a_ptr + at, mask=m_tk, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + at, mask=m_tk, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + val_base + rows[:, None] * V + o_v[None, :], mask=m_t[:, None] & m_v[None, :],
                    other=0.0).to(tl.float32)
        g = tl.cumsum(lw, 0)
        g_last = tl.sum(lw, 0)
        # pair matrices with exact exponents, K-slice by K-slice
        a_ab = tl.zeros([C, C], dtype=tl.float32)
        a_ak = tl.zeros([C, C], dtype=tl.float32)
        a_rb = tl.zeros([C, C], dtype=tl.float32)
        a_rk = tl.zeros([C, C], dtype=tl.float32)
        for k0 in range(0, BK, BKS):
            o_ks = k0 + tl.arange(0, BKS)
            m_s = m_t[:, None] & (o_ks < K)[None, :]
            at_s = key_base + rows[:, None] * K + o_ks[None, :]
            lw_s = tl.load(w_ptr + at_s, mask=m_s, other=0.0).to(tl.float32)
            g_s = tl.cumsum(lw_s, 0)
            gp_s = g_s - lw_s
            r_s = tl.load(r_ptr + at_s, mask=m_s, other=0.0).to(tl.float32)
            k_s = tl.load(k_ptr + at_s, mask=m_s, other=0.0).to(tl.float32)
            a_s = tl.load(a_ptr + at_s, mask=m_s, other=0.0).to(tl.float32)
            b_s = tl.load(b_ptr + at_s, mask=m_s, other=0.0).to(tl.float32)
            strict = tl.exp(tl.where(lower[:, :, None], gp_s[:, None, :] - g_s[None, :, :], float("-inf")))
            incl = tl.exp(tl.where(lower_eq[:, :, None], g_s[:, None, :] - g_s[None, :, :], float("-inf")))
            a_ab += tl.sum(a_s[:, None, :] * b_s[None, :, :] * strict, 2)
            a_ak += tl.sum(a_s[:, None, :] * k_s[None, :, :] * strict, 2)
            a_rb += tl.sum(r_s[:, None, :] * b_s[None, :, :] * incl, 2)
            a_rk += tl.sum(r_s[:, None, :] * k_s[None, :, :] * incl, 2)
        # (I − A_ab)⁻¹ by forward substitution: row i = e_i + Σ_{s<i} A_ab[i, s] · row s
        inv = tl.zeros([C, C], dtype=tl.float32)
        for i in range(C):
            pick = o_c[:, None] == i
            a_row = tl.sum(tl.where(pick, a_ab, 0.0), 0)  # A_ab[i, :]
            row = tl.sum(a_row[:, None] * inv, 0) + tl.where(o_c == i, 1.0, 0.0)
            inv = tl.where(pick, row[None, :], inv)
        a_dec = a * tl.exp(g - lw)  # Ã
        rhs = tl.dot(a_dec, m, input_precision=PREC) + tl.dot(a_ak, v, input_precision=PREC)
        u = tl.dot(inv, rhs, input_precision=PREC)
        out = tl.dot(r * tl.exp(g), m, input_precision=PREC) + tl.dot(a_rb, u, input_precision=PREC)
        out += tl.dot(a_rk, v, input_precision=PREC)
        tail = tl.exp(g_last[None, :] - g)
        m = m * tl.exp(g_last)[:, None] + tl.dot(tl.trans(b * tail), u, input_precision=PREC)
        m += tl.dot(tl.trans(k * tail), v, input_precision=PREC)
        tl.store(o_ptr + val_base + rows[:, None] * V + o_v[None, :], out, mask=m_t[:, None] & m_v[None, :])
    tl.store(st_ptr + st_off, m, mask=m_st)


CHUNK = 16
RECURRENT_MAX = 64  # up to this many steps the fused recurrent kernel runs (decoding, CrossWKV's prompts)


def _forward(r, log_w, k, v, a, b, s0):
    check_launchable(r, log_w, k, v, a, b, s0)
    r, log_w, k, v, a, b = (x.contiguous() for x in (r, log_w, k, v, a, b))
    s0 = None if s0 is None else s0.contiguous()
    bsz, h, t, dk = r.shape
    dv = v.shape[-1]
    out = torch.empty(bsz, h, t, dv, device=r.device, dtype=torch.float32)
    state = torch.empty(bsz, h, dk, dv, device=r.device, dtype=torch.float32)
    grid = lambda meta: (triton.cdiv(dv, meta["BV"]), bsz * h)  # noqa: E731
    if t <= RECURRENT_MAX:
        _recurrent_kernel[grid](r, log_w, k, v, a, b, state if s0 is None else s0, out, state, h, t, dk, dv,
                                BK=tile(dk, lo=1), HAS_S0=s0 is not None)
    else:
        bk = tile(dk)
        _chunk_kernel[grid](r, log_w, k, v, a, b, state if s0 is None else s0, out, state, h, t, dk, dv,
                            C=CHUNK, BK=bk, BKS=min(bk, 16), HAS_S0=s0 is not None,
                            PREC=dot_precision(r, log_w, k, v, a, b))
    return out, state


def _reference(r, log_w, k, v, a, b, s0):
    return delta_rule_torch(r, log_w, k, v, a, b, initial_state=s0)


def delta_rule_triton(r, log_w, k, v, a, b, *, initial_state):
    """Triton backend of :func:`kernels.delta_rule` (float32 output and state; float64 goes to torch).

    Forward by the chunked kernel (the fused recurrent one up to ``RECURRENT_MAX`` steps), backward recomputed
    through the chunked PyTorch path."""
    tensors = [r, log_w, k, v, a, b, initial_state]
    if any(x is not None and x.dtype == torch.float64 for x in tensors) or r.shape[2] == 0:
        return delta_rule_torch(r, log_w, k, v, a, b, initial_state=initial_state)
    return with_recompute_backward(_forward, _reference, tensors, {})
