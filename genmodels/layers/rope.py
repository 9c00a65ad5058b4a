"""Axial rotary position embeddings on resolution-normalised 2-D coordinates (HDiT's axial RoPE).

Positions are pixel-centre coordinates: the longer side spans [-1, 1] and the shorter side is scaled by the
aspect ratio, so a 32×64 grid has y in [-0.5, 0.5] and x in [-1, 1]. Coarser levels use the mean of each
2×2 group of positions. Each head rotates the first half of its dims; the second half is left untouched.
"""

from __future__ import annotations

import math
from functools import reduce

import torch
from einops import rearrange
from torch import nn


def centers(start: float, stop: float, num: int, *, dtype=None, device=None) -> torch.Tensor:
    """Centres of ``num`` equal cells tiling ``[start, stop]``: ``[num]``."""
    edges = torch.linspace(start, stop, num + 1, dtype=dtype, device=device)
    return (edges[:-1] + edges[1:]) / 2


def make_axial_pos(h: int, w: int, *, dtype=None, device=None) -> torch.Tensor:
    """Pixel-centre (y, x) coordinates of an ``h × w`` grid: ``[h, w, 2]``, longer side spanning [-1, 1]."""
    aspect = w / h
    y_max, x_max = (1 / aspect, 1.0) if aspect > 1 else (1.0, aspect)
    ys = centers(-y_max, y_max, h, dtype=dtype, device=device)
    xs = centers(-x_max, x_max, w, dtype=dtype, device=device)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), dim=-1)


def downscale_pos(pos: torch.Tensor) -> torch.Tensor:
    """Mean of each 2×2 group of positions, as a merge does: ``[..., h, w, 2] -> [..., h/2, w/2, 2]``."""
    pos = rearrange(pos, "... (h nh) (w nw) e -> ... h w (nh nw) e", nh=2, nw=2)
    return pos.mean(dim=-2)


def apply_rotary_emb(x: torch.Tensor, theta: torch.Tensor, *, conj: bool = False) -> torch.Tensor:
    """Rotate dims ``[0, d)`` against ``[d, 2d)`` by angles theta (``d = theta.shape[-1]``), half-split form.

    Dims from ``2d`` on pass through. Computed in at least float32; output has x's dtype. ``conj`` rotates
    by ``-theta`` (the inverse). Shapes: x ``[..., D]``, theta ``[..., d]`` broadcastable, ``2d ≤ D``.
    """
    d = theta.shape[-1]
    if 2 * d > x.shape[-1]:
        raise ValueError(f"cannot rotate 2·{d} dims of a {x.shape[-1]}-dim head")
    dtype = reduce(torch.promote_types, (x.dtype, theta.dtype, torch.float32))
    x1, x2, rest = x[..., :d].to(dtype), x[..., d : 2 * d].to(dtype), x[..., 2 * d :]
    cos, sin = torch.cos(theta.to(dtype)), torch.sin(theta.to(dtype))
    sin = -sin if conj else sin
    y1 = x1 * cos - x2 * sin
    y2 = x2 * cos + x1 * sin
    return torch.cat((y1.to(x.dtype), y2.to(x.dtype), rest), dim=-1)


class AxialRoPE(nn.Module):
    """Angles for axial RoPE over half of each head's dims.

    ``n_heads · d_head/8`` frequencies, log-spaced from π to 10π (10π excluded), are dealt out to the heads
    round-robin, so head ``h`` gets frequencies ``h, h + n_heads, ...``: every head sees a different,
    interleaved subset of scales. Each head gets ``d_head/8`` frequencies for y and the same for x, i.e.
    ``d_head/4`` angles rotating ``d_head/2`` dims.

    ``forward(pos [..., 2]) -> theta [..., n_heads, d_head/4]``.
    """

    def __init__(self, d_head: int, n_heads: int):
        super().__init__()
        if d_head % 8:
            raise ValueError(f"axial RoPE needs d_head divisible by 8, got {d_head}")
        self.d_head = d_head
        self.n_heads = n_heads
        n_freqs = d_head // 8
        log_freqs = torch.linspace(math.log(math.pi), math.log(10 * math.pi), n_heads * n_freqs + 1)[:-1]
        # Deterministic from the config, so not saved with the weights.
        self.register_buffer("freqs", log_freqs.exp().view(n_freqs, n_heads).T.contiguous(), persistent=False)

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, n_heads={self.n_heads}, rotated_dims={self.d_head // 2}"

    def forward(self, pos: torch.Tensor) -> torch.Tensor:
        freqs = self.freqs.to(pos.dtype)
        theta_h = pos[..., None, 0:1] * freqs
        theta_w = pos[..., None, 1:2] * freqs
        return torch.cat((theta_h, theta_w), dim=-1)
