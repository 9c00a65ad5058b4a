"""Triton 2-D neighborhood attention with NATTEN's clamped windows (the CUDA default).

One program per (tile of TH×TW queries, b·h). Query (y, x) attends the KS×KS keys starting at
s(y) = clamp(y − KS//2, 0, Hgt − KS) (same for x). Window starts are monotone and grow by at most one per
pixel, so the windows of a tile lie in a halo of (TH + KS − 1) rows × (TW + KS − 1) columns starting at the
window of the tile's first query. The program walks the halo row by row: each step loads one row segment of
BKW ≥ TW + KS − 1 keys and values, scores it against all TH·TW queries with one ``tl.dot``, masks keys outside
each query's window, and folds the row into an online softmax (running max m, sum l and accumulator
[TH·TW, D], all float32, base-2 exponentials with the scale and log2 e folded into q). Inputs are loaded in
their own dtype and widened to float32; the output has q's dtype.

Backward: recomputed through the blocked PyTorch path (:class:`kernels.triton_utils.RecomputeBackward`).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from ..triton_utils import check_launchable, dot_precision, tile, with_recompute_backward
from .blocked import neighborhood_attention_blocked

TILE_H, TILE_W = 8, 8


@triton.jit
def _na2d_kernel(q_ptr, k_ptr, v_ptr, o_ptr, X, Y, D, DV, n_tiles_y, qk_scale,
                 KS: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, BKW: tl.constexpr, BD: tl.constexpr,
                 BDV: tl.constexpr, PREC: tl.constexpr):
    """Neighborhood attention for one TH×TW query tile of one (b, h); tensors contiguous [B·H, X, Y, D].

    Registers: q [TH·TW, BD] (pre-scaled), the running max / sum [TH·TW] and accumulator [TH·TW, BDV] (float32),
    and per halo row a key tile [BKW, BD] and value tile [BKW, BDV]."""
    i_tile, i_bh = tl.program_id(0), tl.program_id(1)
    ty0 = (i_tile % n_tiles_y) * TH
    tx0 = (i_tile // n_tiles_y) * TW
    o_q = tl.arange(0, TH * TW)
    qy, qx = ty0 + o_q // TW, tx0 + o_q % TW
    m_q = (qy < X) & (qx < Y)
    sy = tl.minimum(tl.maximum(qy - KS // 2, 0), X - KS)  # window starts of each query
    sx = tl.minimum(tl.maximum(qx - KS // 2, 0), Y - KS)
    o_d, o_dv = tl.arange(0, BD), tl.arange(0, BDV)
    base = i_bh.to(tl.int64) * X * Y
    q = tl.load(q_ptr + (base + qy * Y + qx)[:, None] * D + o_d[None, :], mask=m_q[:, None] & (o_d < D)[None, :],
                other=0.0).to(tl.float32) * qk_scale
    row0 = tl.minimum(tl.maximum(ty0 - KS // 2, 0), X - KS)  # the halo: rows row0 .., columns col0 ..
    col0 = tl.minimum(tl.maximum(tx0 - KS // 2, 0), Y - KS)
    kx = col0 + tl.arange(0, BKW)
    in_x = (kx[None, :] >= sx[:, None]) & (kx[None, :] < sx[:, None] + KS) & (kx < Y)[None, :]
    m_i = tl.full([TH * TW], -1.0e30, dtype=tl.float32)
    l_i = tl.zeros([TH * TW], dtype=tl.float32)
    acc = tl.zeros([TH * TW, BDV], dtype=tl.float32)
    for i in range(TH + KS - 1):
        ky = row0 + i
        m_key = (kx < Y) & (ky < X)
        pos = base + ky * Y + kx
        keys = tl.load(k_ptr + pos[:, None] * D + o_d[None, :], mask=m_key[:, None] & (o_d < D)[None, :], other=0.0)
        vals = tl.load(v_ptr + pos[:, None] * DV + o_dv[None, :], mask=m_key[:, None] & (o_dv < DV)[None, :],
                       other=0.0)
        s = tl.dot(q, tl.trans(keys.to(tl.float32)), input_precision=PREC)
        in_window = in_x & ((ky >= sy) & (ky < sy + KS))[:, None]
        s = tl.where(in_window, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p, vals.to(tl.float32), input_precision=PREC)
        m_i = m_new
    out = acc / tl.where(m_q, l_i, 1.0)[:, None]
    tl.store(o_ptr + (base + qy * Y + qx)[:, None] * DV + o_dv[None, :], out.to(o_ptr.dtype.element_ty),
             mask=m_q[:, None] & (o_dv < DV)[None, :])


def _forward(q, k, v, *, kernel_size, scale):
    check_launchable(q, k, v)
    q, k, v = (x.contiguous() for x in (q, k, v))
    b, h, hy, wx, d = q.shape
    dv = v.shape[-1]
    out = torch.empty(b, h, hy, wx, dv, device=q.device, dtype=q.dtype)
    n_ty, n_tx = triton.cdiv(hy, TILE_H), triton.cdiv(wx, TILE_W)
    _na2d_kernel[(n_ty * n_tx, b * h)](q, k, v, out, hy, wx, d, dv, n_ty, scale * math.log2(math.e),
                                       KS=kernel_size, TH=TILE_H, TW=TILE_W, BKW=tile(TILE_W + kernel_size - 1),
                                       BD=tile(d), BDV=tile(dv), PREC=dot_precision(q, k, v),
                                       num_warps=8 if max(d, dv) > 64 else 4)  # 4 spill at 128 (kernels.aot)
    return (out,)


def _reference(q, k, v, *, kernel_size, scale):
    return (neighborhood_attention_blocked(q, k, v, kernel_size=kernel_size, scale=scale),)


def neighborhood_attention_triton(q, k, v, *, kernel_size, scale):
    """Triton backend of :func:`kernels.neighborhood_attention_2d` (output in q's dtype; float64 goes to torch).

    Forward by the fused halo kernel, backward recomputed through the blocked PyTorch path."""
    if any(x.dtype == torch.float64 for x in (q, k, v)):
        return neighborhood_attention_blocked(q, k, v, kernel_size=kernel_size, scale=scale)
    return with_recompute_backward(_forward, _reference, [q, k, v], {"kernel_size": kernel_size, "scale": scale})[0]
