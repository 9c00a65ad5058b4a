"""Fast PyTorch linear attention: chunked matmul form (the CPU default).

Causal: split T into chunks of C. Inside a chunk the output is a masked C×C product; across chunks a state
[B, H, K, V] is carried. With cumulative in-chunk log-gates G (fp32):
    O_n = ((Q Kᵀ) ⊙ exp(G_t - G_s) ⊙ M) V  +  (Q ⊙ e^{G}) S_{n-1}
    S_n = e^{G_C} ⊙ S_{n-1} + (K ⊙ e^{G_C - G})ᵀ V
All chunk-local products are batched over chunks; only the carry S_n = d_n S_{n-1} + ΔS_n is a loop
(a cumulative sum when there is no decay). Block-causal: S accumulates block by block and every query of a
block reads the state that includes its own block.
"""

from __future__ import annotations

import torch

from ..dispatch import register
from ..utils import can_factorise, decayed_pairs, pad_time, records_graph, segmented, to_chunks

CHUNK = 64
SEGMENT = 2048


def _carry(s0: torch.Tensor, decay: torch.Tensor | None, ds: torch.Tensor):
    """States before each chunk and after the last.

    s0 [B,H,K,V]; decay None or [B,H,N] / [B,H,N,K]; ds [B,H,N,K,V]."""
    if decay is None:
        incl = ds.cumsum(2) + s0[:, :, None]
        return torch.cat([s0[:, :, None], incl[:, :, :-1]], dim=2), incl[:, :, -1]
    if decay.ndim == 3:
        decay = decay[..., None]
    prev = []
    state = s0
    for n in range(ds.shape[2]):
        prev.append(state)
        state = decay[:, :, n, :, None] * state + ds[:, :, n]
    return torch.stack(prev, dim=2), state


def causal_chunked(q, k, v, log_decay, s0, chunk: int = CHUNK):
    b, h, t, dk = q.shape
    q, k, v = (to_chunks(pad_time(x, chunk), chunk) for x in (q, k, v))
    if log_decay is None:
        scores = (q @ k.transpose(-1, -2)).tril_()  # in place: matmul's backward does not need its output
        ds = k.transpose(-1, -2) @ v
        prev, final = _carry(s0, None, ds)
        out = torch.baddbmm((q @ prev).flatten(0, 2), scores.flatten(0, 2), v.flatten(0, 2))  # q S + scores v
        out = out.view(*q.shape[:-1], v.shape[-1])
    else:
        g = to_chunks(pad_time(log_decay, chunk), chunk).cumsum(3)  # [B,H,N,C] or [B,H,N,C,K]
        last = g[:, :, :, -1:]
        if g.ndim == 4:  # one scalar gate per head and step: exact C×C exponent, no overflow possible
            expo = (g[..., :, None] - g[..., None, :]).masked_fill(
                ~torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril(), float("-inf")
            )
            scores = (q @ k.transpose(-1, -2)) * torch.exp(expo)
            q_dec, k_dec = q * torch.exp(g)[..., None], k * torch.exp(last - g)[..., None]
        else:
            scores = decayed_pairs(q, g, k, g, strict=False, factorise=can_factorise(last))
            q_dec, k_dec = q * torch.exp(g), k * torch.exp(last - g)
        ds = k_dec.transpose(-1, -2) @ v
        prev, final = _carry(s0, torch.exp(last.squeeze(3)), ds)
        out = scores @ v + q_dec @ prev
    return out.reshape(b, h, -1, v.shape[-1])[:, :, :t], final


# Tokens per output piece of a large block when no graph is recorded (see block_causal).
BLOCK_PIECE = 2048


