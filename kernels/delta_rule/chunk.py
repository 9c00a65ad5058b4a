"""Fast PyTorch generalized delta rule: chunked WY form (the CPU default).

Within a chunk of C steps, with Γ_t the cumulative log-decay (Γ_0 = 0) and M_0 the incoming state [K, V],
the removal terms u_t = a_tᵀ M_{t-1} solve a unit-lower-triangular system
    (I - A_ab) U = Ã M_0 + A_ak V,    A_xy[t, s] = Σ_k x_tk y_sk e^{Γ_{t-1,k} - Γ_{s,k}}  (s < t),
with Ã = a ⊙ e^{Γ_{t-1}}. Writing U = W M_0 + U' (W, U' independent of M_0) gives, with inclusive
A_rb, A_rk (exponent Γ_t - Γ_s, s ≤ t) and R̃ = r ⊙ e^{Γ_t}:
    O   = (R̃ + A_rb W) M_0 + (A_rb U' + A_rk V)
    M_C = (diag(e^{Γ_C}) + B̌ᵀ W) M_0 + (B̌ᵀ U' + Ǩᵀ V),   B̌ = b ⊙ e^{Γ_C - Γ},  Ǩ = k ⊙ e^{Γ_C - Γ}.
Everything but the K×K state carry M_n = T_n M_{n-1} + E_n is batched over chunks.
"""

from __future__ import annotations

import torch

from ..dispatch import register
from ..utils import can_factorise, decayed_pairs, pad_time, segmented, to_chunks, unit_lower_inverse

CHUNK = 64
SEGMENT = 2048


@register("delta_rule", "torch")
def delta_rule_torch(r, log_w, k, v, a, b, *, initial_state, chunk: int = CHUNK):
    bsz, h, _, dk = r.shape
    m = initial_state if initial_state is not None else r.new_zeros(bsz, h, dk, v.shape[-1])
    step = lambda *x: _delta_rule_chunked(*x, chunk=chunk)  # noqa: E731
    return segmented(step, [r, log_w, k, v, a, b], m, SEGMENT)


def _delta_rule_chunked(r, log_w, k, v, a, b, m, *, chunk: int):
    t, dv = r.shape[2], v.shape[-1]
    r, log_w, k, v, a, b = (to_chunks(pad_time(x, chunk), chunk) for x in (r, log_w, k, v, a, b))
    g = log_w.cumsum(3)  # Γ_t, [B,H,N,C,K]
    g_prev = g - log_w  # Γ_{t-1}
    g_last = g[:, :, :, -1:]

    if can_factorise(g_last):
        # e^{Γ_t - Γ_s} = e^{Γ_t - ref} e^{ref - Γ_s}: all four pair matrices come from one [2C, K] × [K, 2C]
        # matmul, and the chunk-boundary factors from the same scaled tensors times a per-key constant.
        ref = g[..., chunk // 2 : chunk // 2 + 1, :]
        e_out = torch.exp(g - ref)
        e_in = torch.reciprocal(e_out)
        a_s, r_s = a * torch.exp(g_prev - ref), r * e_out
        b_s, k_s = b * e_in, k * e_in
        prod = torch.cat([a_s, r_s], dim=-2) @ torch.cat([b_s, k_s], dim=-2).transpose(-1, -2)
        ones = torch.ones(chunk, chunk, dtype=torch.bool, device=r.device)
        strict, incl = ~ones.tril(-1), ~ones.tril()
        a_ab = prod[..., :chunk, :chunk].masked_fill(strict, 0.0)
        a_ak = prod[..., :chunk, chunk:].masked_fill(strict, 0.0)
        a_rb = prod[..., chunk:, :chunk].masked_fill(incl, 0.0)
        a_rk = prod[..., chunk:, chunk:].masked_fill(incl, 0.0)
        e_ref, e_last = torch.exp(ref), torch.exp(g_last - ref)
        a_dec, r_dec = a_s * e_ref, r_s * e_ref  # a ⊙ e^{Γ_{t-1}}, r ⊙ e^{Γ_t}
        b_dec, k_dec = b_s * e_last, k_s * e_last  # ⊙ e^{Γ_C - Γ_t}
    else:
        a_ab = decayed_pairs(a, g_prev, b, g, strict=True, factorise=False)
        a_ak = decayed_pairs(a, g_prev, k, g, strict=True, factorise=False)
        a_rb = decayed_pairs(r, g, b, g, strict=False, factorise=False)
        a_rk = decayed_pairs(r, g, k, g, strict=False, factorise=False)
        to_last = torch.exp(g_last - g)
        a_dec, r_dec = a * torch.exp(g_prev), r * torch.exp(g)
        b_dec, k_dec = b * to_last, k * to_last

    inv = unit_lower_inverse(a_ab)  # (I - A_ab)^-1
    w_mat = inv @ a_dec
    u_prime = inv @ (a_ak @ v)

    p = r_dec + a_rb @ w_mat  # [B,H,N,C,K]
    q = a_rb @ u_prime + a_rk @ v  # [B,H,N,C,V]
    b_dec, k_dec = b_dec.transpose(-1, -2), k_dec.transpose(-1, -2)  # [B,H,N,K,C]
    trans = torch.diag_embed(torch.exp(g_last.squeeze(3))) + b_dec @ w_mat  # [B,H,N,K,K]
    inject = b_dec @ u_prime + k_dec @ v  # [B,H,N,K,V]

    prev = []
    for n in range(trans.shape[2]):
        prev.append(m)
        m = trans[:, :, n] @ m + inject[:, :, n]
    out = p @ torch.stack(prev, dim=2) + q
    return out.reshape(*out.shape[:2], -1, dv)[:, :, :t], m
