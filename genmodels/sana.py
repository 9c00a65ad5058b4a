"""SANA-style linear DiT (Xie et al., arXiv 2410.10629; SANA 1.5, arXiv 2501.18427), in pixel space.

A plain (isotropic) diffusion transformer over ``p × p`` pixel patches, built from SANA's pieces:

* **ReLU linear self-attention** (LiteLA): ``o_i = Σ_n v_n (φ(k_n)·φ(q_i)) / (Σ_n φ(k_n)·φ(q_i) + ε)``,
  φ = ReLU, ε = 1e-8, head_dim 32, no 1/√d; q, k, v are cast to float32 for the attention (SANA's
  ``fp32_attention``). Computed by the operator core's ``linear_attention``; optional RMS QK-norm (SANA 1.5).
  ``self_attn="softmax"`` swaps in :class:`SoftmaxSelfAttention` (the same parameters, scaled-dot-product
  softmax attention, O(N²)): the same-width softmax-attention DiT as a baseline.
* **Mix-FFN** (GLUMBConv): 1×1 conv C → 2·hidden + SiLU → depthwise 3×3 → x·SiLU(gate) → 1×1 hidden → C.
  Its depthwise conv is the only positional signal: there is **no positional embedding** (NoPE).
* **adaLN-single** (PixArt-α): one global ``t_block`` (SiLU → Linear(C, 6C)) from the timestep (+ pooled
  text) embedding; each block adds its own learnable ``scale_shift_table`` (6, C) to get shift / scale /
  gate for attention and FFN. LayerNorms have no affine parameters (eps 1e-6).
* **Cross-attention** to the text tokens after self-attention, with no norm and no modulation, through the
  shared :class:`~genmodels.layers.CrossWKV` (``cross_attn="crosswkv"``: the text is absorbed into a WKV state
  once per prompt; ``"joint"``, or ``"softmax"``, SANA's own choice, as baselines).
* **Final layer** (PixArt's T2IFinalLayer): LayerNorm, shift/scale from the timestep embedding, a zero-init
  Linear to ``p·p·C`` values per token, then unpatchify.

Block (``x`` tokens ``[B, N, C]`` on an ``H × W`` token grid):

    x ← x + gate_msa · LinearAttn(LN(x)·(1 + scale_msa) + shift_msa)
    x ← x + CrossAttn(x, text)
    x ← x + gate_mlp · MixFFN(LN(x)·(1 + scale_mlp) + shift_mlp, H, W)

``SanaDiT.forward`` predicts the rectified-flow velocity ``v = ε − x₀`` at ``x_t = (1 − t)·x₀ + t·ε``,
t ∈ [0, 1] (see :mod:`genmodels.diffusion.flow`). Classifier-free guidance uses a learned null text
(``null_text_embedding``): a dropped sample sees one null token instead of its caption.

SANA 1.5's tools close the file: :func:`block_importance` (1 − cos(input, output) per block),
:func:`prune_blocks` and :func:`grow_depth` (new blocks start as exact identity maps).

Reading order: attention, Mix-FFN, transformer block, final layer, model class, SANA 1.5 depth tools. The
timestep / caption embedders and the text side (null text, caption dropout, CrossWKV states) are shared with
Diffusion Mamba and live in :mod:`genmodels.layers.dit`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from kernels import linear_attention

from .layers import CrossWKV, RMSNorm, apply_wd, make_param_groups, zero_init
from .layers.crosswkv import MODES as CROSS_ATTN_MODES
from .layers.dit import (
    CaptionEmbedder,
    TextConditioning,
    TextContext,
    TimestepEmbedder,
    layer_norm,
    make_pooled_embedder,
    modulate,
    timestep_embedding,
    xavier_init,
)

ATTN_EPS = 1e-8  # LiteLA's normaliser eps as the SANA blocks construct it
SELF_ATTN_MODES = ("linear", "softmax")  # SanaDiT(self_attn=...): LinearSelfAttention | SoftmaxSelfAttention
PREDICTIONS = ("velocity", "sample")  # SanaDiT(prediction=...): what the network's last layer outputs
SAMPLE_PREDICTION_T_MIN = 0.05  # prediction="sample": v = (x_t − x̂₀) / max(t, this), JiT's clamp

# Attention


class LinearSelfAttention(nn.Module):
    """SANA's LiteLA: multi-head ReLU linear attention with normaliser, ``[B, N, C] -> [B, N, C]``.

    ``qkv`` is bias-free, the output projection has a bias (as in SANA). With ``qk_norm`` q and k pass an
    RMSNorm over the full width before the heads are split (SANA 1.5, against VK overflow at long N). The
    attention itself runs in float32 whatever the activation dtype; its output is cast back.
    """

    def __init__(self, dim: int, head_dim: int = 32, qk_norm: bool = False):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} is not a multiple of head_dim {head_dim}")
        self.dim, self.head_dim, self.n_heads = dim, head_dim, dim // head_dim
        self.qkv = xavier_init(nn.Linear(dim, 3 * dim, bias=False))
        self.q_norm = RMSNorm(dim) if qk_norm else None
        self.k_norm = RMSNorm(dim) if qk_norm else None
        self.proj = xavier_init(nn.Linear(dim, dim))

    def extra_repr(self) -> str:
        return f"heads={self.n_heads}, head_dim={self.head_dim}, qk_norm={self.q_norm is not None}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (rearrange(t.float(), "b n (h d) -> b h n d", d=self.head_dim) for t in (q, k, v))
        o = linear_attention(q, k, v, feature_map="relu", normalize=True, eps=ATTN_EPS)
        return self.proj(rearrange(o, "b h n d -> b n (h d)").to(x.dtype))


class SoftmaxSelfAttention(LinearSelfAttention):
    """Multi-head softmax self-attention with :class:`LinearSelfAttention`'s parameters, ``[B, N, C] -> [B, N, C]``.

    It inherits LiteLA's bias-free ``qkv``, optional full-width RMS QK-norm and biased output projection
    (identical state-dict keys and shapes); only the token mixer differs: ``softmax(q·kᵀ/√d)·v`` through
    ``F.scaled_dot_product_attention``, O(N²) in the number of tokens. Unlike LiteLA it runs in the activation
    dtype (no float32 cast); with float32 weights both are computed in float32.
    """

    def extra_repr(self) -> str:
        return f"heads={self.n_heads}, head_dim={self.head_dim}, qk_norm={self.q_norm is not None}, softmax"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", d=self.head_dim) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(o, "b h n d -> b n (h d)"))


def make_self_attention(kind: str, dim: int, head_dim: int = 32, qk_norm: bool = False
                        ) -> LinearSelfAttention | SoftmaxSelfAttention:
    """The self-attention module for ``self_attn=kind`` (``"linear"``: LiteLA, ``"softmax"``: the O(N²)
    baseline with the same parameters)."""
    if kind == "linear":
        return LinearSelfAttention(dim, head_dim, qk_norm)
    if kind == "softmax":
        return SoftmaxSelfAttention(dim, head_dim, qk_norm)
    raise ValueError(f"self_attn must be one of {SELF_ATTN_MODES}, got {kind!r}")


# Mix-FFN


class MixFFN(nn.Module):
    """SANA's GLUMBConv on tokens ``[B, N, C]`` laid out on an ``H × W`` grid (N = H·W):

    1×1 conv C → 2·hidden (bias) + SiLU → depthwise 3×3 on 2·hidden channels (bias, no activation) →
    split (x, gate), x·SiLU(gate) → 1×1 conv hidden → C (no bias). The 1×1 convs are Linear layers on the
    tokens (the same map without two layout changes); only the depthwise conv sees the grid.
    """

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.inverted = xavier_init(nn.Linear(dim, 2 * hidden))
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden)
        self.point = xavier_init(nn.Linear(hidden, dim, bias=False))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}"

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = F.silu(self.inverted(x))
        x = rearrange(x, "b (h w) c -> b c h w", h=hw[0], w=hw[1])
        x = rearrange(self.depthwise(x), "b c h w -> b (h w) c")
        x, gate = x.chunk(2, dim=-1)
        return self.point(x * F.silu(gate))


# Transformer block


class SanaBlock(nn.Module):
    """One SANA block: modulated linear self-attention (``self_attn="softmax"``: softmax), cross-attention to the
    text, modulated Mix-FFN.

    ``forward(x [B, N, C], hw, t6 [B, 6, C], context [B, L, C] | None, context_mask [B, L] | None,
    state | None) -> [B, N, C]``; ``t6`` is the global adaLN-single output, to which the block adds its
    ``scale_shift_table`` (init randn/√C). :meth:`init_identity` zeroes the three residual branches' output
    layers, making the block an exact identity map whatever t6 is (SANA 1.5's depth growth: the adaLN gates
    are shared with every other block through ``t_block``, so they cannot be zeroed per block).
    ``cross_norm``: the cross-attention reads ``layer_norm(x)`` instead of the raw residual stream.
    """

    def __init__(self, dim: int, head_dim: int, mlp_ratio: float, cross_attn: str, cross_head_dim: int,
                 qk_norm: bool = False, layer_id: int = 0, n_layers: int = 1, self_attn: str = "linear",
                 cross_norm: bool = False):
        super().__init__()
        self.dim = dim
        self.cross_norm = cross_norm
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.attn = make_self_attention(self_attn, dim, head_dim, qk_norm)
        self.cross_attn = CrossWKV(dim, dim, head_dim=cross_head_dim, mode=cross_attn, layer_id=layer_id,
                                   n_layers=n_layers)
        self.mlp = MixFFN(dim, int(round(dim * mlp_ratio)))

    @torch.no_grad()
    def init_identity(self) -> SanaBlock:
        """Zero the attention, cross-attention and FFN output layers: the block returns its input exactly."""
        for layer in (self.attn.proj, self.cross_attn.out, self.mlp.point):
            zero_init(layer)
        return self

    def forward(self, x: torch.Tensor, hw: tuple[int, int], t6: torch.Tensor, context: torch.Tensor | None,
                context_mask: torch.Tensor | None = None, state: torch.Tensor | None = None) -> torch.Tensor:
        mod = (self.scale_shift_table[None].to(t6.dtype) + t6).to(x.dtype)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        x = x + gate_msa * self.attn(modulate(layer_norm(x), shift_msa, scale_msa))
        x = x + self.cross_attn(layer_norm(x) if self.cross_norm else x, context, context_mask, state=state)
        return x + gate_mlp * self.mlp(modulate(layer_norm(x), shift_mlp, scale_mlp), hw)


# Final layer


class FinalLayer(nn.Module):
    """PixArt's T2IFinalLayer: ``LN(x)·(1 + scale) + shift`` with (shift, scale) = table (2, C) + t_emb, then a
    zero-initialised Linear C → ``p·p·C_out``: ``[B, N, C] -> [B, N, p·p·C_out]``."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.linear = zero_init(nn.Linear(dim, patch_size * patch_size * out_channels))

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).to(x.dtype).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x), shift, scale))


