"""Fast PyTorch generalized delta rule: chunked WY form (the CPU default).

Within a chunk of C steps, with Γ_t the cumulative log-decay (Γ_0 = 0) and M the incoming state [K, V], the
removal terms u_t = a_tᵀ M_{t-1} solve a unit-lower-triangular system

    (I - A_ab) U = Ã M + A_ak V,    A_xy[t, s] = Σ_k x_tk y_sk e^{Γ_{t-1,k} - Γ_{s,k}}  (s < t),

with Ã = a ⊙ e^{Γ_{t-1}}; so U = W M + U' with W = (I - A_ab)⁻¹ Ã and U' = (I - A_ab)⁻¹ A_ak V, both
independent of M and computed for all chunks at once. With inclusive A_rb, A_rk (exponent Γ_t - Γ_s, s ≤ t),
R̃ = r ⊙ e^{Γ_t}, B̌ = b ⊙ e^{Γ_C - Γ} and Ǩ = k ⊙ e^{Γ_C - Γ}:

    O     = R̃ M + A_rb U + A_rk V
    M_out = e^{Γ_C} ⊙ M + B̌ᵀ U + Ǩᵀ V.

Only the chunk-to-chunk carry is a loop, three small ops per chunk (U = U' + W M; M_out); everything else is a
few large batched matmuls. The four pair matrices come from one [2C, K] × [K, 2C] product, masked in one pass.
"""

from __future__ import annotations

import torch

from ..dispatch import register
from ..utils import can_factorise, decayed_pairs, pad_time, segmented, unit_lower_inverse

# 32: the removal / state terms cost K·V per token whatever C is, the pair terms C·K, so smaller chunks spend
# fewer FLOPs; below 32 the per-chunk carry loop's op overhead wins (CPU, K = V = 64: 32 is ≈ 25 % faster
# than 64 and 16).
CHUNK = 32
SEGMENT = 2048


@register("delta_rule", "torch")
def delta_rule_torch(r, log_w, k, v, a, b, *, initial_state, chunk: int = CHUNK):
    bsz, h, _, dk = r.shape
    m = initial_state if initial_state is not None else r.new_zeros(bsz, h, dk, v.shape[-1])
    step = lambda *x: _delta_rule_chunked(*x, chunk=chunk)  # noqa: E731
    return segmented(step, [r, log_w, k, v, a, b], m, SEGMENT)


def _delta_rule_chunked(r, log_w, k, v, a, b, m, *, chunk: int):
    bsz, h, t, dk = r.shape
    dv, c = v.shape[-1], chunk

    def chunks(x):  # [B, H, T, D] -> [B·H, N, C, D]
        x = pad_time(x, c)
        return x.reshape(bsz * h, -1, c, x.shape[-1])

    r, log_w, k, v, a, b = (chunks(x) for x in (r, log_w, k, v, a, b))
    bh, n = r.shape[:2]
    g = log_w.cumsum(2)  # Γ_t
    g_prev = g - log_w  # Γ_{t-1}
    g_last = g[:, :, -1:]
    if can_factorise(g_last):
        # e^{Γ_t - Γ_s} = e^{Γ_t - ref} e^{ref - Γ_s} around the chunk's middle: one matmul for all four pairs
        ref = g[:, :, c // 2 : c // 2 + 1]
        e_out = torch.exp(g - ref)
        e_in = torch.reciprocal(e_out)
        rows = torch.cat([a * torch.exp(g_prev - ref), r * e_out], dim=-2)  # [Ã; R̃] / e^{ref}
        cols = torch.cat([b * e_in, k * e_in], dim=-2)  # [b; k] ⊙ e^{ref - Γ}
        pairs = rows @ cols.transpose(-1, -2)  # [B·H, N, 2C, 2C]
        dec_in = rows * torch.exp(ref)  # [Ã; R̃]
        dec_out = cols * torch.exp(g_last - ref)  # [B̌; Ǩ]
    else:
        def exact(x, gx, y, strict):
            return decayed_pairs(x, gx, y, g, strict=strict, factorise=False)

        pairs = torch.cat([torch.cat([exact(a, g_prev, b, True), exact(a, g_prev, k, True)], -1),
                           torch.cat([exact(r, g, b, False), exact(r, g, k, False)], -1)], -2)
        dec_in = torch.cat([a * torch.exp(g_prev), r * torch.exp(g)], dim=-2)
        dec_out = torch.cat([b, k], dim=-2) * torch.exp(g_last - g).repeat(1, 1, 2, 1)
    ones = torch.ones(c, c, dtype=torch.bool, device=r.device)
    keep = torch.cat([ones.tril(-1), ones.tril()]).repeat(1, 2).to(pairs.dtype)  # A_a·: s < t; A_r·: s ≤ t
    pairs = pairs * keep

    def flat(x):  # [B·H, N, ...] -> [B·H·N, ...]
        return x.reshape(bh * n, *x.shape[2:])

    a_ab, a_ak, a_rb, a_rk = (flat(pairs[:, :, i:i + c, j:j + c]) for i in (0, c) for j in (0, c))
    a_dec, r_dec = flat(dec_in[:, :, :c]), flat(dec_in[:, :, c:])
    bk_dec = flat(dec_out).transpose(-1, -2)  # [B·H·N, K, 2C]
    vf = flat(v)
    inv = unit_lower_inverse(a_ab)  # (I - A_ab)⁻¹
    w_mat = (inv @ a_dec).reshape(bh, n, c, dk)
    u_mat = (inv @ (a_ak @ vf)).reshape(bh, n, c, dv)
    kv = (bk_dec[..., c:] @ vf).reshape(bh, n, dk, dv)  # Ǩᵀ V
    b_t = bk_dec[..., :c].reshape(bh, n, dk, c)  # B̌ᵀ
    decay = torch.exp(g_last).transpose(-1, -2)  # [B·H, N, K, 1]
    m = m.reshape(bh, dk, dv)
    states, removals = [], []
    for i in range(n):
        states.append(m)
        u = torch.baddbmm(u_mat[:, i], w_mat[:, i], m)  # removal terms U = U' + W M
        removals.append(u)
        m = torch.baddbmm(torch.addcmul(kv[:, i], decay[:, i], m), b_t[:, i], u)
    out = torch.baddbmm(torch.baddbmm(r_dec @ flat(torch.stack(states, 1)), a_rb, flat(torch.stack(removals, 1))),
                        a_rk, vf)
    return out.reshape(bsz, h, n * c, dv)[:, :, :t], m.reshape(bsz, h, dk, dv)
