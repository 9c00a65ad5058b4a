"""Naive 2-D neighborhood attention: dense attention with the neighborhood mask, for tests only."""

from __future__ import annotations

import torch

from ..dispatch import register


def window_start(n: int, kernel_size: int, device=None) -> torch.Tensor:
    """NATTEN's clamped window: query i sees keys [s_i, s_i + k) with s_i = clamp(i - k//2, 0, n - k)."""
    return (torch.arange(n, device=device) - kernel_size // 2).clamp(0, n - kernel_size)


def neighborhood_mask(height: int, width: int, kernel_size: int, device=None) -> torch.Tensor:
    """[H·W, H·W] bool: query (y, x) may attend key (y', x') iff it lies in the query's clamped window."""
    def axis(n):
        s = window_start(n, kernel_size, device)
        j = torch.arange(n, device=device)
        return (j[None, :] >= s[:, None]) & (j[None, :] < s[:, None] + kernel_size)

    my, mx = axis(height), axis(width)
    return (my[:, None, :, None] & mx[None, :, None, :]).reshape(height * width, height * width)


@register("neighborhood_attention_2d", "naive")
def neighborhood_attention_naive(q, k, v, *, kernel_size, scale):
    b, h, hy, wx, d = q.shape
    qf, kf, vf = (x.reshape(b, h, hy * wx, -1) for x in (q, k, v))
    scores = (qf @ kf.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~neighborhood_mask(hy, wx, kernel_size, q.device), float("-inf"))
    return (scores.softmax(-1) @ vf).reshape(b, h, hy, wx, -1)
