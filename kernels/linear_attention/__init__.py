"""Linear attention: one op for the non-causal SANA form, causal chunked and decayed (SSD) attention, and
block-causal attention over variable-size blocks (VAR scales)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from .. import dispatch
from ..triton_utils import input_caster, register_lazy
from ..utils import compute_dtype
from . import chunk, naive  # noqa: F401  (register the backends)

# The Triton kernels register only when triton is installed, and import it at their first call.
register_lazy("linear_attention", "kernels.linear_attention.triton", "linear_attention_triton",
              fused_relu_normalized="linear_attention_relu_normalized_triton")

FeatureMap = str | Callable[[torch.Tensor], torch.Tensor] | None

_FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "relu": F.relu,
    "elu+1": lambda x: F.elu(x) + 1.0,
}


def _feature_map(feature_map: FeatureMap) -> Callable[[torch.Tensor], torch.Tensor]:
    if feature_map is None:
        return _FEATURE_MAPS["identity"]
    if callable(feature_map):
        return feature_map
    if feature_map not in _FEATURE_MAPS:
        raise ValueError(f"feature_map must be None, a callable or one of {sorted(_FEATURE_MAPS)}, "
                         f"got {feature_map!r}")
    return _FEATURE_MAPS[feature_map]


def _check(q, k, v, causal, block_sizes, log_decay, initial_state, normalize):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"{name} must be a 4-D tensor [B, H, T, D], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape [B, H, T, K], got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, T, V] with the B, H, T of q {tuple(q.shape[:3])}, "
                         f"got {tuple(v.shape)}")
    b, h, t, dk = q.shape
    if block_sizes is not None:
        if causal:
            raise ValueError("block_sizes selects block-causal attention; pass causal=False with it")
        if any(int(s) != s or s < 1 for s in block_sizes) or sum(block_sizes) != t:
            raise ValueError(f"block_sizes must be positive integers summing to T={t}, got {list(block_sizes)}")
    if log_decay is not None:
        if not causal:
            raise ValueError("log_decay needs causal=True (a decay has no meaning without an order)")
        if log_decay.shape not in ((b, h, t), (b, h, t, dk)):
            raise ValueError(f"log_decay must be [B, H, T] (per head) or [B, H, T, K] (per key) = "
                             f"{(b, h, t)} or {(b, h, t, dk)}, got {tuple(log_decay.shape)}")
        lo, hi = torch.aminmax(log_decay.detach())  # one pass; NaN propagates into both
        if not torch.isfinite(lo) or torch.isnan(hi):
            raise ValueError("log_decay must be finite")
        if hi > 0:
            raise ValueError("log_decay must be ≤ 0 (it is the log of a decay factor in (0, 1])")
    if initial_state is not None:
        expected = (b, h, dk, v.shape[-1] + (1 if normalize else 0))
        if tuple(initial_state.shape) != expected:
            raise ValueError(f"initial_state must be [B, H, K, V{' + 1' if normalize else ''}] = {expected}, "
                             f"got {tuple(initial_state.shape)}")


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    block_sizes: Sequence[int] | None = None,
    log_decay: torch.Tensor | None = None,
    feature_map: FeatureMap = None,
    normalize: bool = False,
    eps: float = 1e-6,
    initial_state: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Linear attention over ``[B, H, T, D]`` tensors with float32 (or float64) accumulation.

    Modes:
      * non-causal (default): S = Σ_n φ(k_n) v_nᵀ, o_i = φ(q_i)ᵀ S — the SANA form with
        ``feature_map="relu", normalize=True``;
      * ``causal=True``: S_t = diag(exp(g_t)) S_{t-1} + φ(k_t) v_tᵀ, o_t = S_tᵀ φ(q_t), computed in chunks.
        ``log_decay`` g (≤ 0) is per head ``[B, H, T]`` or per key ``[B, H, T, K]``; with q = C, k = B and
        v = Δ·x this is the SSD / Mamba-2 selective scan;
      * ``block_sizes=[n_1, n_2, ...]`` (summing to T): block-causal, bidirectional inside a block, each block
        sees every earlier block (VAR's scales).

    ``normalize=True`` divides by the normaliser φ(q_i)·z_i + eps, where z is the (decayed, masked) key sum;
    it is carried as an extra state column, so states are then ``[B, H, K, V + 1]``.
    ``initial_state`` ([B, H, K, V(+1)]) is added to the state before the first token; with
    ``return_state=True`` the final state is returned too, so a sequence can be processed in pieces.
    Output has q's dtype; states are float32 (float64 for float64 inputs).
    """
    if block_sizes is not None:
        block_sizes = [int(s) for s in block_sizes]
    _check(q, k, v, causal, block_sizes, log_decay, initial_state, normalize)
    phi = _feature_map(feature_map)
    impl = dispatch.select("linear_attention", q.device)
    cast = input_caster(impl, compute_dtype(q, k, v))
    s0 = cast(initial_state) if initial_state is not None else None
    fused = getattr(impl, "fused_relu_normalized", None)
    if fused is not None and feature_map == "relu" and normalize and not causal and block_sizes is None:
        # SANA's form: the backend applies the ReLU, the normaliser column and the division in its kernels
        out, state = fused(cast(q), cast(k), cast(v), eps=eps, initial_state=s0)
        out = out.to(q.dtype)
        return (out, state) if return_state else out
    qf, kf, vf = phi(cast(q)), phi(cast(k)), cast(v)
    if normalize:
        vf = torch.cat([vf, torch.ones_like(vf[..., :1])], dim=-1)
    g = cast(log_decay) if log_decay is not None else None
    out, state = impl(qf, kf, vf, causal=causal, block_sizes=block_sizes, log_decay=g, initial_state=s0)
    if normalize:
        out = out[..., :-1] / (out[..., -1:] + eps)
    out = out.to(q.dtype)
    return (out, state) if return_state else out


__all__ = ["linear_attention"]
