"""The RWKV-7 generalized delta rule (diagonal-plus-low-rank state transition), used by CrossWKV."""

from __future__ import annotations

import torch

from .. import dispatch
from ..triton_utils import input_caster, register_lazy
from ..utils import compute_dtype
from . import chunk, naive, native  # noqa: F401  (register the backends)

# The Triton kernel registers only when triton is installed, and imports it at its first call.
register_lazy("delta_rule", "kernels.delta_rule.triton", "delta_rule_triton")


def delta_rule(
    r: torch.Tensor,
    log_w: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    return_state: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Generalized delta rule over ``[B, H, T, K]`` tensors (``v``: ``[B, H, T, V]``).

    In the official RWKV-7 layout (state S ∈ R^{V×K})
        S_t = S_{t-1} (diag(w_t) + a_t b_tᵀ) + v_t k_tᵀ,    o_t = S_t r_t,    w_t = exp(log_w_t).
    The state is stored transposed, ``[B, H, K, V]`` (the layout of every op in ``kernels``), so
    M_t = diag(w_t) M_{t-1} + b_t (a_tᵀ M_{t-1}) + k_t v_tᵀ and o_t = M_tᵀ r_t.

    ``log_w`` is the **log** of the per-key decay (≤ 0; RWKV-7's −e^{−0.5}·σ(·)), not the raw w of the
    official kernel (decay = exp(−exp(w))). RWKV-7 uses a = −κ̂ and b = κ̂ ⊙ a_iclr. Output has r's dtype;
    the state is float32 (float64 for float64 inputs).
    """
    named = {"r": r, "log_w": log_w, "k": k, "a": a, "b": b}
    for name, x in {**named, "v": v}.items():
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point 4-D tensor [B, H, T, D]")
    for name, x in named.items():
        if x.shape != r.shape:
            raise ValueError(f"{name} must have r's shape [B, H, T, K] = {tuple(r.shape)}, got {tuple(x.shape)}")
    if v.shape[:3] != r.shape[:3]:
        raise ValueError(f"v must be [B, H, T, V] with r's B, H, T {tuple(r.shape[:3])}, got {tuple(v.shape)}")
    lo, hi = torch.aminmax(log_w.detach())  # one pass; NaN propagates into both
    if not torch.isfinite(lo) or torch.isnan(hi):
        raise ValueError("log_w must be finite")
    if hi > 0:
        raise ValueError("log_w must be ≤ 0: it is the log of the decay (pass log-decay, not RWKV's raw w)")
    bsz, h, _, dk = r.shape
    if initial_state is not None and tuple(initial_state.shape) != (bsz, h, dk, v.shape[-1]):
        raise ValueError(f"initial_state must be [B, H, K, V] = {(bsz, h, dk, v.shape[-1])}, "
                         f"got {tuple(initial_state.shape)}")
    impl = dispatch.select("delta_rule", r.device)
    cast = input_caster(impl, compute_dtype(r, k, v))
    args = [cast(x) for x in (r, log_w, k, v, a, b)]
    s0 = cast(initial_state) if initial_state is not None else None
    out, state = impl(*args, initial_state=s0)
    out = out.to(r.dtype)
    return (out, state) if return_state else out


__all__ = ["delta_rule"]
