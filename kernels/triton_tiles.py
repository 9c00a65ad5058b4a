"""``@triton.jit`` helpers shared by the Triton kernels (imported only by the Triton backends, never by ``import
kernels``: see :mod:`kernels.triton_utils`)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def state_tile(s0_ptr, i_bh, K, V, o_k, o_v, HAS_S0: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """One program's [BK, BV] tile (keys ``o_k``, values ``o_v``) of a [B·H, K, V] state: its offsets, its mask,
    and its initial value in float32 (the tile of ``s0`` when ``HAS_S0``, else zeros). The walking kernels keep
    the tile in registers and store it at the same offsets at the end."""
    offsets = i_bh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    mask = (o_k < K)[:, None] & (o_v < V)[None, :]
    if HAS_S0:
        start = tl.load(s0_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    else:
        start = tl.zeros([BK, BV], dtype=tl.float32)
    return offsets, mask, start
