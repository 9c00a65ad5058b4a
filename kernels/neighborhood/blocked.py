"""Fast PyTorch 2-D neighborhood attention: tiled queries against a halo of keys (the CPU default).

Queries are cut into tiles of th×tw. Because NATTEN windows are clamped inward and their starts are
monotone, all windows of a tile lie inside one halo of (th + k − 1)×(tw + k − 1) keys (clamped to the map).
Each tile does dense attention against its halo with a separable mask, so work per pixel is constant and the
memory is bounded by processing a few tile rows at a time. Maps not divisible by the tile are covered by a
last tile that overlaps its neighbour; each pixel's output is then gathered from exactly one tile, so the
backward pass does not count the overlap twice.
"""

from __future__ import annotations

import torch

from ..dispatch import register
from .naive import window_start

TILE = 8
_SLAB_ELEMENTS = 1 << 21


def _axis_plan(n: int, kernel_size: int, tile: int, device):
    """Tile starts, halo indices [nt, halo] and the per-tile query→halo mask [nt, tile, halo] along one axis."""
    tile = min(tile, n)
    halo = min(n, tile + kernel_size - 1)
    starts = list(range(0, n - tile + 1, tile))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    t0 = torch.tensor(starts, device=device)
    h0 = (t0 - kernel_size // 2).clamp(0, n - halo)
    halo_idx = h0[:, None] + torch.arange(halo, device=device)  # [nt, halo]
    query_idx = t0[:, None] + torch.arange(tile, device=device)  # [nt, tile]
    ws = window_start(n, kernel_size, device)[query_idx]  # [nt, tile]
    mask = (halo_idx[:, None, :] >= ws[..., None]) & (halo_idx[:, None, :] < ws[..., None] + kernel_size)
    # where each position's output is read from in the [nt * tile] tile-major layout
    pos = torch.arange(n, device=device)
    ti = (pos // tile).clamp(max=len(starts) - 1)
    pick = ti * tile + (pos - t0[ti])
    return query_idx, halo_idx, mask, pick


@register("neighborhood_attention_2d", "torch")
def neighborhood_attention_blocked(q, k, v, *, kernel_size, scale, tile: int = TILE):
    b, h, hy, wx, d = q.shape
    dv = v.shape[-1]
    qy, ky, my, pick_y = _axis_plan(hy, kernel_size, tile, q.device)
    qx, kx, mx, pick_x = _axis_plan(wx, kernel_size, tile, q.device)
    nty, th = qy.shape
    ntx, tw = qx.shape
    hh, hw = ky.shape[1], kx.shape[1]
    slabs = []
    rows_per_slab = max(1, _SLAB_ELEMENTS // max(1, b * h * ntx * th * tw * hh * hw))
    for r0 in range(0, nty, rows_per_slab):
        ys = slice(r0, r0 + rows_per_slab)
        qyi, kyi, myi = qy[ys], ky[ys], my[ys]
        n = qyi.shape[0]
        # gather [B, H, n, ntx, th*tw, D] queries and [B, H, n, ntx, hh*hw, D] halo keys / values
        q_t = q[:, :, qyi[:, None, :, None], qx[None, :, None, :]].reshape(b, h, n, ntx, th * tw, d)
        k_t = k[:, :, kyi[:, None, :, None], kx[None, :, None, :]].reshape(b, h, n, ntx, hh * hw, d)
        v_t = v[:, :, kyi[:, None, :, None], kx[None, :, None, :]].reshape(b, h, n, ntx, hh * hw, dv)
        mask = (myi[:, None, :, None, :, None] & mx[None, :, None, :, None, :]).reshape(n, ntx, th * tw, hh * hw)
        scores = (q_t @ k_t.transpose(-1, -2)) * scale
        attn = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        slabs.append((attn @ v_t).reshape(b, h, n, ntx, th, tw, dv))
    tiles = torch.cat(slabs, dim=2).permute(0, 1, 2, 4, 3, 5, 6).reshape(b, h, nty * th, ntx * tw, dv)
    return tiles.index_select(2, pick_y).index_select(3, pick_x)