def block_causal(q, k, v, block_sizes, s0):
    """Block-causal linear attention: block j reads the state after blocks 0..j (itself included).

    When autograd records the call, each block's output is a product and the blocks are concatenated. Without a
    graph (sampling) the outputs are written straight into one preallocated tensor, ``BLOCK_PIECE`` tokens at a
    time, so a large block makes neither a block-sized temporary nor a concatenated copy: at 16k–64k tokens those
    were page-faulted fresh memory, the part of the time that grew faster than T."""
    recorded = records_graph(q, k, v, s0)
    state, start = s0, 0
    out = None if recorded else q.new_empty(*q.shape[:3], v.shape[-1])
    outs = []
    for size in block_sizes:
        sl = slice(start, start + size)
        state = state + k[:, :, sl].transpose(-1, -2) @ v[:, :, sl]
        if recorded:
            outs.append(q[:, :, sl] @ state)
        else:
            for p in range(start, start + size, BLOCK_PIECE):
                piece = slice(p, min(p + BLOCK_PIECE, start + size))
                torch.matmul(q[:, :, piece], state, out=out[:, :, piece])
        start += size
    return (torch.cat(outs, dim=2) if recorded else out), state


# Tokens per piece of the fused non-causal ReLU form: [B·H, 1024, 64] float32 pieces are 2 MB each (B = 1, H = 8),
# so the ReLU'd features and the two products stay in cache instead of making T-sized temporaries.
NON_CAUSAL_PIECE = 1024


def relu_normalized(q, k, v, *, eps: float, initial_state):
    """SANA's form in two passes over pieces of time: S = Σ relu(k)ᵀ [v, 1] (the key sum as the last column),
    then o = (relu(q) S[:, :V]) / (relu(q) S[:, V] + eps) piece by piece into one output. Equal to the generic
    path (ReLU, a ones column, one product, a division, each a T-sized temporary), with every temporary at
    most ``NON_CAUSAL_PIECE`` tokens long, so time stays linear past the cache size. Returns (o, S) with S
    ``[B, H, K, V + 1]``."""
    b, h, t, dk = q.shape
    dv = v.shape[-1]
    kv = k.new_zeros(b, h, dk, dv) if initial_state is None else initial_state[..., :dv]
    z = k.new_zeros(b, h, dk) if initial_state is None else initial_state[..., dv]
    pieces = [slice(s, s + NON_CAUSAL_PIECE) for s in range(0, t, NON_CAUSAL_PIECE)]
    for sl in pieces:
        kf = k[:, :, sl].relu()
        kv = kv + kf.transpose(-1, -2) @ v[:, :, sl]
        z = z + kf.sum(2)
    if records_graph(q, k, v, initial_state):
        outs = []
        for sl in pieces:
            qf = q[:, :, sl].relu()
            outs.append((qf @ kv) / ((qf @ z.unsqueeze(-1)) + eps))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
    else:  # sampling: each piece written in place into one output, no concatenated copy
        out = q.new_empty(b, h, t, dv)
        for sl in pieces:
            qf = q[:, :, sl].relu()
            torch.matmul(qf, kv, out=out[:, :, sl])
            out[:, :, sl].div_((qf @ z.unsqueeze(-1)).add_(eps))
    return out, torch.cat([kv, z.unsqueeze(-1)], dim=-1)


@register("linear_attention", "torch")
def linear_attention_torch(q, k, v, *, causal, block_sizes, log_decay, initial_state):
    b, h, _, dk = q.shape
    s0 = initial_state if initial_state is not None else q.new_zeros(b, h, dk, v.shape[-1])
    if causal:
        tensors = [q, k, v] + ([log_decay] if log_decay is not None else [])
        step = (lambda q, k, v, s: causal_chunked(q, k, v, None, s)) if log_decay is None else (
            lambda q, k, v, g, s: causal_chunked(q, k, v, g, s))
        return segmented(step, tensors, s0, SEGMENT)
    if block_sizes is not None:
        return block_causal(q, k, v, block_sizes, s0)
    state = s0 + k.transpose(-1, -2) @ v
    return q @ state, state


linear_attention_torch.fused_relu_normalized = relu_normalized