# Model class


POS_EMBEDS = ("none", "sincos")


def relative_position_embedding(h: int, w: int, grid: int, dim: int) -> torch.Tensor:
    """``[h·w, dim]``: 2-D Fourier features (half the channels per axis) of token centres on a ``grid`` × ``grid``
    scale whatever ``h`` × ``w`` is: token (i, j) sits at ((i + ½)·grid/h, (j + ½)·grid/w), so a token keeps its
    place in the picture at any resolution (integer + ½ positions at the trained one). Per axis, sin and cos
    at frequencies spaced geometrically from π (neighbouring tokens opposite) down to π/(2·grid) (one quarter
    turn across the picture), so every channel but cos(π·p) (zero at half-integer places) varies over the
    picture; the usual 10000-based frequencies would leave most channels constant over 8 positions."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * grid / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * grid / w
    ys, xs = torch.meshgrid(ys, xs, indexing="ij")
    return torch.cat([_fourier_1d(ys.reshape(-1), dim // 2, grid), _fourier_1d(xs.reshape(-1), dim - dim // 2, grid)],
                     dim=-1)


def _fourier_1d(positions: torch.Tensor, dim: int, grid: int) -> torch.Tensor:
    half = dim // 2
    freqs = math.pi * torch.logspace(0.0, -math.log10(2 * grid), max(half, 1))[:half]
    args = positions.float()[:, None] * freqs[None]
    return F.pad(torch.cat([torch.sin(args), torch.cos(args)], dim=-1), (0, dim % 2))


class SanaDiT(TextConditioning, ModelMixin, ConfigMixin):
    """SANA-style linear DiT in pixel space; predicts the rectified-flow velocity ``ε − x₀``.

    Config: ``in_channels`` / ``out_channels`` (None = in), ``patch_size`` p, ``sample_size`` (the pipelines'
    default image side; any side divisible by p works, there is no positional table), ``width`` C, ``depth``,
    ``head_dim`` (self-attention, 32 in SANA), ``mlp_ratio`` (Mix-FFN hidden = ratio·C), ``qk_norm``,
    ``text_dim`` (per-token text features), ``pooled_text_dim`` (None = text_dim, 0 = no pooled input),
    ``cross_attn`` (``"crosswkv" | "joint" | "softmax"``), ``cross_head_dim``, ``timestep_freq_dim``,
    ``self_attn`` (``"linear"``: SANA's ReLU linear attention; ``"softmax"``: the same model with softmax
    self-attention, identical parameters, as the quadratic baseline), ``pooled_mlp`` (the pooled text enters
    through :class:`~genmodels.layers.dit.PooledTextEmbedder`, RMS-normalised → MLP; False: one Linear, as in
    the shipped model; no gain measured), ``prediction``
    (``"velocity"``: the last layer outputs v = ε − x₀; ``"sample"``: it outputs the clean image x̂₀ and
    ``forward`` returns v = (x_t − x̂₀) / max(t, 0.05) — JiT's x-prediction with the velocity loss, Li & He,
    "Back to Basics: Let Denoising Generative Models Denoise", 2025: a p×p×3 pixel patch is as wide as the
    model here, too wide to carry per-pixel noise through, while clean images lie on a low-dimensional
    manifold). Callers always get a velocity. ``cross_norm`` (the cross-attention reads the layer-normed
    residual stream, as in the DiM and VAR blocks; False, as in the shipped model, feeds it the raw stream,
    which CrossWKV's image side — receptance, bonus r·k·v and gate, all read from x — turns into a
    polynomial of high degree in |x|: on a rare noise seed at t ≈ 1 a residual stream of 20 grew to 1e11 over
    four blocks and the output to NaN). ``pos_embed``: ``"none"`` (SANA's NoPE: tokens learn where they are
    only from the Mix-FFN convolution's zero padding) or ``"sincos"``: a 2-D sin-cos (Fourier) embedding of each
    token's place *relative to the image* (:func:`relative_position_embedding`, so any resolution works), times
    a learnt per-channel gain that starts at one: the image side of following place words ("small red circle
    top left"). The text side has to tell them apart too; the tiny shapes CLIP barely does, and models trained
    on such captions, with or without the embedding, put objects where the noise seed did (BENCHMARKS.md,
    issue 5).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["SanaBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        patch_size: int = 4,
        sample_size: int = 64,
        width: int = 192,
        depth: int = 8,
        head_dim: int = 32,
        mlp_ratio: float = 2.5,
        qk_norm: bool = False,
        text_dim: int = 512,
        pooled_text_dim: int | None = None,
        cross_attn: str = "crosswkv",
        cross_head_dim: int = 64,
        timestep_freq_dim: int = 256,
        self_attn: str = "linear",
        pooled_mlp: bool = False,
        prediction: str = "velocity",
        cross_norm: bool = False,
        pos_embed: str = "none",
    ):
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if prediction == "sample" and (out_channels or in_channels) != in_channels:
            raise ValueError("prediction='sample' needs out_channels == in_channels (the output is an image)")
        if cross_attn not in CROSS_ATTN_MODES:
            raise ValueError(f"cross_attn must be one of {CROSS_ATTN_MODES}, got {cross_attn!r}")
        if self_attn not in SELF_ATTN_MODES:
            raise ValueError(f"self_attn must be one of {SELF_ATTN_MODES}, got {self_attn!r}")
        if depth < 1 or patch_size < 1 or sample_size % patch_size:
            raise ValueError(f"need depth ≥ 1 and sample_size divisible by patch_size, got depth={depth}, "
                             f"patch_size={patch_size}, sample_size={sample_size}")
        self.patch_size = patch_size
        self.out_channels = out_channels or in_channels
        pooled_text_dim = text_dim if pooled_text_dim is None else pooled_text_dim
        self.gradient_checkpointing = False

        self.patch_embed = xavier_init(nn.Conv2d(in_channels, width, patch_size, stride=patch_size))
        if pos_embed == "sincos":  # a learnt per-channel gain, from one (a gate from zero did not open in 400 steps)
            self.pos_gate = nn.Parameter(torch.ones(width))

        # Conditioning: timestep (+ pooled text) → adaLN-single; text tokens → caption embedder → blocks.
        self.t_embedder = TimestepEmbedder(width, timestep_freq_dim)
        self.pooled_embedder = make_pooled_embedder(pooled_text_dim, width, pooled_mlp)
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        nn.init.normal_(self.t_block[1].weight, std=0.02)
        nn.init.zeros_(self.t_block[1].bias)
        self.init_text_side(text_dim, pooled_text_dim, width)

        self.blocks = nn.ModuleList(
            SanaBlock(width, head_dim, mlp_ratio, cross_attn, cross_head_dim, qk_norm, layer_id=i, n_layers=depth,
                      self_attn=self_attn, cross_norm=cross_norm)
            for i in range(depth)
        )
        self.final_layer = FinalLayer(width, patch_size, self.out_channels)

        # Weight decay on every Linear / conv weight; not on norms, tables, null embeddings or CrossWKV's
        # per-channel parameters.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                apply_wd(module)

    def extra_repr(self) -> str:
        c = self.config
        return (f"patch_size={c.patch_size}, width={c.width}, depth={c.depth}, self_attn={c.self_attn!r}, "
                f"cross_attn={c.cross_attn!r}")

    # Configurations

    @classmethod
    def tiny_config(cls) -> dict:
        """Patch 4, width 64, depth 2, text_dim 32: milliseconds on a 3×32×32 image."""
        return dict(in_channels=3, patch_size=4, sample_size=32, width=64, depth=2, head_dim=32, mlp_ratio=2.5,
                    text_dim=32, cross_attn="crosswkv", cross_head_dim=32)

    @classmethod
    def shapes_config(cls) -> dict:
        """The shapes-world text-to-image model: 64×64 RGB, patch 8 (8×8 = 64 tokens), width 192, depth 8,
        CrossWKV heads of 64, text features of the tiny CLIP (``assets/clip-shapes``: 64-wide tokens and pooled
        embedding); 5.8M parameters (11.6 MB in fp16, so the pipeline with its text encoder stays under 20 MB).

        Sized for a 2-core CPU. Measured single-threaded (Zen 4 EPYC, torch 2.14, another job on the second
        core): an AdamW step at batch 32 ≈ 1.8 s and a CFG-batched forward (batch 2) ≈ 37 ms. Patch 4 (256
        tokens) costs 7.1 s and 107 ms, too slow to train to a useful point here; width 256 (10.1M, 2.6 s) would
        not fit the asset budget in fp16."""
        return dict(in_channels=3, patch_size=8, sample_size=64, width=192, depth=8, head_dim=32, mlp_ratio=2.5,
                    text_dim=64, pooled_text_dim=64, cross_attn="crosswkv", cross_head_dim=64)

    # Optimizer groups

    def param_groups(self, base_lr: float = 1e-4, weight_decay: float = 0.0) -> list[dict]:
        """AdamW groups: weight decay only on Linear / conv weights; one learning rate for everything."""
        return make_param_groups(self, base_lr, weight_decay, mapping_lr_scale=1.0)

    # Input checks

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless both sides are positive multiples of the patch size."""
        p = self.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(f"image sides must be positive multiples of patch_size {p}, got {height}×{width}")

    # Forward

    def forward(self, x: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None, pooled_text: torch.Tensor | None = None, *,
                context_states: TextContext | None = None, drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity prediction.

        Args:
            x: ``[B, C_in, H, W]``, the noisy image ``x_t = (1 − t)·x₀ + t·ε`` (H, W multiples of the patch).
            timestep: t ∈ [0, 1] (1 = pure noise), scalar or ``[B]``.
            encoder_hidden_states: per-token text features ``[B, L, text_dim]``; None = the null text for all.
            encoder_attention_mask: ``[B, L]`` bool, True = real token; None = all real.
            pooled_text: ``[B, pooled_text_dim]``, projected and added to the timestep embedding; None adds
                nothing (train and sample consistently: always or never).
            context_states: a :class:`TextContext` from :meth:`cross_attention_states`, in place of
                ``encoder_hidden_states`` / ``encoder_attention_mask`` (sampling).
            drop_text: ``[B]`` bool, samples whose text is replaced by the null text (caption dropout).

        Returns:
            ``[B, C_out, H, W]``, the velocity ``ε − x₀``.
        """
        if x.ndim != 4:
            raise ValueError(f"x must be [B, C, H, W], got shape {tuple(x.shape)}")
        batch, _, height, width = x.shape
        self.check_input_size(height, width)
        timestep = torch.as_tensor(timestep, device=x.device, dtype=torch.float32)
        timestep = timestep.reshape(1).expand(batch) if timestep.numel() == 1 else timestep.reshape(batch)

        text, pooled_text = self.resolve_text(batch, encoder_hidden_states, encoder_attention_mask, pooled_text,
                                             context_states, drop_text)

        # adaLN-single
        t_emb = self.add_pooled_text(self.t_embedder(timestep), pooled_text)
        t6 = self.t_block(t_emb).unflatten(1, (6, -1))

        # Patching (+ the gated position embedding with pos_embed="sincos"; none by default, as in SANA)
        x_in = x
        x = self.patch_embed(x.to(self.patch_embed.weight.dtype))
        hw = (x.shape[-2], x.shape[-1])
        x = rearrange(x, "b c h w -> b (h w) c")
        if self.config.pos_embed == "sincos":
            grid = self.config.sample_size // self.patch_size
            x = x + self.pos_gate * relative_position_embedding(*hw, grid, x.shape[-1]).to(x)

        for i, block in enumerate(self.blocks):
            state = None if text.states is None else text.states[i]
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, hw, t6, text.context, text.mask, state)
            else:
                x = block(x, hw, t6, text.context, text.mask, state)

        # Unpatching
        out = self.final_layer(x, t_emb)
        p = self.patch_size
        out = rearrange(out, "b (h w) (p q c) -> b c (h p) (w q)", h=hw[0], w=hw[1], p=p, q=p)
        if self.config.prediction == "sample":  # x̂₀ → velocity, in float32
            t = timestep.clamp(min=SAMPLE_PREDICTION_T_MIN)[:, None, None, None]
            out = ((x_in.float() - out.float()) / t).to(out.dtype)
        return out


# SANA 1.5 depth tools: block importance, pruning, growth


@torch.no_grad()
def block_importance(model: SanaDiT, batches: Iterable[dict]) -> torch.Tensor:
    """SANA 1.5's block importance ``1 − cos(input, output)`` per block: ``[depth]`` float32.

    Cosine similarity over channels, per token, averaged over tokens, samples and ``batches`` (each a dict of
    :meth:`SanaDiT.forward` keyword arguments: ``x``, ``timestep``, ``encoder_hidden_states``, ...; spread
    them over timesteps and prompts). A block that changes nothing scores 0; prune the lowest first.
    """
    depth = len(model.blocks)
    sums, counts = torch.zeros(depth, dtype=torch.float64), torch.zeros(depth, dtype=torch.float64)

    def hook(index):
        def fn(_module, args, output):
            cos = F.cosine_similarity(args[0].double(), output.double(), dim=-1, eps=1e-12)
            sums[index] += (1 - cos).sum().cpu()
            counts[index] += cos.numel()
        return fn

    handles = [block.register_forward_hook(hook(i)) for i, block in enumerate(model.blocks)]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not counts.all():
        raise ValueError("block_importance needs at least one batch")
    return (sums / counts).float()


def _rebuild(model: SanaDiT, depth: int, block_sources: Sequence[int | None]) -> SanaDiT:
    """A new model of ``depth`` blocks: block j copies ``model.blocks[block_sources[j]]`` (None = a fresh,
    identity-initialised block); every non-block weight is copied."""
    config = {k: v for k, v in model.config.items() if not k.startswith("_")}
    new = type(model)(**{**config, "depth": depth})
    old_state = model.state_dict()
    state = {k: v for k, v in old_state.items() if not k.startswith("blocks.")}
    for j, src in enumerate(block_sources):
        if src is None:
            block_state = new.blocks[j].init_identity().state_dict()
        else:
            prefix = f"blocks.{src}."
            block_state = {k[len(prefix):]: v for k, v in old_state.items() if k.startswith(prefix)}
        state.update({f"blocks.{j}.{k}": v for k, v in block_state.items()})
    new.load_state_dict(state, strict=True)
    param = next(model.parameters())
    return new.to(device=param.device, dtype=param.dtype).train(model.training)


def prune_blocks(model: SanaDiT, keep_indices: Sequence[int]) -> SanaDiT:
    """A copy of ``model`` with only the blocks ``keep_indices`` (in that order; config ``depth`` updated).
    Fine-tune briefly afterwards (SANA 1.5: ~100 steps) to recover quality."""
    keep = [int(i) for i in keep_indices]
    depth = len(model.blocks)
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < depth for i in keep):
        raise ValueError(f"keep_indices must be distinct block indices in 0..{depth - 1}, got {list(keep_indices)}")
    return _rebuild(model, len(keep), keep)


