"""Fast PyTorch generalized delta rule: chunked WY form (the CPU default).

Within a chunk of C steps, with Γ_t the cumulative log-decay (Γ_0 = 0) and M the incoming state [K, V], the
removal terms u_t = a_tᵀ M_{t-1} solve a unit-lower-triangular system

    (I - A_ab) U = Ã M + A_ak V,    A_xy[t, s] = Σ_k x_tk y_sk e^{Γ_{t-1,k} - Γ_{s,k}}  (s < t),

with Ã = a ⊙ e^{Γ_{t-1}}; so U = W M + X V with W = (I - A_ab)⁻¹ Ã and X = (I - A_ab)⁻¹ A_ak, both independent
of M. With inclusive A_rb, A_rk (exponent Γ_t - Γ_s, s ≤ t), R̃ = r ⊙ e^{Γ_t}, B̌ = b ⊙ e^{Γ_C - Γ} and
Ǩ = k ⊙ e^{Γ_C - Γ}, substituting U gives

    O     = (R̃ + A_rb W) M + (A_rk + A_rb X) V
    M_out = (diag(e^{Γ_C}) + B̌ᵀ W) M + (Ǩᵀ + B̌ᵀ X) V  =  P M + Y.

Everything but the chunk-to-chunk carry M ← P M + Y (one ``baddbmm`` per chunk) is a batched matmul over all
chunks at once; U itself is never formed. Pair matrices use e^{Γ_t - Γ_s} = e^{Γ_t} · e^{-Γ_s}, safe while the
chunk's decay span keeps e^{±Γ} in float32 range (``can_factorise``); otherwise they are formed exactly.
"""

from __future__ import annotations

import torch

from ..dispatch import register
from ..utils import can_factorise, decayed_pairs, pad_time, segmented

# 32: pair and solve terms cost ∝ C per token, the state terms (P, Y, the carry) ∝ K² per token whatever C
# is, and the carry loop's op overhead ∝ 1 / C; on this CPU (K = V = 64) 32 beats 16 and 64.
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

    def chunks(x):  # [B, H, T, D] -> [B·H·N, C, D]
        x = pad_time(x, c)
        return x.reshape(-1, c, x.shape[-1])

    r, log_w, k, v, a, b = (chunks(x) for x in (r, log_w, k, v, a, b))
    bn, bh = r.shape[0], bsz * h
    n = bn // bh
    lower = torch.ones(c, c, dtype=r.dtype, device=r.device).tril()
    g = torch.matmul(lower, log_w)  # Γ_t; a matmul is ~2× faster than cumsum over this dim on the CPU
    g_last = g[:, -1:]
    e_g = torch.exp(g)
    e_last = e_g[:, -1:]
    e_prev = torch.cat([torch.ones_like(e_last), e_g[:, :-1]], 1)  # e^{Γ_{t-1}}
    a_dec, r_dec = a * e_prev, r * e_g  # Ã, R̃
    if can_factorise(g_last):
        e_inv = torch.exp(-g)  # not 1 / e_g: its backward would divide by e_g², which underflows
        b_hat, k_hat = b * e_inv, k * e_inv  # b ⊙ e^{-Γ}, k ⊙ e^{-Γ}
        a_ab, a_ak = a_dec @ b_hat.transpose(1, 2), a_dec @ k_hat.transpose(1, 2)
        a_rb, a_rk = r_dec @ b_hat.transpose(1, 2), r_dec @ k_hat.transpose(1, 2)
        b_dec, k_dec = b_hat * e_last, k_hat * e_last
    else:
        g_prev = g - log_w

        def exact(x, gx, y, strict):
            return decayed_pairs(x, gx, y, g, strict=strict, factorise=False)

        a_ab, a_ak = exact(a, g_prev, b, True), exact(a, g_prev, k, True)
        a_rb, a_rk = exact(r, g, b, False), exact(r, g, k, False)
        tail = torch.exp(g_last - g)
        b_dec, k_dec = b * tail, k * tail
    a_ab, a_ak, a_rb, a_rk = a_ab.tril(-1), a_ak.tril(-1), a_rb.tril(), a_rk.tril()
    eye = torch.eye(c, dtype=r.dtype, device=r.device)
    inv = torch.linalg.solve_triangular(eye - a_ab, eye.expand(bn, c, c), upper=False, unitriangular=True)
    w_mat, x_mat = inv @ a_dec, inv @ a_ak  # U = W M + X V
    b_t = b_dec.transpose(1, 2)
    trans = b_t @ w_mat  # P = diag(e^{Γ_C}) + B̌ᵀ W
    trans.diagonal(dim1=-2, dim2=-1).add_(e_last[:, 0])
    inject = torch.baddbmm(k_dec, x_mat.transpose(1, 2), b_dec).transpose(1, 2) @ v  # Y = (Ǩ + Xᵀ B̌)ᵀ V
    read_state = torch.baddbmm(r_dec, a_rb, w_mat)  # R̃ + A_rb W
    read_values = torch.baddbmm(a_rk, a_rb, x_mat)  # A_rk + A_rb X
    trans = trans.reshape(bh, n, dk, dk).unbind(1)
    inject = inject.reshape(bh, n, dk, dv).unbind(1)
    m = m.reshape(bh, dk, dv)
    states = []
    for i in range(n):
        states.append(m)
        m = torch.baddbmm(inject[i], trans[i], m)
    states = torch.stack(states, 1).reshape(bn, dk, dv)
    out = torch.baddbmm(read_values @ v, read_state, states)
    return out.reshape(bsz, h, n * c, dv)[:, :, :t], m.reshape(bsz, h, dk, dv)
