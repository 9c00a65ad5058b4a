"""Triton linear attention (the CUDA default): non-causal SANA form, causal chunked with decays, block-causal.

Float32 states and accumulators; inputs are loaded in their own dtype (float32, float16 or bfloat16) and
widened to float32 on load. Shapes follow the op: q, k ``[B, H, T, K]``, v ``[B, H, T, V]`` (any strides with
a dense last dimension), states ``[B, H, K, V]``; outputs are float32 (the caller divides by the normaliser
column and casts), except the fused SANA variant, which writes q's dtype. Tile sizes are fixed by the shapes;
on a GPU the V-tile width and warp count are autotuned (first call per shape), under the interpreter the first
config is used.

* Non-causal (SANA): S = S0 + Kᵀ V, O = Q S. Stage 1 splits T into spans, one program per (span, B·H,
  V-tile) sums its k_nᵀ v_n into a float32 partial state; stage 2 adds the partials (a deterministic
  reduction, no atomics); stage 3 computes O = Q S tile by tile. A fused variant applies SANA's ReLU to q and
  k, sums the normaliser z = Σ φ(k_n) beside the state (stored as its column V) and divides by φ(q)·z + eps
  inside the kernels
  (:func:`linear_attention_relu_normalized_triton`).
* Causal ("fused chunk", no materialised chunk states): one program per (V-tile, B·H) walks the chunks with
  S [K, BV] in registers: O_n = (Q Kᵀ ⊙ D ⊙ M) V + (Q ⊙ e^{G}) S, S ← e^{G_C} ⊙ S + (K ⊙ e^{G_C − G})ᵀ V,
  G the in-chunk cumulative log-decay (float32). Every exponent is ≤ 0, so nothing can overflow.
* Block-causal (VAR): one program per (V-tile, B·H) walks the blocks, first adding the block's Kᵀ V to the
  state, then writing the block's outputs Q S.

Backward: recomputed through the PyTorch path (:class:`kernels.triton_utils.RecomputeBackward`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ..triton_tiles import state_tile
from ..triton_utils import (
    autotune,
    check_launchable,
    dot_precision,
    gpu_arch,
    last_dim_contiguous,
    native_dots,
    shape_of,
    strides,
    tile,
    with_recompute_backward,
)
from .chunk import linear_attention_torch

CHUNK = 64  # causal chunk without decay or with a per-head decay, keys ≤ 64 wide, tensor-core (TF32) dots
CHUNK_SMALL = 32  # wider keys or IEEE float32 dots: a 64-row chunk leaves no config without register spills
CHUNK_PER_KEY = 16  # per-key decay: the exact pairwise exponent is a [C, C, K-slice] tile
SPAN = 1024  # tokens per partial state in the non-causal reduction (at least)
OUT_TILES = 8  # row tiles per program of the non-causal output kernel (at most) ...
OUT_PROGRAMS = 2048  # ... as long as at least this many programs remain (about 16 per SM of an H100)


# ----------------------------------------------------------------------------------------------------------
# Non-causal: split-T partial states, reduction, then O = Q S


_SPLIT_CONFIGS = [triton.Config({}, num_warps=4), triton.Config({}, num_warps=8)]


def _split_keep(config, BK, PREC, **_):
    """Keys wider than 64 or IEEE float32 dots need 8 warps: at 4 the tiles spill; with TF32 dots and keys
    ≤ 64 wide both fit on sm_90, only 4 warps on sm_80 (``kernels.aot``)."""
    if BK <= 64 and PREC == "tf32":
        return config.num_warps == 4 or gpu_arch() >= 90
    return config.num_warps == 8


@autotune(_SPLIT_CONFIGS, key=["K", "VS", "BT", "BK", "BV", "PREC"], keep=_split_keep)
@triton.jit
def _kv_partial_kernel(k_ptr, v_ptr, part_ptr, skb, skh, skt, svb, svh, svt, H, T, K, V, VS, span,
                       BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, RELU: tl.constexpr,
                       ONES: tl.constexpr, PREC: tl.constexpr, NATIVE: tl.constexpr):
    """Partial state P[bh, s] = Σ_{n in span s} φ(k_n) [v_n; 1]ᵀ.

    Grid (V-tiles, spans, B·H). Registers: the [BK, BV] float32 accumulator; k [BT, BK] and v [BT, BV] tiles
    stream through it. ``RELU`` applies φ = ReLU to k, ``ONES`` also sums z = Σ φ(k_n) (a [BK] column sum of
    the k tiles already loaded) into column V of the VS = V + 1 wide state, written by the first V-tile's
    programs; the dot stays V wide (a ones column in v would double a 64-wide tile to 128). ``NATIVE``
    (float16 / bfloat16 inputs, see :func:`native_dots`): the tiles stay in their dtype for the dot, whose
    products are exact and summed in float32, so the result equals the widened TF32 dot's.
    Output ``part``: [B·H, spans, K, VS]."""
    i_v, i_s, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    k_base = k_ptr + i_b.to(tl.int64) * skb + i_h.to(tl.int64) * skh
    v_base = v_ptr + i_b.to(tl.int64) * svb + i_h.to(tl.int64) * svh
    o_t, o_k = tl.arange(0, BT), tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    acc = tl.zeros([BK, BV], dtype=tl.float32)
    z = tl.zeros([BK], dtype=tl.float32)
    end = tl.minimum((i_s + 1) * span, T)
    for t0 in range(i_s * span, end, BT):
        rows = t0 + o_t
        m_t = rows < end
        k = tl.load(k_base + rows[:, None] * skt + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0)
        v = tl.load(v_base + rows[:, None] * svt + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0)
        if not NATIVE:
            k, v = k.to(tl.float32), v.to(tl.float32)
        if RELU:
            k = tl.where(k > 0, k, tl.zeros_like(k))  # φ = ReLU, in k's dtype (exact)
        if ONES:
            z += tl.sum(k.to(tl.float32), 0)
        if NATIVE:
            acc = tl.dot(tl.trans(k), v, acc)
        else:
            acc += tl.dot(tl.trans(k), v, input_precision=PREC)
    n_spans = tl.num_programs(1)
    out = part_ptr + (i_bh.to(tl.int64) * n_spans + i_s) * K * VS
    tl.store(out + o_k[:, None] * VS + o_v[None, :], acc, mask=m_k[:, None] & m_v[None, :])
    if ONES:
        tl.store(out + o_k * VS + V, z, mask=m_k & (i_v == 0))


@autotune(_SPLIT_CONFIGS, key=["K", "V", "BT", "BK", "BV", "PREC"], keep=_split_keep)
@triton.jit
def _q_state_kernel(q_ptr, s_ptr, o_ptr, sqb, sqh, sqt, H, T, K, V, VS, eps, rows_per_program,
                    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, RELU: tl.constexpr,
                    NORMALIZE: tl.constexpr, PREC: tl.constexpr):
    """O = φ(Q) S for ``rows_per_program`` rows (whole [BT, BV] tiles), divided by φ(Q) z + eps when ``NORMALIZE``.

    Registers: the state tile S [BK, BV] (float32) and, when normalising, the normaliser column z [BK] (column V
    of the VS-wide state), loaded once per program and reused for every q [BT, BK] tile it walks, so the state is
    read once per ``rows_per_program`` rows rather than once per tile (at D = 64 a 64-row bf16 q tile is 8 KiB,
    the float32 state tile 16 KiB). Grid (V-tiles, row groups, B·H); S is contiguous [B·H, K, VS], O is
    contiguous [B·H, T, V] in its own dtype."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    q_base = q_ptr + i_b.to(tl.int64) * sqb + i_h.to(tl.int64) * sqh
    o_base = o_ptr + i_bh.to(tl.int64) * T * V
    s_base = s_ptr + i_bh.to(tl.int64) * K * VS
    s = tl.load(s_base + o_k[:, None] * VS + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
    z = tl.load(s_base + o_k * VS + V, mask=m_k & NORMALIZE, other=0.0)
    first = i_t * rows_per_program
    for t0 in range(first, tl.minimum(first + rows_per_program, T), BT):
        rows = t0 + tl.arange(0, BT)
        m_t = rows < T
        q = tl.load(q_base + rows[:, None] * sqt + o_k[None, :], mask=m_t[:, None] & m_k[None, :],
                    other=0.0).to(tl.float32)
        if RELU:
            q = tl.maximum(q, 0.0)
        o = tl.dot(q, s, input_precision=PREC)
        if NORMALIZE:
            o = o / (tl.sum(q * z[None, :], 1) + eps)[:, None]
        tl.store(o_base + rows[:, None] * V + o_v[None, :], o.to(o_ptr.dtype.element_ty),
                 mask=m_t[:, None] & m_v[None, :])


def _non_causal(q, k, v, s0, out, *, relu=False, normalize=False, eps=0.0):
    """Fill ``out`` [B, H, T, V] with φ(Q) S (/ normaliser), return S [B, H, K, V (+ 1 when normalising)]."""
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    vs = dv + int(normalize)
    bk, bt = tile(dk), 64
    prec = dot_precision(q, k, v)
    # IEEE float32 dots (FMA loops over whole operands): narrower value tiles, or 128-wide keys spill and, on
    # sm_80, overflow shared memory (kernels.aot)
    bv = tile(dv, hi=128 if prec == "tf32" else 64)
    n_v = triton.cdiv(dv, bv)
    # enough spans to fill the GPU when B·H is small, each at least SPAN tokens long
    n_spans = max(1, min(triton.cdiv(t, SPAN), 512 // max(1, b * h * n_v)))
    span = triton.cdiv(triton.cdiv(t, n_spans), bt) * bt
    n_spans = triton.cdiv(t, span)
    parts = torch.empty(b * h, n_spans, dk, vs, device=q.device, dtype=torch.float32)
    _kv_partial_kernel[(n_v, n_spans, b * h)](k, v, parts, *strides(k, 4), *strides(v, 4), h, t, dk, dv, vs, span,
                                              BT=bt, BK=bk, BV=bv, RELU=relu, ONES=normalize, PREC=prec,
                                              NATIVE=native_dots(k, v))
    state = parts.sum(1).view(b, h, dk, vs)  # the second stage: a deterministic reduction over spans
    if s0 is not None:
        state = state + s0.float()
    bv_out = bv if prec == "tf32" else min(bv, 32)  # the output kernel's IEEE dots spill above 32 values
    n_v_out, n_tiles = triton.cdiv(dv, bv_out), triton.cdiv(t, bt)
    # each program walks several row tiles with its state tile loaded once, while the grid keeps ≥ OUT_PROGRAMS
    tiles = max(1, min(OUT_TILES, n_tiles * n_v_out * b * h // OUT_PROGRAMS))
    _q_state_kernel[(n_v_out, triton.cdiv(n_tiles, tiles), b * h)](
        q, state, out, *strides(q, 4), h, t, dk, dv, vs, eps, tiles * bt,
        BT=bt, BK=bk, BV=bv_out, RELU=relu, NORMALIZE=normalize, PREC=prec)
    return state


# ----------------------------------------------------------------------------------------------------------
# Causal: fused chunk walk with the state in registers


# The walking kernels run one program per (V-tile, b, h): a narrower V-tile buys parallelism when B·H is small.
_WALK_CONFIGS = [triton.Config({"BV": bv}, num_warps=warps, num_stages=stages)
                 for bv, warps, stages in ((64, 4, 3), (32, 4, 3), (128, 8, 3), (64, 8, 2), (16, 8, 2))]


def _walk_keep(config, BK, PREC, DECAY=0, **_):
    """The walking kernels' configs without register spills (sm_80 / sm_90, ``python -m kernels.aot``): with
    TF32 dots and keys ≤ 64 wide, 4-warp tiles of 32 or 64 values (128 at 8 warps, except with a per-head
    decay); 128-wide keys (32-row chunks) need a narrower value tile or 8 warps; with a decay, sm_80 fits only
    tiles of ≤ 32 values; IEEE float32 dots hold whole operands in registers: 16-value tiles at 8 warps."""
    shape = shape_of(config)
    if PREC != "tf32":
        return shape == (16, 8, 2)
    if DECAY and gpu_arch() < 90 and shape[0] > 32:
        return False
    if BK <= 64:
        return shape in ((64, 4, 3), (32, 4, 3)) or (shape == (128, 8, 3) and DECAY != 1)
    return shape in ((32, 4, 3), (64, 8, 2), (16, 8, 2))


@autotune(_WALK_CONFIGS, key=["H", "K", "V", "DECAY", "PREC"], keep=_walk_keep)
@triton.jit
def _causal_kernel(q_ptr, k_ptr, v_ptr, g_ptr, s0_ptr, o_ptr, st_ptr,
                   sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sgb, sgh, sgt, H, T, K, V,
                   BT: tl.constexpr, BK: tl.constexpr, BKS: tl.constexpr, BV: tl.constexpr, DECAY: tl.constexpr,
                   HAS_S0: tl.constexpr, PREC: tl.constexpr):
    """Causal (decayed) linear attention for one (V-tile, b, h), chunk by chunk.

    Registers: the state S [BK, BV] (float32) for the whole sequence; per chunk q, k [BT, BK], v [BT, BV],
    the log-gates G (cumulative inside the chunk, float32) and the score tile [BT, BT]. ``DECAY``: 0 none,
    1 one log-gate per head and step (g [B, H, T]), 2 one per key (g [B, H, T, K]). For DECAY 2 the exact
    intra-chunk scores Σ_k q_tk k_sk e^{G_tk − G_sk} are formed as [BT, BT, BKS] products over K-slices of BKS
    keys, reloading the slices (from cache) so the 3-D tile stays small."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    q_base = q_ptr + i_b.to(tl.int64) * sqb + i_h.to(tl.int64) * sqh
    k_base = k_ptr + i_b.to(tl.int64) * skb + i_h.to(tl.int64) * skh
    v_base = v_ptr + i_b.to(tl.int64) * svb + i_h.to(tl.int64) * svh
    g_base = g_ptr + i_b.to(tl.int64) * sgb + i_h.to(tl.int64) * sgh
    o_t, o_k = tl.arange(0, BT), tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    causal = o_t[:, None] >= o_t[None, :]
    st_off, m_st, s = state_tile(s0_ptr, i_bh, K, V, o_k, o_v, HAS_S0, BK, BV)
    for t0 in range(0, T, BT):
        rows = t0 + o_t
        m_t = rows < T
        m_tk = m_t[:, None] & m_k[None, :]
        q = tl.load(q_base + rows[:, None] * sqt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        k = tl.load(k_base + rows[:, None] * skt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
        v = tl.load(v_base + rows[:, None] * svt + o_v[None, :], mask=m_t[:, None] & m_v[None, :],
                    other=0.0).to(tl.float32)
        if DECAY == 0:
            scores = tl.where(causal, tl.dot(q, tl.trans(k), input_precision=PREC), 0.0)
            out = tl.dot(scores, v, input_precision=PREC) + tl.dot(q, s, input_precision=PREC)
            s += tl.dot(tl.trans(k), v, input_precision=PREC)
        elif DECAY == 1:
            g = tl.load(g_base + rows * sgt, mask=m_t, other=0.0).to(tl.float32)  # padded steps: no decay
            gc = tl.cumsum(g, 0)
            g_last = tl.sum(g, 0)
            pair = tl.exp(tl.where(causal, gc[:, None] - gc[None, :], float("-inf")))
            scores = tl.dot(q, tl.trans(k), input_precision=PREC) * pair
            out = tl.dot(scores, v, input_precision=PREC)
            out += tl.dot(q * tl.exp(gc)[:, None], s, input_precision=PREC)
            k_dec = k * tl.exp(g_last - gc)[:, None]
            s = s * tl.exp(g_last) + tl.dot(tl.trans(k_dec), v, input_precision=PREC)
        else:
            scores = tl.zeros([BT, BT], dtype=tl.float32)
            for k0 in range(0, BK, BKS):
                o_ks = k0 + tl.arange(0, BKS)
                m_s = m_t[:, None] & (o_ks < K)[None, :]
                qs = tl.load(q_base + rows[:, None] * sqt + o_ks[None, :], mask=m_s, other=0.0).to(tl.float32)
                ks = tl.load(k_base + rows[:, None] * skt + o_ks[None, :], mask=m_s, other=0.0).to(tl.float32)
                gs = tl.load(g_base + rows[:, None] * sgt + o_ks[None, :], mask=m_s, other=0.0).to(tl.float32)
                gs = tl.cumsum(gs, 0)
                expo = tl.where(causal[:, :, None], gs[:, None, :] - gs[None, :, :], float("-inf"))
                scores += tl.sum(qs[:, None, :] * ks[None, :, :] * tl.exp(expo), 2)
            g = tl.load(g_base + rows[:, None] * sgt + o_k[None, :], mask=m_tk, other=0.0).to(tl.float32)
            gc = tl.cumsum(g, 0)
            g_last = tl.sum(g, 0)
            out = tl.dot(scores, v, input_precision=PREC)
            out += tl.dot(q * tl.exp(gc), s, input_precision=PREC)
            k_dec = k * tl.exp(g_last[None, :] - gc)
            s = s * tl.exp(g_last)[:, None] + tl.dot(tl.trans(k_dec), v, input_precision=PREC)
        tl.store(o_ptr + i_bh.to(tl.int64) * T * V + rows[:, None] * V + o_v[None, :], out,
                 mask=m_t[:, None] & m_v[None, :])
    tl.store(st_ptr + st_off, s, mask=m_st)


def _chunk(bk: int, prec: str) -> int:
    """Rows per step of the walking kernels (``python -m kernels.aot`` shows why: registers and spills)."""
    return CHUNK if bk <= 64 and prec == "tf32" else CHUNK_SMALL


def _causal(q, k, v, g, s0, out, state):
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    decay = 0 if g is None else (1 if g.ndim == 3 else 2)
    bk = tile(dk)
    prec = dot_precision(q, k, v)
    bt = CHUNK_PER_KEY if decay == 2 else _chunk(bk, prec)
    g_strides = (0, 0, 0) if g is None else tuple(g.stride()[:3])  # (b, h, t); keys (per-key g) are dense
    _causal_kernel[lambda meta: (triton.cdiv(dv, meta["BV"]), b * h)](
        q, k, v, q if g is None else g, state if s0 is None else s0, out, state,
        *strides(q, 4), *strides(k, 4), *strides(v, 4), *g_strides, h, t, dk, dv,
        BT=bt, BK=bk, BKS=min(bk, 32), DECAY=decay, HAS_S0=s0 is not None, PREC=prec)


# ----------------------------------------------------------------------------------------------------------
# Block-causal: walk the blocks, state first, then the block's queries


@autotune(_WALK_CONFIGS, key=["H", "K", "V", "PREC"], keep=_walk_keep)
@triton.jit
def _block_causal_kernel(q_ptr, k_ptr, v_ptr, starts_ptr, s0_ptr, o_ptr, st_ptr,
                         sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, H, T, K, V, n_blocks,
                         BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, HAS_S0: tl.constexpr,
                         PREC: tl.constexpr, NATIVE: tl.constexpr):
    """Block-causal linear attention for one (V-tile, b, h): block j's queries read S0 + Σ_{blocks ≤ j} Kᵀ V.

    ``starts`` (int32, n_blocks + 1) holds the block boundaries. Registers: the state S [BK, BV] (float32);
    per block, [BT]-row tiles of k, v stream into S, then tiles of q read it."""
    i_v, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    q_base = q_ptr + i_b.to(tl.int64) * sqb + i_h.to(tl.int64) * sqh
    k_base = k_ptr + i_b.to(tl.int64) * skb + i_h.to(tl.int64) * skh
    v_base = v_ptr + i_b.to(tl.int64) * svb + i_h.to(tl.int64) * svh
    o_t, o_k = tl.arange(0, BT), tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    st_off, m_st, s = state_tile(s0_ptr, i_bh, K, V, o_k, o_v, HAS_S0, BK, BV)
    for j in range(n_blocks):
        start = tl.load(starts_ptr + j)
        end = tl.load(starts_ptr + j + 1)
        for t0 in range(start, end, BT):
            rows = t0 + o_t
            m_t = rows < end
            k = tl.load(k_base + rows[:, None] * skt + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0)
            v = tl.load(v_base + rows[:, None] * svt + o_v[None, :], mask=m_t[:, None] & m_v[None, :], other=0.0)
            if NATIVE:  # half inputs: exact products, float32 sums (:func:`native_dots`)
                s = tl.dot(tl.trans(k), v, s)
            else:
                s += tl.dot(tl.trans(k.to(tl.float32)), v.to(tl.float32), input_precision=PREC)
        for t0 in range(start, end, BT):
            rows = t0 + o_t
            m_t = rows < end
            q = tl.load(q_base + rows[:, None] * sqt + o_k[None, :], mask=m_t[:, None] & m_k[None, :], other=0.0)
            out = tl.dot(q.to(tl.float32), s, input_precision=PREC)
            tl.store(o_ptr + i_bh.to(tl.int64) * T * V + rows[:, None] * V + o_v[None, :], out,
                     mask=m_t[:, None] & m_v[None, :])
    tl.store(st_ptr + st_off, s, mask=m_st)


def _block_causal(q, k, v, block_sizes, s0, out, state):
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    bk = tile(dk)
    # VAR's blocks grow geometrically: size the row tile to the largest block, 16 ≤ BT ≤ the causal chunk
    prec = dot_precision(q, k, v)
    bt = tile(max(block_sizes), hi=_chunk(bk, prec))
    bounds = [0]
    for size in block_sizes:
        bounds.append(bounds[-1] + size)
    starts = torch.tensor(bounds, dtype=torch.int32, device=q.device)
    _block_causal_kernel[lambda meta: (triton.cdiv(dv, meta["BV"]), b * h)](
        q, k, v, starts, state if s0 is None else s0, out, state,
        *strides(q, 4), *strides(k, 4), *strides(v, 4), h, t, dk, dv, len(block_sizes),
        BT=bt, BK=bk, HAS_S0=s0 is not None, PREC=prec, NATIVE=native_dots(k, v))


# ----------------------------------------------------------------------------------------------------------
# Backend


def _forward(q, k, v, g, s0, *, causal, block_sizes):
    check_launchable(q, k, v, g, s0)
    q, k, v, g = (last_dim_contiguous(x) for x in (q, k, v, g))
    s0 = None if s0 is None else s0.contiguous()
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    out = torch.empty(b, h, t, dv, device=q.device, dtype=torch.float32)
    if not causal and block_sizes is None:
        return out, _non_causal(q, k, v, s0, out)
    state = torch.empty(b, h, dk, dv, device=q.device, dtype=torch.float32)
    if causal:
        _causal(q, k, v, g, s0, out, state)
    else:
        _block_causal(q, k, v, block_sizes, s0, out, state)
    return out, state


def _reference(q, k, v, g, s0, *, causal, block_sizes):
    return linear_attention_torch(q, k, v, causal=causal, block_sizes=block_sizes, log_decay=g, initial_state=s0)


def _relu_normalized_forward(q, k, v, s0, *, eps):
    check_launchable(q, k, v, s0)
    q, k, v = (last_dim_contiguous(x) for x in (q, k, v))
    s0 = None if s0 is None else s0.contiguous()
    out = torch.empty(v.shape, device=q.device, dtype=q.dtype)
    return out, _non_causal(q, k, v, s0, out, relu=True, normalize=True, eps=eps)


def _relu_normalized_reference(q, k, v, s0, *, eps):
    ones = torch.ones_like(v[..., :1])
    out, state = linear_attention_torch(F.relu(q), F.relu(k), torch.cat([v, ones], dim=-1), causal=False,
                                        block_sizes=None, log_decay=None, initial_state=s0)
    return out[..., :-1] / (out[..., -1:] + eps), state


def linear_attention_relu_normalized_triton(q, k, v, *, eps, initial_state):
    """SANA's non-causal ReLU linear attention with the normaliser, fused (output in q's dtype, state
    [B, H, K, V + 1] float32): o_i = φ(q_i)ᵀ S / (φ(q_i)·z + eps), S = S0 + Σ φ(k_n) v_nᵀ, z = Σ φ(k_n), φ = ReLU.

    The ReLU, the ones column and the division happen inside the two kernels, so q, k, v are read once and the
    output written once; the public op calls this for ``feature_map="relu", normalize=True`` without causality.
    Backward recomputed through the PyTorch path of the same formula."""
    tensors = [q, k, v, initial_state]
    if any(x is not None and x.dtype == torch.float64 for x in tensors) or q.shape[2] == 0:
        return _relu_normalized_reference(q, k, v, initial_state, eps=eps)
    return with_recompute_backward(_relu_normalized_forward, _relu_normalized_reference, tensors, {"eps": eps})


def linear_attention_triton(q, k, v, *, causal, block_sizes, log_decay, initial_state):
    """Triton backend of :func:`kernels.linear_attention` (float32 outputs and state; float64 goes to torch).

    Forward in Triton, backward recomputed through the PyTorch chunked path."""
    tensors = [q, k, v, log_decay, initial_state]
    if any(x is not None and x.dtype == torch.float64 for x in tensors) or q.shape[2] == 0:
        return linear_attention_torch(q, k, v, causal=causal, block_sizes=block_sizes, log_decay=log_decay,
                                      initial_state=initial_state)
    return with_recompute_backward(_forward, _reference, tensors, {"causal": causal, "block_sizes": block_sizes})