def grow_depth(model: SanaDiT, new_depth: int, positions: str | Sequence[int] = "end") -> SanaDiT:
    """A deeper copy of ``model`` (SANA 1.5's depth growth with partial preservation): the old blocks keep
    their weights and order, the ``new_depth − depth`` new blocks start as identity maps (their output
    layers zeroed), so the grown model computes exactly the same function at init.

    ``positions``: ``"end"`` (new blocks after the old ones), ``"start"``, or the new blocks' indices in the
    grown stack (e.g. ``[1, 3]`` to interleave).
    """
    depth = len(model.blocks)
    n_new = int(new_depth) - depth
    if n_new < 0:
        raise ValueError(f"new_depth {new_depth} is smaller than the current depth {depth}; use prune_blocks")
    if positions == "end":
        new_slots = set(range(depth, new_depth))
    elif positions == "start":
        new_slots = set(range(n_new))
    elif isinstance(positions, str):
        raise ValueError(f"positions must be 'end', 'start' or a list of indices, got {positions!r}")
    else:
        new_slots = {int(i) for i in positions}
        if len(new_slots) != n_new or len(positions) != n_new or not all(0 <= i < new_depth for i in new_slots):
            raise ValueError(f"positions must be {n_new} distinct indices in 0..{new_depth - 1}, got {list(positions)}")
    old = iter(range(depth))
    return _rebuild(model, new_depth, [None if j in new_slots else next(old) for j in range(new_depth)])


__all__ = [
    "CaptionEmbedder",
    "FinalLayer",
    "LinearSelfAttention",
    "MixFFN",
    "SanaBlock",
    "SanaDiT",
    "SoftmaxSelfAttention",
    "TextContext",
    "TimestepEmbedder",
    "block_importance",
    "grow_depth",
    "make_self_attention",
    "prune_blocks",
    "timestep_embedding",
]
