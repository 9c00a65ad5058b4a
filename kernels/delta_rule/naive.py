"""Naive generalized delta rule (RWKV-7 WKV): a step loop, for tests only.

Official layout, state S [V, K]:  S_t = S_{t-1} (diag(w_t) + a_t b_tᵀ) + v_t k_tᵀ,  o_t = S_t r_t.
Stored here transposed, M = Sᵀ [B, H, K, V]:
    M_t = diag(w_t) M_{t-1} + b_t (a_tᵀ M_{t-1}) + k_t v_tᵀ,   o_t = M_tᵀ r_t,   w_t = exp(log_w_t).
"""

from __future__ import annotations

import torch

from ..dispatch import register


@register("delta_rule", "naive")
def delta_rule_naive(r, log_w, k, v, a, b, *, initial_state):
    bsz, h, t, dk = r.shape
    m = initial_state if initial_state is not None else r.new_zeros(bsz, h, dk, v.shape[-1])
    outs = []
    for i in range(t):
        a_m = torch.einsum("bhk,bhkv->bhv", a[:, :, i], m)
        m = (torch.exp(log_w[:, :, i])[..., None] * m + b[:, :, i, :, None] * a_m[:, :, None, :]
             + k[:, :, i, :, None] * v[:, :, i, None, :])
        outs.append(torch.einsum("bhk,bhkv->bhv", r[:, :, i], m))
    return torch.stack(outs, dim=2), m
