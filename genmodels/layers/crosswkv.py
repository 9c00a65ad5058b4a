"""CrossWKV: cross-attention through the RWKV-7 WKV state (the conditioning layer every backbone shares).

The text tokens are written into the generalized-delta-rule state with RWKV-7's time-mix parametrisation,
then every image token reads that state with its receptance, all in parallel (no order over pixels):

  text side (per layer, per prompt):  token shift xx = x_{t-1} − x_t, x_* = x + xx ⊙ μ_*
      k = W_k x_k,  v = W_v x_v,
      log-decay  log w = −e^{−1/2} σ(w0 + tanh(x_w A_w) B_w)          ∈ (−0.61, 0)
      in-context rate  α = σ(a0 + x_a A_a B_a)
      removal key κ̂ = normalize(k ⊙ k_k) per head,  write key k̃ = k ⊙ (1 + (α − 1) ⊙ k_a)
      S_t = S_{t−1}(diag(w_t) − κ̂_t (α_t ⊙ κ̂_t)ᵀ) + v_t k̃_tᵀ        (``kernels.delta_rule`` with a = −κ̂, b = κ̂ ⊙ α)
  image side:  r = W_r x,  o_i = S r_i  (+ bonus (r_i · (k_i ⊙ ρ)) v_i from the token's own k = W_k x, v = W_v x),
      y = GroupNorm_H(o) ⊙ g,  g = σ(x G1) G2,  out = W_o y  (W_o zero-initialised).

The absorbed state depends only on the text, so it can be computed once per prompt (``encode_context``) and
reused at every denoising step; a padded text token writes nothing (k = v = 0, no decay, no removal).

``mode="joint"`` is the single-pass variant: text and image tokens form one sequence through the recurrence
(image tokens both write and read, in scan order). ``mode="softmax"`` is plain softmax cross-attention, the
baseline. This is our design (the CrossWKV paper ships no code); see the reference sheet.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kernels import delta_rule

from .params import zero_init

MODES = ("crosswkv", "joint", "softmax")


def lora_rank(width: int, factor: float) -> int:
    """RWKV-7's LoRA sizes: round(factor·√C / 32)·32, at least 32."""
    return max(32, int(round(factor * math.sqrt(width) / 32)) * 32)


def token_shift(x: torch.Tensor) -> torch.Tensor:
    """x_{t−1} − x_t along dim 1 with x_{−1} = 0: ``[B, L, C]``."""
    return F.pad(x, (0, 0, 1, -1)) - x


class LoRA(nn.Module):
    """x ↦ (act(x A)) B with A zero-initialised (starts as a no-op) and B orthogonal × 0.1 (RWKV-7's init)."""

    def __init__(self, dim: int, rank: int, out: int | None = None, activation: str | None = "tanh"):
        super().__init__()
        self.down = nn.Linear(dim, rank, bias=False)
        self.up = nn.Linear(rank, out or dim, bias=False)
        self.activation = activation
        nn.init.zeros_(self.down.weight)
        nn.init.orthogonal_(self.up.weight, gain=0.1)

    def extra_repr(self) -> str:
        return f"rank={self.down.out_features}, activation={self.activation}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.down(x)
        if self.activation == "tanh":
            h = torch.tanh(h)
        elif self.activation == "sigmoid":
            h = torch.sigmoid(h)
        return self.up(h)


