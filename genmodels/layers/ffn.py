"""GEGLU feed-forward: ``down(x_a · GELU(x_b))`` with exact GELU, bias-free, zero-initialised output."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .params import apply_wd, zero_init


def linear_geglu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """One matmul to ``2·d_ff`` features, split into value and gate halves: ``value · GELU(gate)``.

    Exact (erf) GELU, not the tanh approximation. Shapes: x ``[..., d_in]``, weight ``[2·d_ff, d_in]``.
    """
    x = x @ weight.mT
    x, gate = x.chunk(2, dim=-1)
    return x * F.gelu(gate)


class LinearGEGLU(nn.Linear):
    """Bias-free ``Linear(in_features → 2·out_features)`` followed by the GEGLU gate."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features * 2, bias=False)
        self.out_features = out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, gelu=exact"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_geglu(x, self.weight)


class FeedForward(nn.Module):
    """GEGLU up-projection → dropout → zero-initialised down-projection. No norm, no residual: the caller
    wraps it (pre-norm residual block). ``d_ff`` defaults to ``3·d_model``."""

    def __init__(self, d_model: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        d_ff = 3 * d_model if d_ff is None else d_ff
        self.up_proj = apply_wd(LinearGEGLU(d_model, d_ff))
        self.dropout = nn.Dropout(dropout)
        self.down_proj = apply_wd(zero_init(nn.Linear(d_ff, d_model, bias=False)))

    def extra_repr(self) -> str:
        return f"d_model={self.down_proj.out_features}, d_ff={self.down_proj.in_features}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.dropout(self.up_proj(x)))
