"""RMSNorm and scale-only adaptive RMSNorm (HDiT's AdaRMSNorm)."""

from __future__ import annotations

from functools import reduce

import torch
from torch import nn

from .params import apply_wd, tag_module, zero_init


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x · scale / sqrt(mean(x², -1) + eps)``, statistics in at least float32; output has x's dtype.

    ``scale`` broadcasts against ``x`` (``[D]`` for a plain norm, ``[B, 1, ..., D]`` for an adaptive one).
    """
    dtype = reduce(torch.promote_types, (x.dtype, scale.dtype, torch.float32))
    mean_sq = torch.mean(x.to(dtype) ** 2, dim=-1, keepdim=True)
    scale = scale.to(dtype) * torch.rsqrt(mean_sq + eps)
    return x * scale.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the last dim with a learnable per-feature scale (initialised to 1), no bias."""

    def __init__(self, shape: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(shape))

    def extra_repr(self) -> str:
        return f"shape={tuple(self.scale.shape)}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.scale, self.eps)


class AdaRMSNorm(nn.Module):
    """Scale-only adaptive RMSNorm: ``y = rmsnorm(x) · (1 + W·cond)`` with W zero-initialised and bias-free.

    No shift and no output gate (unlike DiT's adaLN-Zero); at init it is a plain, parameter-free RMSNorm.
    The projection is tagged ``"mapping"`` (lr × 1/3 in HDiT's optimizer groups) and ``"wd"``.

    Shapes: x ``[B, ..., features]``, cond ``[B, cond_features]`` (broadcast over the middle dims).
    """

    def __init__(self, features: int, cond_features: int, eps: float = 1e-6):
        super().__init__()
        self.features = features
        self.cond_features = cond_features
        self.eps = eps
        linear = zero_init(nn.Linear(cond_features, features, bias=False))
        self.linear = tag_module(apply_wd(linear), "mapping")

    def extra_repr(self) -> str:
        return f"features={self.features}, cond_features={self.cond_features}, eps={self.eps}"

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale = self.linear(cond) + 1
        scale = scale.view(scale.shape[0], *([1] * (x.ndim - 2)), scale.shape[-1])
        return rms_norm(x, scale, self.eps)