class CrossWKV(nn.Module):
    """Cross-attention from ``x`` ``[B, N, dim]`` (image tokens) to ``context`` ``[B, L, context_dim]`` (text).

    ``head_dim`` defaults to 64 as in RWKV-7 (smaller for tiny models); ``layer_id`` / ``n_layers`` set the
    depth-dependent inits. ``mode`` is ``crosswkv`` (absorb, then read in parallel), ``joint`` or ``softmax``.
    """

    def __init__(self, dim: int, context_dim: int, *, head_dim: int = 64, mode: str = "crosswkv",
                 layer_id: int = 0, n_layers: int = 1):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if dim % head_dim:
            raise ValueError(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.dim, self.context_dim, self.head_dim, self.mode = dim, context_dim, head_dim, mode
        self.n_heads = dim // head_dim
        self.ctx_in = nn.Linear(context_dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = zero_init(nn.Linear(dim, dim, bias=False))
        if mode == "softmax":
            return
        ratio0 = layer_id / max(n_layers - 1, 1)
        ratio1 = 1.0 - layer_id / n_layers
        n = torch.arange(dim, dtype=torch.float32) / dim
        linear = torch.arange(dim, dtype=torch.float32) / max(dim - 1, 1) - 0.5
        zigzag = ((torch.arange(dim) % head_dim) - (head_dim - 1) / 2) / ((head_dim - 1) / 2 or 1)
        zigzag = zigzag * zigzag.abs()
        self.mu = nn.Parameter(torch.stack([1.0 - n ** (p * ratio1) for p in (0.2, 0.9, 0.7, 0.7, 0.9)]))  # r w k v a
        self.w0 = nn.Parameter(-6 + 6 * (torch.arange(dim) / max(dim - 1, 1)) ** (1 + ratio0**0.3) + 0.5
                               + 2.5 * zigzag)
        self.a0 = nn.Parameter(-0.19 + 0.3 * zigzag + 0.4 * linear)
        self.k_k = nn.Parameter(torch.full((dim,), 0.71) - 0.1 * linear)
        self.k_a = nn.Parameter(torch.full((dim,), 1.02))
        self.r_k = nn.Parameter(torch.full((self.n_heads, head_dim), -0.04))
        self.decay_lora = LoRA(dim, lora_rank(dim, 2.5))
        self.iclr_lora = LoRA(dim, lora_rank(dim, 2.5), activation=None)
        self.gate_lora = LoRA(dim, lora_rank(dim, 5.0), activation="sigmoid")
        self.norm = nn.GroupNorm(self.n_heads, dim, eps=head_dim * 1e-5)
        with torch.no_grad():
            self.norm.weight.fill_(((layer_id + 1) / n_layers) ** 0.7)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}, heads={self.n_heads}, mode={self.mode!r}"

    # RWKV-7 projections

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, dim] → [B, H, L, head_dim]."""
        return x.unflatten(-1, (self.n_heads, self.head_dim)).transpose(1, 2)

    def _writes(self, x: torch.Tensor, mask: torch.Tensor | None):
        """Delta-rule inputs (log_w, k̃, v, a, b) of tokens ``x`` [B, L, dim]; masked-out tokens write nothing
        and are zeros to their neighbour's token shift."""
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        xx = token_shift(x)
        _, x_w, x_k, x_v, x_a = (x + xx * mu for mu in self.mu)
        k, v = self.key(x_k), self.value(x_v)
        log_w = -math.exp(-0.5) * torch.sigmoid(self.w0 + self.decay_lora(x_w))
        iclr = torch.sigmoid(self.a0 + self.iclr_lora(x_a))
        kappa = F.normalize(self._heads(k * self.k_k), dim=-1)
        k_tilde = k * (1 + (iclr - 1) * self.k_a)
        if mask is not None:
            keep = mask[..., None].to(x.dtype)
            k_tilde, v, log_w = k_tilde * keep, v * keep, log_w * keep
            kappa = kappa * self._heads(keep.expand_as(k))
        iclr_h = self._heads(iclr)
        return self._heads(log_w), self._heads(k_tilde), self._heads(v), -kappa, kappa * iclr_h

    def _check_context(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None):
        if context.ndim != 3 or context.shape[0] != x.shape[0] or context.shape[-1] != self.context_dim:
            raise ValueError(f"context must be [B={x.shape[0]}, L, {self.context_dim}], got {tuple(context.shape)}")
        if mask is not None:
            if mask.shape != context.shape[:2]:
                raise ValueError(f"context_mask must be [B, L] = {tuple(context.shape[:2])}, got {tuple(mask.shape)}")
            if not mask.any(1).all():
                raise ValueError("every context row needs at least one real token (use a null/empty-prompt embedding)")

    def encode_context(self, context: torch.Tensor, context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The WKV state after absorbing the text: ``[B, H, head_dim, head_dim]`` float32 (crosswkv mode)."""
        if self.mode != "crosswkv":
            raise ValueError("encode_context is only defined for mode='crosswkv'")
        c = self.ctx_in(context)
        log_w, k, v, a, b = self._writes(c, context_mask)
        _, state = delta_rule(torch.zeros_like(k), log_w, k, v, a, b, return_state=True)
        return state

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, state: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` [B, N, dim] attends to ``context`` [B, L, context_dim] (``context_mask`` [B, L], True = real
        token). In crosswkv mode a precomputed ``state`` from :meth:`encode_context` may replace ``context``."""
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be [B, N, {self.dim}], got {tuple(x.shape)}")
        if state is None:
            if context is None:
                raise ValueError("give context (or, in crosswkv mode, a state from encode_context)")
            self._check_context(x, context, context_mask)
        if self.mode == "softmax":
            return self._softmax(x, context, context_mask)
        if self.mode == "joint":
            return self._joint(x, context, context_mask)
        if state is None:
            state = self.encode_context(context, context_mask)
        # Image tokens have no order here, so no token shift: each reads the same state in parallel.
        r, k_img, v_img = (self._heads(proj(x)) for proj in (self.receptance, self.key, self.value))
        o = torch.einsum("bhnk,bhkv->bhnv", r.float(), state.float()).to(x.dtype)
        return self._output(x, o, r, k_img, v_img)

    def _output(self, x, o, r, k, v) -> torch.Tensor:
        """GroupNorm per head, bonus term, gate, zero-initialised output projection."""
        bonus = (r * k * self.r_k[:, None, :]).sum(-1, keepdim=True) * v
        y = o.transpose(1, 2).flatten(2)  # [B, N, dim]
        y = self.norm(y.reshape(-1, self.dim)).reshape(y.shape)  # per token, one group per head
        y = y + bonus.transpose(1, 2).flatten(2)
        return self.out(y * self.gate_lora(x))

    def _joint(self, x, context, context_mask) -> torch.Tensor:
        """Text then image tokens through one recurrence; the image tokens' outputs are kept."""
        c = self.ctx_in(context)
        mask = None
        if context_mask is not None:
            # padding first, so the last real text token is the first image token's shift partner
            order = torch.argsort(context_mask.to(torch.int8), dim=1, stable=True)
            c = torch.gather(c, 1, order[..., None].expand_as(c))
            context_mask = torch.gather(context_mask, 1, order)
            mask = torch.cat([context_mask, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)], dim=1)
        seq = torch.cat([c, x], dim=1)
        log_w, k, v, a, b = self._writes(seq, mask)
        r = self._heads(self.receptance(seq + token_shift(seq) * self.mu[0]))
        o = delta_rule(r, log_w, k, v, a, b)
        n_ctx = context.shape[1]
        return self._output(x, o[:, :, n_ctx:], r[:, :, n_ctx:], k[:, :, n_ctx:], v[:, :, n_ctx:])

    def _softmax(self, x, context, context_mask) -> torch.Tensor:
        c = self.ctx_in(context)
        q, k, v = self._heads(self.receptance(x)), self._heads(self.key(c)), self._heads(self.value(c))
        attn_mask = None if context_mask is None else context_mask[:, None, None, :]
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(o.transpose(1, 2).flatten(2))
