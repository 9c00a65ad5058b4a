"""Hourglass Diffusion Transformer (HDiT; Crowson et al., ICML 2024, arXiv 2401.11605).

A pixel-space transformer shaped like a U-Net: a patch embedding, then *down* levels that each run
``depth`` transformer layers and merge 2×2 tokens, a *mid* level, and mirrored *up* levels that split
tokens and blend in the skip with a learnable lerp. Fine levels use 2-D neighborhood attention (linear in
pixels), the coarsest one global attention (softmax, or ReLU linear attention). Attention is
cosine-similarity with a learnable per-head scale and axial RoPE; FFNs are GEGLU; every norm is an
AdaRMSNorm driven by a mapping network over the noise level (plus class / pooled-text conditioning).
No biases anywhere; every residual branch and the output head start at zero.

``HDiT.forward`` is the *raw network* F of EDM: it takes the preconditioned input ``c_in·x`` and σ, and
:class:`genmodels.diffusion.KarrasDenoiser` turns it into the denoiser ``D = c_skip·x + c_out·F``.

Reading order follows k-diffusion's ``image_transformer_v2``: helpers, transformer layers, token merging
and splitting, configuration, model class. Shared pieces (norms, RoPE, GEGLU, mapping network, tags) live in
:mod:`genmodels.layers`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import reduce
from typing import Literal

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from kernels import linear_attention, neighborhood_attention_2d

from .diffusion.edm import noise_conditioning
from .layers import (
    AdaRMSNorm,
    AxialRoPE,
    FeedForward,
    FourierFeatures,
    MappingNetwork,
    RMSNorm,
    apply_rotary_emb,
    apply_wd,
    downscale_pos,
    make_axial_pos,
    make_param_groups,
    tag_module,
    zero_init,
)

# Helpers


def scale_for_cosine_sim(q: torch.Tensor, k: torch.Tensor, scale: torch.Tensor, eps: float = 1e-6):
    """L2-normalise q and k over the head dim and multiply each by √scale, so that ``q·k = scale·cos(q, k)``.

    Norms in at least float32; outputs keep q's / k's dtypes. ``scale`` broadcasts against ``[..., 1]``
    (e.g. ``[heads, 1, 1]`` for ``[B, heads, T, D]``). Logits are bounded by ±scale.
    """
    dtype = reduce(torch.promote_types, (q.dtype, k.dtype, scale.dtype, torch.float32))
    sqrt_scale = torch.sqrt(scale.to(dtype))
    scale_q = sqrt_scale * torch.rsqrt(torch.sum(q.to(dtype) ** 2, dim=-1, keepdim=True) + eps)
    scale_k = sqrt_scale * torch.rsqrt(torch.sum(k.to(dtype) ** 2, dim=-1, keepdim=True) + eps)
    return q * scale_q.to(q.dtype), k * scale_k.to(k.dtype)


def _pair(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


# Transformer layers


class SelfAttentionBlock(nn.Module):
    """Pre-norm residual global self-attention over all ``h·w`` tokens: ``[B, h, w, C] -> [B, h, w, C]``.

    ``kind="softmax"``: cosine-similarity attention (learnable per-head scale, init 10) via SDPA with
    ``scale=1.0``; quadratic in tokens, meant for the coarsest level. ``kind="linear"``: the operator core's
    ReLU linear attention with normaliser (SANA form), linear in tokens. q and k are still L2-normalised
    (bounded features) but carry no learnable scale, since the normaliser cancels any positive scale. RoPE
    is applied before the ReLU feature map, so positions enter the features, but the kernel is then not a
    function of the offset alone.
    """

    def __init__(self, d_model: int, d_head: int, cond_features: int, kind: str = "softmax",
                 dropout: float = 0.0):
        super().__init__()
        if kind not in ("softmax", "linear"):
            raise ValueError(f"global attention kind must be 'softmax' or 'linear', got {kind!r}")
        self.d_head, self.n_heads, self.kind = d_head, d_model // d_head, kind
        self.norm = AdaRMSNorm(d_model, cond_features)
        self.qkv_proj = apply_wd(nn.Linear(d_model, d_model * 3, bias=False))
        if kind == "softmax":
            self.scale = nn.Parameter(torch.full([self.n_heads], 10.0))
        self.pos_emb = AxialRoPE(d_head, self.n_heads)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = apply_wd(zero_init(nn.Linear(d_model, d_model, bias=False)))

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, n_heads={self.n_heads}, kind={self.kind!r}"

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = x
        h, w = x.shape[-3:-1]
        x = self.norm(x, cond)
        q, k, v = rearrange(self.qkv_proj(x), "b h w (t nh e) -> t b nh (h w) e", t=3, e=self.d_head)
        theta = self.pos_emb(pos).movedim(-2, 0).flatten(1, 2)  # [heads, h·w, d_head/4]
        if self.kind == "softmax":
            q, k = scale_for_cosine_sim(q, k, self.scale[:, None, None])
            q, k = apply_rotary_emb(q, theta), apply_rotary_emb(k, theta)
            x = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            q, k = scale_for_cosine_sim(q, k, q.new_ones([]))
            q, k = apply_rotary_emb(q, theta), apply_rotary_emb(k, theta)
            x = linear_attention(q, k, v, feature_map="relu", normalize=True)
        x = rearrange(x, "b nh (h w) e -> b h w (nh e)", h=h, w=w)
        return self.out_proj(self.dropout(x)) + skip


class NeighborhoodSelfAttentionBlock(nn.Module):
    """Pre-norm residual neighborhood self-attention: each token attends to the ``kernel_size²`` tokens
    around it (window shifted inward at borders, NATTEN semantics), through the operator core's
    ``neighborhood_attention_2d``. Cosine-similarity logits with a learnable per-head scale (init 10) and
    axial RoPE. ``[B, h, w, C] -> [B, h, w, C]``, needs ``h, w ≥ kernel_size``."""

    def __init__(self, d_model: int, d_head: int, cond_features: int, kernel_size: int, dropout: float = 0.0):
        super().__init__()
        self.d_head, self.n_heads, self.kernel_size = d_head, d_model // d_head, kernel_size
        self.norm = AdaRMSNorm(d_model, cond_features)
        self.qkv_proj = apply_wd(nn.Linear(d_model, d_model * 3, bias=False))
        self.scale = nn.Parameter(torch.full([self.n_heads], 10.0))
        self.pos_emb = AxialRoPE(d_head, self.n_heads)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = apply_wd(zero_init(nn.Linear(d_model, d_model, bias=False)))

    def extra_repr(self) -> str:
        return f"d_head={self.d_head}, n_heads={self.n_heads}, kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = x
        x = self.norm(x, cond)
        q, k, v = rearrange(self.qkv_proj(x), "b h w (t nh e) -> t b nh h w e", t=3, e=self.d_head)
        q, k = scale_for_cosine_sim(q, k, self.scale[:, None, None, None])
        theta = self.pos_emb(pos).movedim(-2, 0)  # [heads, h, w, d_head/4]
        q, k = apply_rotary_emb(q, theta), apply_rotary_emb(k, theta)
        x = neighborhood_attention_2d(q, k, v, self.kernel_size, scale=1.0)
        x = rearrange(x, "b nh h w e -> b h w (nh e)")
        return self.out_proj(self.dropout(x)) + skip


class FeedForwardBlock(nn.Module):
    """Pre-norm residual GEGLU FFN: ``x + FFN(AdaRMSNorm(x, cond))``."""

    def __init__(self, d_model: int, d_ff: int, cond_features: int, dropout: float = 0.0):
        super().__init__()
        self.norm = AdaRMSNorm(d_model, cond_features)
        self.ff = FeedForward(d_model, d_ff, dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return x + self.ff(self.norm(x, cond))


class TransformerLayer(nn.Module):
    """Attention block, then FFN block."""

    def __init__(self, self_attn: nn.Module, ff: FeedForwardBlock):
        super().__init__()
        self.self_attn = self_attn
        self.ff = ff

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.ff(self.self_attn(x, pos, cond), cond)


class Level(nn.ModuleList):
    """A stack of transformer layers run at one resolution."""

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, pos, cond)
        return x


# Token merging and splitting


class TokenMerge(nn.Module):
    """Pixel-unshuffle by ``patch`` then bias-free Linear: ``[B, h, w, C_in] -> [B, h/ph, w/pw, C_out]``."""

    def __init__(self, in_features: int, out_features: int, patch_size: tuple[int, int] = (2, 2)):
        super().__init__()
        self.h, self.w = patch_size
        self.proj = apply_wd(nn.Linear(in_features * self.h * self.w, out_features, bias=False))

    def extra_repr(self) -> str:
        return f"patch_size=({self.h}, {self.w})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "... (h nh) (w nw) e -> ... h w (nh nw e)", nh=self.h, nw=self.w)
        return self.proj(x)


class TokenSplitWithoutSkip(nn.Module):
    """Bias-free Linear then pixel-shuffle: ``[B, h, w, C_in] -> [B, h·ph, w·pw, C_out]`` (output head)."""

    def __init__(self, in_features: int, out_features: int, patch_size: tuple[int, int] = (2, 2)):
        super().__init__()
        self.h, self.w = patch_size
        self.proj = apply_wd(nn.Linear(in_features, out_features * self.h * self.w, bias=False))

    def extra_repr(self) -> str:
        return f"patch_size=({self.h}, {self.w})"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        return rearrange(x, "... h w (nh nw e) -> ... (h nh) (w nw) e", nh=self.h, nw=self.w)


class TokenSplit(TokenSplitWithoutSkip):
    """Token split merged with the down path's skip by a learnable lerp:
    ``skip + f·(up − skip)``, one scalar f per split, initialised to 0.5."""

    def __init__(self, in_features: int, out_features: int, patch_size: tuple[int, int] = (2, 2)):
        super().__init__(in_features, out_features, patch_size)
        self.fac = nn.Parameter(torch.full([1], 0.5))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        return torch.lerp(skip, x, self.fac.to(x.dtype))


# Configuration


@dataclass
class GlobalAttentionSpec:
    """Attention over every token of a level. ``kind``: ``"softmax"`` (SDPA) or ``"linear"`` (ReLU)."""

    d_head: int
    kind: Literal["softmax", "linear"] = "softmax"


@dataclass
class NeighborhoodAttentionSpec:
    """Attention over the ``kernel_size × kernel_size`` neighborhood of each token (odd kernel)."""

    d_head: int
    kernel_size: int


AttentionSpec = GlobalAttentionSpec | NeighborhoodAttentionSpec


@dataclass
class LevelSpec:
    """One resolution of the hourglass: ``depth`` layers on the way down (and ``depth`` on the way up)."""

    depth: int
    width: int
    d_ff: int
    self_attn: AttentionSpec
    dropout: float = 0.0


def attention_spec_from_dict(spec: dict | AttentionSpec) -> AttentionSpec:
    """``{"type": "neighborhood", "d_head", "kernel_size"}`` or ``{"type": "global", "d_head", "kind"}``."""
    if isinstance(spec, (GlobalAttentionSpec, NeighborhoodAttentionSpec)):
        return spec
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind == "neighborhood":
        return NeighborhoodAttentionSpec(**spec)
    if kind == "global":
        return GlobalAttentionSpec(**spec)
    raise ValueError(f"self_attn 'type' must be 'neighborhood' or 'global', got {kind!r}")


def attention_spec_to_dict(spec: AttentionSpec) -> dict:
    kind = "neighborhood" if isinstance(spec, NeighborhoodAttentionSpec) else "global"
    return {"type": kind, **asdict(spec)}


def make_level_specs(depths, widths, d_ffs=None, self_attns=None, dropout=0.0) -> list[LevelSpec]:
    """Zip the per-level config lists into :class:`LevelSpec` s, with HDiT's defaults: ``d_ff = 3·width``;
    neighborhood attention (d_head 64, kernel 7) everywhere but the last level, which is global."""
    n = len(depths)
    if n < 1 or len(widths) != n:
        raise ValueError(f"depths and widths must be non-empty and of equal length, got {depths}, {widths}")
    d_ffs = [3 * w for w in widths] if d_ffs is None else list(d_ffs)
    if self_attns is None:
        self_attns = [{"type": "neighborhood", "d_head": 64, "kernel_size": 7}] * (n - 1)
        self_attns += [{"type": "global", "d_head": 64}]
    dropouts = [float(dropout)] * n if isinstance(dropout, (int, float)) else [float(p) for p in dropout]
    if not len(d_ffs) == len(self_attns) == len(dropouts) == n:
        raise ValueError("depths, widths, d_ffs, self_attns and dropout must all have one entry per level")
    levels = []
    for i, (depth, width, d_ff, attn, p) in enumerate(zip(depths, widths, d_ffs, self_attns, dropouts)):
        attn = attention_spec_from_dict(attn)
        if width % attn.d_head:
            raise ValueError(f"level {i}: width {width} is not a multiple of d_head {attn.d_head}")
        if attn.d_head % 8:
            raise ValueError(f"level {i}: d_head {attn.d_head} must be a multiple of 8 for axial RoPE")
        is_na = isinstance(attn, NeighborhoodAttentionSpec)
        if is_na and (attn.kernel_size < 1 or attn.kernel_size % 2 == 0):
            raise ValueError(f"level {i}: kernel_size must be a positive odd integer, got {attn.kernel_size}")
        if not is_na and attn.kind not in ("softmax", "linear"):
            raise ValueError(f"level {i}: global attention kind must be 'softmax' or 'linear', "
                             f"got {attn.kind!r}")
        levels.append(LevelSpec(int(depth), int(width), int(d_ff), attn, p))
    return levels


def check_grid(levels: list[LevelSpec], patch_size: tuple[int, int], height: int, width: int) -> None:
    """Raise ``ValueError`` unless an ``height × width`` image fits: sides divisible by the patch, even token
    grids before every 2×2 merge, and sides ≥ kernel_size at every neighborhood-attention level."""
    ph, pw = patch_size
    if height % ph or width % pw:
        raise ValueError(f"input {height}×{width} is not divisible by patch size {ph}×{pw}")
    h, w = height // ph, width // pw
    for i, spec in enumerate(levels):
        attn = spec.self_attn
        if isinstance(attn, NeighborhoodAttentionSpec) and min(h, w) < attn.kernel_size:
            raise ValueError(f"input {height}×{width}: level {i} has a {h}×{w} token grid, smaller than its "
                             f"neighborhood kernel {attn.kernel_size}")
        if i < len(levels) - 1:
            if h % 2 or w % 2:
                raise ValueError(f"input {height}×{width}: level {i} has a {h}×{w} token grid, which a 2×2 "
                                 f"merge cannot halve; use sides divisible by {ph}·2^{len(levels) - 1} and "
                                 f"{pw}·2^{len(levels) - 1}")
            h, w = h // 2, w // 2


# Model class


class HDiT(ModelMixin, ConfigMixin):
    """Hourglass Diffusion Transformer, the raw EDM network ``F(c_in·x, σ)``.

    Config (all JSON-able): ``in_channels``, ``out_channels``; ``patch_size`` (int or [ph, pw]);
    per level ``depths``, ``widths``, ``d_ffs`` (default 3·width), ``self_attns`` (dicts, see
    :func:`attention_spec_from_dict`) and ``dropout`` (float or per-level list); the mapping network's
    ``mapping_width``, ``mapping_depth``, ``mapping_d_ff`` (default 3·width), ``mapping_dropout``;
    ``num_classes`` (class conditioning; index ``num_classes`` is the null class for CFG) and
    ``mapping_cond_dim`` (a pooled vector such as a text embedding, projected into the mapping network);
    ``sample_size`` (optional [H, W], validated at construction).
    """

    # The random Fourier projection of log σ loses digits in bf16; from_pretrained(torch_dtype=...) keeps it.
    _keep_in_fp32_modules = ["time_emb"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        patch_size: int | list[int] = 2,
        depths: list[int] = (2, 2, 2),
        widths: list[int] = (64, 128, 256),
        d_ffs: list[int] | None = None,
        self_attns: list[dict] | None = None,
        dropout: float | list[float] = 0.0,
        mapping_width: int = 256,
        mapping_depth: int = 2,
        mapping_d_ff: int | None = None,
        mapping_dropout: float = 0.0,
        num_classes: int = 0,
        mapping_cond_dim: int = 0,
        sample_size: list[int] | None = None,
    ):
        super().__init__()
        self.level_specs = levels = make_level_specs(depths, widths, d_ffs, self_attns, dropout)
        self.patch = _pair(patch_size)
        if sample_size is not None:
            check_grid(levels, self.patch, *_pair(sample_size))
        self.num_classes = num_classes

        self.patch_in = TokenMerge(in_channels, levels[0].width, self.patch)

        # Mapping network inputs: noise level, then optional class and pooled-vector conditioning.
        self.time_emb = FourierFeatures(1, mapping_width)
        self.time_in_proj = apply_wd(nn.Linear(mapping_width, mapping_width, bias=False))
        self.class_emb = nn.Embedding(num_classes + 1, mapping_width) if num_classes else None
        self.mapping_cond_in_proj = (
            apply_wd(nn.Linear(mapping_cond_dim, mapping_width, bias=False)) if mapping_cond_dim else None
        )
        self.mapping = tag_module(
            MappingNetwork(mapping_depth, mapping_width, mapping_d_ff, mapping_dropout), "mapping"
        )

        self.down_levels, self.up_levels = nn.ModuleList(), nn.ModuleList()
        for i, spec in enumerate(levels):
            if i < len(levels) - 1:
                self.down_levels.append(self._make_level(spec, mapping_width))
                self.up_levels.append(self._make_level(spec, mapping_width))
            else:
                self.mid_level = self._make_level(spec, mapping_width)

        self.merges = nn.ModuleList(TokenMerge(a.width, b.width) for a, b in zip(levels[:-1], levels[1:]))
        self.splits = nn.ModuleList(TokenSplit(b.width, a.width) for a, b in zip(levels[:-1], levels[1:]))

        self.out_norm = RMSNorm(levels[0].width)
        self.patch_out = TokenSplitWithoutSkip(levels[0].width, out_channels, self.patch)
        zero_init(self.patch_out.proj)

    @staticmethod
    def _make_level(spec: LevelSpec, cond_features: int) -> Level:
        attn, layers = spec.self_attn, []
        for _ in range(spec.depth):
            if isinstance(attn, NeighborhoodAttentionSpec):
                self_attn = NeighborhoodSelfAttentionBlock(spec.width, attn.d_head, cond_features,
                                                           attn.kernel_size, spec.dropout)
            else:
                self_attn = SelfAttentionBlock(spec.width, attn.d_head, cond_features, attn.kind,
                                               spec.dropout)
            ff = FeedForwardBlock(spec.width, spec.d_ff, cond_features, spec.dropout)
            layers.append(TransformerLayer(self_attn, ff))
        return Level(layers)

    def extra_repr(self) -> str:
        return f"patch_size={self.patch}, levels={len(self.level_specs)}, num_classes={self.num_classes}"

    # Configurations

    @classmethod
    def tiny_config(cls) -> dict:
        """Two levels (NA k=3 at width 32, global softmax at width 64), d_head 16: milliseconds on a 16×32."""
        return dict(
            in_channels=2, out_channels=2, patch_size=2, depths=[1, 1], widths=[32, 64], d_ffs=[64, 128],
            self_attns=[{"type": "neighborhood", "d_head": 16, "kernel_size": 3},
                        {"type": "global", "d_head": 16, "kind": "softmax"}],
            dropout=0.0, mapping_width=32, mapping_depth=1, mapping_d_ff=64,
        )

    @classmethod
    def pianoroll_config(cls) -> dict:
        """The shipped piano-roll model for ``2 × 64 × 128`` rolls (pitch × 16th-note steps), CPU-trainable.

        Patch 4 → 16×32 tokens (a token is 4 semitones × one beat). Levels: NA k=7 at width 64 (16×32
        tokens, depth 1), NA k=7 at width 128 (8×16, depth 2), global softmax at width 256 (4×8, one token
        per bar and 16 semitones, depth 2); d_head 32 / 32 / 64; mapping width 128. ≈ 3.6M parameters.
        Patch 2 with the same widths costs ≈ 4× the FLOPs (≈ 3 s per batch-16 training step on 2 cores
        against ≈ 0.6 s for this one), see ``benchmarks/`` for the measurement.
        """
        return dict(
            in_channels=2, out_channels=2, patch_size=4, depths=[1, 2, 2], widths=[64, 128, 256],
            d_ffs=None,
            self_attns=[{"type": "neighborhood", "d_head": 32, "kernel_size": 7},
                        {"type": "neighborhood", "d_head": 32, "kernel_size": 7},
                        {"type": "global", "d_head": 64, "kind": "softmax"}],
            dropout=[0.0, 0.0, 0.1], mapping_width=128, mapping_depth=2, mapping_d_ff=None,
            sample_size=[64, 128],
        )

    # Optimizer groups

    def param_groups(self, base_lr: float = 5e-4, weight_decay: float = 1e-3,
                     mapping_lr_scale: float = 1 / 3) -> list[dict]:
        """AdamW groups: mapping-network parameters (incl. every AdaRMSNorm projection) at
        ``base_lr · mapping_lr_scale``; weight decay only on weights tagged ``"wd"`` (Linear weights)."""
        return make_param_groups(self, base_lr, weight_decay, mapping_lr_scale=mapping_lr_scale)

    # Forward

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` if an ``height × width`` input does not fit the hourglass."""
        check_grid(self.level_specs, self.patch, height, width)

    def _mapping(self, sigma: torch.Tensor, class_labels, mapping_cond, batch: int) -> torch.Tensor:
        dtype = self.time_in_proj.weight.dtype
        emb = self.time_in_proj(self.time_emb(noise_conditioning(sigma)[:, None]).to(dtype))
        if self.class_emb is not None:
            if class_labels is None:
                class_labels = torch.full([batch], self.num_classes, device=sigma.device, dtype=torch.long)
            emb = emb + self.class_emb(class_labels)
        elif class_labels is not None:
            raise ValueError("class_labels given, but the model was built with num_classes=0")
        if self.mapping_cond_in_proj is not None:
            if mapping_cond is None:
                mapping_cond = emb.new_zeros([batch, self.mapping_cond_in_proj.in_features])
            emb = emb + self.mapping_cond_in_proj(mapping_cond.to(dtype))
        elif mapping_cond is not None:
            raise ValueError("mapping_cond given, but the model was built with mapping_cond_dim=0")
        return self.mapping(emb)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                mapping_cond: torch.Tensor | None = None) -> torch.Tensor:
        """Raw network output.

        Args:
            x: ``[B, C_in, H, W]``, the preconditioned input ``c_in·x_σ``.
            sigma: noise level(s), scalar or ``[B]`` (the network embeds ``log(σ)/4``).
            class_labels: ``[B]`` long in ``[0, num_classes]``; ``num_classes`` (or None) is the null class.
            mapping_cond: ``[B, mapping_cond_dim]`` pooled conditioning vector; None means zeros.

        Returns:
            ``[B, C_out, H, W]``.
        """
        if x.ndim != 4:
            raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
        batch, _, height, width = x.shape
        self.check_input_size(height, width)
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(batch)
        cond = self._mapping(sigma, class_labels, mapping_cond, batch)

        # Patching
        x = self.patch_in(x.movedim(1, -1))
        pos = make_axial_pos(x.shape[1], x.shape[2], device=x.device)

        # Hourglass
        skips, poses = [], []
        for down_level, merge in zip(self.down_levels, self.merges):
            x = down_level(x, pos, cond)
            skips.append(x)
            poses.append(pos)
            x = merge(x)
            pos = downscale_pos(pos)
        x = self.mid_level(x, pos, cond)
        for up_level, split, skip, pos in reversed(list(zip(self.up_levels, self.splits, skips, poses))):
            x = split(x, skip)
            x = up_level(x, pos, cond)

        # Unpatching
        x = self.patch_out(self.out_norm(x))
        return x.movedim(-1, 1)
