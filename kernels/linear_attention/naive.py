"""Naive linear attention: the equations written out, for tests only.

Causal (optionally decayed) attention is a step loop over time,
    S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ,   o_t = S_tᵀ q_t,
non-causal and block-causal attention are dense T×T products with the mask
(query i sees key j iff j's block ≤ i's block). States are [B, H, K, V].
"""

from __future__ import annotations

import torch

from ..dispatch import register


def block_mask(block_sizes: list[int], device: torch.device) -> torch.Tensor:
    """[T, T] bool: query i may attend key j iff block(j) ≤ block(i)."""
    ids = torch.repeat_interleave(torch.arange(len(block_sizes), device=device),
                                  torch.tensor(block_sizes, device=device))
    return ids[None, :] <= ids[:, None]


@register("linear_attention", "naive")
def linear_attention_naive(q, k, v, *, causal, block_sizes, log_decay, initial_state):
    b, h, t, dk = q.shape
    s0 = initial_state if initial_state is not None else q.new_zeros(b, h, dk, v.shape[-1])
    if causal:
        state, outs = s0, []
        for i in range(t):
            if log_decay is not None:
                g = log_decay[:, :, i]
                decay = torch.exp(g)[..., None, None] if g.ndim == 2 else torch.exp(g)[..., None]
                state = decay * state
            state = state + k[:, :, i, :, None] * v[:, :, i, None, :]
            outs.append(torch.einsum("bhk,bhkv->bhv", q[:, :, i], state))
        return torch.stack(outs, dim=2), state
    scores = q @ k.transpose(-1, -2)
    if block_sizes is not None:
        scores = scores.masked_fill(~block_mask(block_sizes, q.device), 0.0)
    out = scores @ v + q @ s0
    return out, s0 + k.transpose(-1, -2) @ v
