"""Conditioning embeddings: random Fourier features and the HDiT mapping network."""

from __future__ import annotations

import math

import torch
from torch import nn

from .ffn import FeedForward
from .norms import RMSNorm


class FourierFeatures(nn.Module):
    """``[cos(2π·W·x), sin(2π·W·x)]`` with a fixed Gaussian ``W ~ N(0, std²)``: ``[..., in] -> [..., out]``.

    ``W`` is a persistent buffer: it is random, so it must travel with the checkpoint.
    """

    def __init__(self, in_features: int, out_features: int, std: float = 1.0):
        super().__init__()
        if out_features % 2:
            raise ValueError(f"out_features must be even, got {out_features}")
        self.in_features, self.out_features, self.std = in_features, out_features, std
        self.register_buffer("freqs", torch.randn(out_features // 2, in_features) * std)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, std={self.std}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * x.to(self.freqs.dtype) @ self.freqs.T
        return torch.cat((f.cos(), f.sin()), dim=-1)


class MappingFeedForwardBlock(nn.Module):
    """Pre-norm residual GEGLU block: ``x + FFN(RMSNorm(x))``."""

    def __init__(self, d_model: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.norm(x))


class MappingNetwork(nn.Module):
    """RMSNorm → ``depth`` × residual GEGLU blocks → RMSNorm: ``[B, width] -> [B, width]``.

    Turns the summed conditioning embeddings (noise level, class, pooled text) into the vector that
    drives every AdaRMSNorm.
    """

    def __init__(self, depth: int, width: int, d_ff: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.depth, self.width = depth, width
        self.in_norm = RMSNorm(width)
        self.blocks = nn.ModuleList([MappingFeedForwardBlock(width, d_ff, dropout) for _ in range(depth)])
        self.out_norm = RMSNorm(width)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, width={self.width}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_norm(x)
        for block in self.blocks:
            x = block(x)
        return self.out_norm(x)
