"""2-D neighborhood attention with NATTEN's clamped-window semantics (HDiT's fine levels)."""

from __future__ import annotations

import torch

from .. import dispatch
from ..triton_utils import input_caster, register_lazy
from ..utils import compute_dtype
from . import blocked, naive  # noqa: F401  (register the backends)

# The Triton kernel registers only when triton is installed, and imports it at its first call.
register_lazy("neighborhood_attention_2d", "kernels.neighborhood.triton", "neighborhood_attention_triton")


def neighborhood_attention_2d(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel_size: int, *, scale: float | None = None
) -> torch.Tensor:
    """Softmax attention of every pixel over the kernel_size × kernel_size window around it.

    Shapes ``[B, H, Hgt, Wid, D]`` (v may have its own last dim). As in NATTEN, the window is shifted inward
    at the borders, so every query sees exactly k² keys and nothing is padded. ``scale`` defaults to D^-1/2.
    Softmax and accumulation run in float32 (float64 for float64 inputs); the output has q's dtype.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, torch.Tensor) or x.ndim != 5 or not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point 5-D tensor [B, H, Hgt, Wid, D]")
    if q.shape != k.shape or v.shape[:4] != q.shape[:4]:
        raise ValueError(f"q, k must match and v must share [B, H, Hgt, Wid]: got q {tuple(q.shape)}, "
                         f"k {tuple(k.shape)}, v {tuple(v.shape)}")
    if int(kernel_size) != kernel_size or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    hy, wx = q.shape[2], q.shape[3]
    if kernel_size > min(hy, wx):
        raise ValueError(f"kernel_size {kernel_size} is larger than the {hy}×{wx} map; every side must be "
                         f"≥ kernel_size")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    impl = dispatch.select("neighborhood_attention_2d", q.device)
    cast = input_caster(impl, compute_dtype(q, k, v))
    out = impl(cast(q), cast(k), cast(v), kernel_size=int(kernel_size), scale=scale)
    return out.to(q.dtype)


__all__ = ["neighborhood_attention_2d"]
