"""Diffusion Mamba (DiM): a DiT whose token mixer is a bidirectional selective state-space model, for images
and video, in pixel space (Mo & Tian, arXiv 2405.15881; scan orders after ZigMa, arXiv 2403.13802).

Tokens are ``p × p`` pixel patches of every frame: a clip ``[B, C, F, H, W]`` becomes ``F·(H/p)·(W/p)``
tokens (an image is a one-frame clip). Each block:

    x ← x + gate_ssm · BiSSM(LN(x)·(1 + scale_ssm) + shift_ssm, order_i)
    x ← x + CrossAttn(LN(x), text)                              (the shared CrossWKV: one state per prompt)
    x ← x + gate_mlp · MLP(LN(x)·(1 + scale_mlp) + shift_mlp)

with adaLN-Zero (DiT): every block maps c = t_emb (+ pooled text) through SiLU → Linear(C, 6C), zero-init,
so every block starts as the identity.

**BiSSM** (:class:`BidirectionalSSM`) is Mamba's mixer in its SSD / Mamba-2 form (scalar decay per head), run
once along the scan order and once along its reverse (Vim's "v2" style: two branches with their own conv,
Δ/B/C projection, A and D; outputs averaged, then gated by SiLU(z)). Per direction, on tokens in scan order:

    x, z = in_proj(u)                          u ∈ [N, C],  x, z ∈ [N, E]  (E = expand·C, H heads of P)
    x̃ = SiLU(causal depthwise conv(x))        kernel d_conv, along the scan
    Δ_h = softplus(W_Δ x̃ + b_Δ)  [N, H];   B, C_ = W_B x̃, W_C x̃  [N, d_state]
    h_t = exp(Δ_t·A) h_{t−1} + B_t (Δ_t x̃_t)ᵀ,   y_t = C_tᵀ h_t + D ⊙ x̃_t      (A = −exp(A_log) < 0 per head)
    out = out_proj(RMSNorm(mean of the two directions' y · SiLU(z)))

The recurrence is the operator core's ``linear_attention(q=C, k=B, v=Δ·x̃, causal=True, log_decay=Δ·A)``
(chunked matmul form on CPU, Triton on GPU): linear in the number of tokens. Each direction runs in pieces of
:data:`TOKEN_CHUNK` tokens with the scan state and the conv's inputs carried from piece to piece, and the
token-wise layers (norms, projections, CrossWKV read, MLP) run piece by piece too, so no temporary spans the
whole sequence. Scan, A_log and D stay in float32 (half precision made users' Mamba NaN).

**Scan orders** (:func:`scan_orders`): a scan sees tokens as a 1-D sequence, so the order decides which
neighbours are close. ``scan="zigzag"``: images use ZigMa's eight spatially continuous snakes (four corners ×
row / column), layer i uses order i mod 8; videos cycle spatial snakes within frames (frames in order) and
temporal scans (each spatial position through all frames, positions in snake order, time direction alternating
so the path stays continuous), as spatial, spatial, temporal ("sst"). ``scan="raster"``: plain row-major
order in every layer (the ablation baseline). Orders are permutations applied with ``index_select`` before the
mixer and undone after it.

Positions: fixed sinusoidal embeddings, 2-D over the patch grid plus 1-D over frames, so any frame count and
any size divisible by p work. With ``frame_conditioning`` the patch embedding reads one extra channel, the
frame mask (1 = this frame is given): frame continuation is temporal inpainting, the given frames enter clean
and the model generates the rest.

**Layout conditioning** (``layout_conditioning=True``; :class:`LayoutEmbedder`): besides the caption, the model
can read a layout, per object a noun phrase and a bounding box in every frame (GLIGEN's grounding, added to
the tokens instead of attended to). Each object's box becomes a pixel mask; every token gets, per object, a
linear map of the mask's ``p × p`` pixels inside its patch (where in the patch the object is) plus the mask's
coverage of the patch times a vector made from the phrase's pooled text embedding (what the object is); the
objects' terms add up and join the patch embedding. Both maps start at zero, so a trained model that gains a
layout path computes what it computed before. Which object is which colour and shape, and where it goes, is
then written at the tokens it concerns: a two-object caption no longer has to be bound by the model.

Reading order: scan orders, position embeddings, the SSM mixer, block, final layer, model class.
"""

from __future__ import annotations

import math
from functools import lru_cache

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
    TextConditioning,
    TimestepEmbedder,
    TokenPool,
    layer_norm,
    make_pooled_embedder,
    modulate,
    sincos_1d,
    xavier_init,
)

SCAN_MODES = ("zigzag", "raster")
MIXERS = ("ssm", "softmax")
MAX_FRAMES = 256
# Tokens per piece for token-wise work and for the scan, whose state and conv inputs carry from piece to piece:
# no temporary spans the whole sequence, so time per token stays flat as clips grow (whole-sequence
# temporaries of ~100 MB each made 64k tokens cost 1.6× per token what 4k did: page faults and cache misses).
TOKEN_CHUNK = 4096


def tokenwise(fn, *tensors: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``fn(*pieces)`` over ``tensors`` ``[B, N, ...]`` cut into pieces of ``chunk`` tokens (default
    :data:`TOKEN_CHUNK`) along N, outputs concatenated; ``fn`` must treat tokens independently."""
    chunk = chunk or TOKEN_CHUNK
    n = tensors[0].shape[1]
    if n <= chunk:
        return fn(*tensors)
    return torch.cat([fn(*(t[:, s : s + chunk] for t in tensors)) for s in range(0, n, chunk)], dim=1)

# Scan orders


def snake_order(h: int, w: int, corner: int = 0, columns: bool = False) -> torch.Tensor:
    """A spatially continuous boustrophedon path over an ``h × w`` grid: ``[h·w]`` row-major token indices.

    ``corner`` 0..3 picks the start (top-left, top-right, bottom-left, bottom-right); ``columns`` walks
    columns (alternating down / up) instead of rows (alternating left / right). Consecutive tokens of the
    path are always grid neighbours.
    """
    grid = torch.arange(h * w).reshape(h, w)
    if corner in (1, 3):
        grid = grid.flip(1)
    if corner in (2, 3):
        grid = grid.flip(0)
    if columns:
        grid = grid.t()
    grid = grid.clone()
    grid[1::2] = grid[1::2].flip(1)
    return grid.reshape(-1)


def zigzag_orders_2d(h: int, w: int) -> list[torch.Tensor]:
    """ZigMa's eight snakes: corners 0..3, rows then columns for each."""
    return [snake_order(h, w, corner, columns) for corner in range(4) for columns in (False, True)]


@lru_cache(maxsize=64)
def scan_orders(frames: int, h: int, w: int, scan: str = "zigzag") -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
    """The cycle of (order, inverse) permutations over ``frames·h·w`` tokens (token index ``(f·h + y)·w + x``);
    block i uses entry ``i mod len``. ``order[j]`` is the token at scan position j; ``inverse[order] = arange``.
    """
    if scan not in SCAN_MODES:
        raise ValueError(f"scan must be one of {SCAN_MODES}, got {scan!r}")
    n_frame = h * w
    if scan == "raster":
        orders = [torch.arange(frames * n_frame)]
    else:
        snakes = zigzag_orders_2d(h, w)
        offsets = torch.arange(frames)[:, None] * n_frame
        spatial = [(offsets + s[None]).reshape(-1) for s in snakes]  # frame by frame, a snake inside each
        if frames == 1:
            orders = spatial
        else:
            temporal = []
            for s in snakes[::2]:  # each position through every frame; time direction alternates per position
                along_time = offsets[:, 0][None, :] + s[:, None]  # [positions, frames]
                along_time[1::2] = along_time[1::2].flip(1)
                temporal.append(along_time.reshape(-1))
            orders = []
            for i in range(4):  # spatial, spatial, temporal
                orders += [spatial[2 * i], spatial[2 * i + 1], temporal[i]]
    return tuple((o, torch.argsort(o)) for o in orders)


# Position embeddings


@lru_cache(maxsize=32)
def position_embedding(frames: int, h: int, w: int, dim: int) -> torch.Tensor:
    """``[frames·h·w, dim]``: 2-D sin-cos over the patch grid (half the channels per axis) plus 1-D sin-cos
    over the frame index (all channels, scaled by 1/2 so neither dominates)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    spatial = torch.cat([sincos_1d(ys.reshape(-1), dim // 2), sincos_1d(xs.reshape(-1), dim - dim // 2)], dim=-1)
    temporal = sincos_1d(torch.arange(frames), dim) * 0.5
    return (temporal[:, None, :] + spatial[None]).reshape(frames * h * w, dim)


# The SSM mixer


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


class BidirectionalSSM(nn.Module):
    """Bidirectional selective SSM (SSD form) over tokens ``[B, N, C]`` in a given scan order.

    Shared ``in_proj`` (C → 2E: x and the gate z), a gated RMSNorm (Mamba-2's ``RMSNorm(y · SiLU(z))``;
    without it the product of two growing branches blew training up) and ``out_proj`` (E → C); per direction
    (index 0 forward, 1 backward): a causal depthwise conv along its scan direction, ``x_proj``
    (E → H + 2·d_state: Δ, B, C), ``dt_bias``, ``A_log`` and ``D`` per head. Mamba's inits: Δ = softplus(x +
    dt_bias) starts log-uniform in [1e-3, 1e-1]; A = −exp(A_log) uniform in [1, 16] (Mamba-2); D = 1.
    """

    def __init__(self, dim: int, expand: int = 2, head_dim: int = 32, d_state: int = 16, d_conv: int = 4,
                 dt_min: float = 1e-3, dt_max: float = 0.1):
        super().__init__()
        inner = expand * dim
        if inner % head_dim:
            raise ValueError(f"expand·width = {inner} is not a multiple of ssm_head_dim {head_dim}")
        self.dim, self.inner, self.head_dim, self.d_state, self.d_conv = dim, inner, head_dim, d_state, d_conv
        self.n_heads = inner // head_dim
        self.in_proj = xavier_init(nn.Linear(dim, 2 * inner, bias=False))
        # both directions' depthwise convs as one grouped conv over 2E channels
        self.conv = nn.Conv1d(2 * inner, 2 * inner, d_conv, groups=2 * inner, padding=0)
        self.x_proj = nn.ModuleList(xavier_init(nn.Linear(inner, self.n_heads + 2 * d_state, bias=False))
                                    for _ in range(2))
        dt = torch.exp(torch.rand(2, self.n_heads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.dt_bias = nn.Parameter(inverse_softplus(dt.clamp(min=1e-4)))
        self.A_log = nn.Parameter(torch.log(torch.empty(2, self.n_heads).uniform_(1, 16)))
        self.D = nn.Parameter(torch.ones(2, self.n_heads))
        self.norm = RMSNorm(inner)
        self.out_proj = xavier_init(nn.Linear(inner, dim, bias=False))

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, inner={self.inner}, heads={self.n_heads}, head_dim={self.head_dim}, "
                f"d_state={self.d_state}, d_conv={self.d_conv}")

    def forward(self, x: torch.Tensor, order: torch.Tensor | None = None, inverse: torch.Tensor | None = None,
                pre=None, *, chunk: int | None = None) -> torch.Tensor:
        """``x [B, N, C]`` (tokens in their natural order) → ``[B, N, C]``; ``order`` / ``inverse``: the scan
        permutation and its inverse (None = natural order); ``pre``: a token-wise function applied to ``x``
        first (the block's LN and modulation), fused into the pieces. Work runs in pieces of ``chunk`` tokens
        (default :data:`TOKEN_CHUNK`); the result does not depend on ``chunk``."""
        chunk = chunk or TOKEN_CHUNK
        e = self.inner
        xz = tokenwise(lambda t: self.in_proj(pre(t) if pre is not None else t), x, chunk=chunk)
        xs, z = xz[..., :e], xz[..., e:]
        if order is not None:
            xs = xs.index_select(1, order)
        # forward branch along the scan order, backward branch along its reverse; directions averaged
        y = 0.5 * (self._scan(xs, 0, chunk) + self._scan(xs, 1, chunk))
        y = y.to(x.dtype)
        if inverse is not None:
            y = y.index_select(1, inverse)
        return tokenwise(lambda y_, z_: self.out_proj(self.norm(y_ * F.silu(z_))), y, z, chunk=chunk)

    def _scan(self, xs: torch.Tensor, d: int, chunk: int) -> torch.Tensor:
        """Direction ``d`` (0: along ``xs``, 1: from its end) of the SSM over ``xs [B, N, E]`` in scan order, in
        pieces of ``chunk`` tokens: the scan state and the conv's last ``d_conv − 1`` inputs carry from piece to
        piece, so the result equals one pass over the whole sequence. Returns ``y + D·x̃`` ``[B, N, E]``
        (float32) in ``xs``'s order."""
        b, n, e = xs.shape
        weight, bias = self.conv.weight[d * e : (d + 1) * e], self.conv.bias[d * e : (d + 1) * e]
        a = -torch.exp(self.A_log[d].float())
        halo = xs.new_zeros(b, self.d_conv - 1, e)  # causal conv: zeros before the first token
        state, outs = None, []
        starts = range(0, n, chunk)
        for s in reversed(starts) if d else starts:
            piece = xs[:, s : s + chunk]
            u = torch.cat([halo, piece.flip(1) if d else piece], dim=1)
            halo = u[:, u.shape[1] - (self.d_conv - 1) :]
            u = F.silu(F.conv1d(u.transpose(1, 2), weight, bias, groups=e)).transpose(1, 2)  # [B, L, E]
            dt, b_t, c_t = self.x_proj[d](u).float().split([self.n_heads, self.d_state, self.d_state], dim=-1)
            dt = F.softplus(dt + self.dt_bias[d].float())  # [B, L, H]
            u = rearrange(u.float(), "b l (h p) -> b h l p", p=self.head_dim)
            size = (b, self.n_heads, u.shape[2], self.d_state)
            y, state = linear_attention(c_t[:, None].expand(size), b_t[:, None].expand(size),
                                        u * dt.transpose(1, 2)[..., None], causal=True,
                                        log_decay=(dt * a).transpose(1, 2), initial_state=state, return_state=True)
            y = rearrange(y + u * self.D[d].float()[:, None, None], "b h l p -> b l (h p)")
            outs.append(y.flip(1) if d else y)
        return torch.cat(outs[::-1] if d else outs, dim=1)


class SoftmaxMixer(nn.Module):
    """Multi-head softmax self-attention over all tokens, ``[B, N, C] -> [B, N, C]``: the quadratic baseline
    (``mixer="softmax"``: the same DiT with attention in place of the SSM). Order-free, so it ignores the scan."""

    def __init__(self, dim: int, head_dim: int = 32):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} is not a multiple of head_dim {head_dim}")
        self.dim, self.head_dim = dim, head_dim
        self.qkv = xavier_init(nn.Linear(dim, 3 * dim, bias=False))
        self.proj = xavier_init(nn.Linear(dim, dim))

    def extra_repr(self) -> str:
        return f"heads={self.dim // self.head_dim}, head_dim={self.head_dim}"

    def forward(self, x: torch.Tensor, order: torch.Tensor | None = None, inverse: torch.Tensor | None = None,
                pre=None) -> torch.Tensor:
        x = pre(x) if pre is not None else x
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", d=self.head_dim) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)"))


# Layout conditioning


def box_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``boxes [..., 4]`` (x0, y0, x1, y1 pixels, x1 / y1 exclusive) → pixel masks ``[..., height, width]``
    (float, 1 inside)."""
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    inside_y = (ys >= boxes[..., 1:2]) & (ys < boxes[..., 3:4])  # [..., H]
    inside_x = (xs >= boxes[..., 0:1]) & (xs < boxes[..., 2:3])  # [..., W]
    return (inside_y[..., :, None] & inside_x[..., None, :]).to(boxes.dtype)


class LayoutEmbedder(nn.Module):
    """Token features ``[B, F·h·w, C]`` of a layout (module docstring): ``boxes [B, K, F, 4]`` pixels,
    ``phrases [B, K, P]`` (pooled text of each object's noun phrase), ``mask [B, K]`` (True = a real object).

    Per token and object: ``W_pos · m`` (m: the object's ``p·p`` mask pixels in the token's patch) ``+ mean(m)
    · v(phrase)`` with ``v = Linear(SiLU(Linear(RMSNorm(phrase))))``; summed over the objects. ``W_pos`` and
    v's last Linear start at zero.
    """

    def __init__(self, phrase_dim: int, dim: int, patch_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.position = zero_init(nn.Linear(patch_size * patch_size, dim, bias=False))
        first = nn.Linear(phrase_dim, dim)
        with torch.no_grad():  # by hand: diffusers turns nn.init off while it builds a model to load into
            first.weight.copy_(torch.randn(dim, phrase_dim) * phrase_dim**-0.5)
            first.bias.zero_()
        self.phrase = nn.Sequential(first, nn.SiLU(), zero_init(nn.Linear(dim, dim)))

    def forward(self, boxes: torch.Tensor, phrases: torch.Tensor, mask: torch.Tensor, height: int, width: int
                ) -> torch.Tensor:
        p = self.patch_size
        dtype = self.position.weight.dtype
        m = box_masks(boxes.float(), height, width) * mask.float()[:, :, None, None, None]  # [B, K, F, H, W]
        m = rearrange(m, "b k f (h p) (w q) -> b k (f h w) (p q)", p=p, q=p).to(dtype)
        what = self.phrase(F.rms_norm(phrases.float(), phrases.shape[-1:], eps=1e-6).to(dtype))  # [B, K, C]
        return (self.position(m) + m.mean(-1, keepdim=True) * what[:, :, None]).sum(1)


# Block


class DiMBlock(nn.Module):
    """adaLN-Zero block: modulated BiSSM, CrossWKV text cross-attention, modulated GELU(tanh) MLP.

    ``forward(x [B, N, C], c [B, C], order, inverse, context, context_mask, state) -> [B, N, C]``.
    """

    def __init__(self, dim: int, *, expand: int, ssm_head_dim: int, d_state: int, d_conv: int, mlp_ratio: float,
                 cross_attn: str, cross_head_dim: int, layer_id: int, n_layers: int, mixer: str = "ssm"):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 6 * dim)))
        self.mixer = (BidirectionalSSM(dim, expand, ssm_head_dim, d_state, d_conv) if mixer == "ssm"
                      else SoftmaxMixer(dim, ssm_head_dim))
        self.cross_attn = CrossWKV(dim, dim, head_dim=cross_head_dim, mode=cross_attn, layer_id=layer_id,
                                   n_layers=n_layers)
        hidden = int(round(dim * mlp_ratio))
        self.mlp = nn.Sequential(xavier_init(nn.Linear(dim, hidden)), nn.GELU(approximate="tanh"),
                                 xavier_init(nn.Linear(hidden, dim)))

    def forward(self, x: torch.Tensor, c: torch.Tensor, order: torch.Tensor | None, inverse: torch.Tensor | None,
                context: torch.Tensor | None, context_mask: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> torch.Tensor:
        mod = self.adaLN_modulation(c)[:, None].to(x.dtype)
        shift_ssm, scale_ssm, gate_ssm, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = self.mixer(x, order, inverse, pre=lambda t: modulate(layer_norm(t), shift_ssm, scale_ssm))
        if self.cross_attn.mode == "crosswkv" and state is None and context is not None:
            state = self.cross_attn.encode_context(context, context_mask)  # once, not once per piece

        def rest(x_: torch.Tensor, h_: torch.Tensor) -> torch.Tensor:
            x_ = x_ + gate_ssm * h_
            x_ = x_ + self.cross_attn(layer_norm(x_), context, context_mask, state=state)
            return x_ + gate_mlp * self.mlp(modulate(layer_norm(x_), shift_mlp, scale_mlp))

        # every image token reads the text on its own (crosswkv, softmax); "joint" mixes tokens, so runs whole
        return tokenwise(rest, x, h) if self.cross_attn.mode != "joint" else rest(x, h)


# Final layer


class FinalLayer(nn.Module):
    """DiT's final layer: adaLN (SiLU → zero-init Linear(C, 2C)) on LN(x), then a zero-init Linear to
    ``p·p·C_out`` values per token."""

    def __init__(self, dim: int, patch_size: int, out_channels: int):
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), zero_init(nn.Linear(dim, 2 * dim)))
        self.linear = zero_init(nn.Linear(dim, patch_size * patch_size * out_channels))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c)[:, None].to(x.dtype).chunk(2, dim=-1)
        return self.linear(modulate(layer_norm(x), shift, scale))


# Model class


class DiffusionMamba(TextConditioning, ModelMixin, ConfigMixin):
    """Diffusion Mamba over images ``[B, C, H, W]`` and clips ``[B, C, F, H, W]``; predicts the rectified-flow
    velocity ``ε − x₀`` (see :mod:`genmodels.diffusion.flow`).

    Config: ``in_channels`` / ``out_channels`` (None = in), ``patch_size`` p, ``sample_size`` (default side),
    ``num_frames`` (default clip length of the pipelines; 1 = an image model), ``width`` C, ``depth``,
    ``expand`` / ``ssm_head_dim`` / ``d_state`` / ``d_conv`` (the SSM), ``mlp_ratio``, ``text_dim``,
    ``pooled_text_dim`` (None = text_dim, 0 = none), ``cross_attn`` (``"crosswkv" | "joint" | "softmax"``),
    ``cross_head_dim``, ``timestep_freq_dim``, ``scan`` (``"zigzag"`` or ``"raster"``),
    ``frame_conditioning`` (read a frame-mask channel: given frames for continuation), ``mixer`` (``"ssm"``;
    ``"softmax"``: the same DiT with softmax self-attention, heads of ``ssm_head_dim``, the quadratic baseline),
    ``pooled_mlp`` (pooled text through :class:`~genmodels.layers.dit.PooledTextEmbedder`; False: one Linear),
    ``token_pool`` (add :class:`~genmodels.layers.dit.TokenPool` of the caption tokens to the adaLN input, so
    words the pooled CLIP vector blurs, like a direction, reach every block's modulation),
    ``layout_conditioning`` (read a layout, :class:`LayoutEmbedder`: per object a phrase and a box per frame).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["DiMBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        patch_size: int = 4,
        sample_size: int = 32,
        num_frames: int = 8,
        width: int = 128,
        depth: int = 8,
        expand: int = 2,
        ssm_head_dim: int = 32,
        d_state: int = 16,
        d_conv: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 64,
        pooled_text_dim: int | None = None,
        cross_attn: str = "crosswkv",
        cross_head_dim: int = 64,
        timestep_freq_dim: int = 256,
        scan: str = "zigzag",
        frame_conditioning: bool = False,
        mixer: str = "ssm",
        pooled_mlp: bool = False,
        token_pool: bool = False,
        layout_conditioning: bool = False,
    ):
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"mixer must be one of {MIXERS}, got {mixer!r}")
        if cross_attn not in CROSS_ATTN_MODES:
            raise ValueError(f"cross_attn must be one of {CROSS_ATTN_MODES}, got {cross_attn!r}")
        if scan not in SCAN_MODES:
            raise ValueError(f"scan must be one of {SCAN_MODES}, got {scan!r}")
        if depth < 1 or patch_size < 1 or sample_size % patch_size or not 1 <= num_frames <= MAX_FRAMES:
            raise ValueError(f"need depth ≥ 1, sample_size divisible by patch_size and 1 ≤ num_frames ≤ "
                             f"{MAX_FRAMES}, got depth={depth}, patch_size={patch_size}, sample_size={sample_size}, "
                             f"num_frames={num_frames}")
        self.patch_size = patch_size
        self.out_channels = out_channels or in_channels
        pooled_text_dim = text_dim if pooled_text_dim is None else pooled_text_dim
        self.gradient_checkpointing = False

        self.patch_embed = xavier_init(nn.Conv2d(in_channels + int(frame_conditioning), width, patch_size,
                                                 stride=patch_size))
        self.t_embedder = TimestepEmbedder(width, timestep_freq_dim)
        self.pooled_embedder = make_pooled_embedder(pooled_text_dim, width, pooled_mlp)
        self.init_text_side(text_dim, pooled_text_dim, width)
        self.text_pool = TokenPool(width) if token_pool else None
        self.layout_embedder = (LayoutEmbedder(pooled_text_dim or text_dim, width, patch_size)
                                if layout_conditioning else None)
        self.blocks = nn.ModuleList(
            DiMBlock(width, expand=expand, ssm_head_dim=ssm_head_dim, d_state=d_state, d_conv=d_conv,
                     mlp_ratio=mlp_ratio, cross_attn=cross_attn, cross_head_dim=cross_head_dim, layer_id=i,
                     n_layers=depth, mixer=mixer)
            for i in range(depth)
        )
        self.final_layer = FinalLayer(width, patch_size, self.out_channels)
        # Weight decay on Linear / conv weights only: not on A_log, D, dt_bias, norms or CrossWKV's vectors.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
                apply_wd(module)

    def extra_repr(self) -> str:
        c = self.config
        return (f"patch_size={c.patch_size}, width={c.width}, depth={c.depth}, mixer={c.mixer!r}, scan={c.scan!r}, "
                f"cross_attn={c.cross_attn!r}, frame_conditioning={c.frame_conditioning}")

    # Configurations

    @classmethod
    def tiny_config(cls) -> dict:
        """Patch 4, width 64, depth 2: milliseconds on a 4-frame 16×16 clip."""
        return dict(in_channels=3, patch_size=4, sample_size=16, num_frames=4, width=64, depth=2, expand=2,
                    ssm_head_dim=32, d_state=8, mlp_ratio=2.0, text_dim=32, cross_attn="crosswkv",
                    cross_head_dim=32, frame_conditioning=True)

    @classmethod
    def moving_shapes_config(cls) -> dict:
        """The moving-shapes text-to-video model: 8-frame 32×32 RGB clips, patch 4 (8×8 tokens per frame, 512
        per clip), width 128, depth 8, frame conditioning for continuation, the tiny CLIP's 64-wide text."""
        return dict(in_channels=3, patch_size=4, sample_size=32, num_frames=8, width=128, depth=8, expand=2,
                    ssm_head_dim=32, d_state=16, mlp_ratio=3.0, text_dim=64, pooled_text_dim=64,
                    cross_attn="crosswkv", cross_head_dim=64, frame_conditioning=True)

    @classmethod
    def shapes_config(cls) -> dict:
        """The image model for the shapes world: 64×64 RGB, patch 8, one frame, the same width and depth."""
        return dict(in_channels=3, patch_size=8, sample_size=64, num_frames=1, width=128, depth=8, expand=2,
                    ssm_head_dim=32, d_state=16, mlp_ratio=3.0, text_dim=64, pooled_text_dim=64,
                    cross_attn="crosswkv", cross_head_dim=64)

    def param_groups(self, base_lr: float = 1e-4, weight_decay: float = 0.0) -> list[dict]:
        """AdamW groups: weight decay only on Linear / conv weights; one learning rate for everything."""
        return make_param_groups(self, base_lr, weight_decay, mapping_lr_scale=1.0)

    # Input checks

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` unless both sides are positive multiples of the patch size."""
        p = self.patch_size
        if height < p or width < p or height % p or width % p:
            raise ValueError(f"frame sides must be positive multiples of patch_size {p}, got {height}×{width}")

    def _orders(self, frames: int, h: int, w: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(o.to(device), i.to(device)) for o, i in scan_orders(frames, h, w, self.config.scan)]

    def _layout_features(self, boxes, phrases, mask, drop, batch: int, frames: int, height: int, width: int
                         ) -> torch.Tensor:
        """The layout's token features (checked shapes; dropped items and absent objects give zeros)."""
        if self.layout_embedder is None:
            raise ValueError("a layout was given, but the model was built with layout_conditioning=False")
        if boxes is None or phrases is None:
            raise ValueError("a layout needs both layout_boxes and layout_phrases")
        if boxes.ndim != 4 or tuple(boxes.shape[::3]) != (batch, 4) or boxes.shape[2] != frames:
            raise ValueError(f"layout_boxes must be [B, K, F, 4] = [{batch}, K, {frames}, 4], got "
                             f"{tuple(boxes.shape)}")
        k = boxes.shape[1]
        if tuple(phrases.shape) != (batch, k, self.layout_embedder.phrase[0].in_features):
            raise ValueError(f"layout_phrases must be [B, K, P] = "
                             f"{(batch, k, self.layout_embedder.phrase[0].in_features)}, got {tuple(phrases.shape)}")
        if not torch.isfinite(boxes).all():
            raise ValueError("layout_boxes must be finite")
        mask = torch.ones(batch, k, dtype=torch.bool, device=boxes.device) if mask is None else mask.bool()
        if tuple(mask.shape) != (batch, k):
            raise ValueError(f"layout_mask must be [B, K] = {(batch, k)}, got {tuple(mask.shape)}")
        if drop is not None:
            mask = mask & ~drop.bool().reshape(batch, 1).to(mask.device)
        return self.layout_embedder(boxes, phrases, mask, height, width)

    # Forward

    def forward(self, x: torch.Tensor, timestep: torch.Tensor | float,
                encoder_hidden_states: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None, pooled_text: torch.Tensor | None = None, *,
                context_states=None, drop_text: torch.Tensor | None = None,
                frame_mask: torch.Tensor | None = None, layout_boxes: torch.Tensor | None = None,
                layout_phrases: torch.Tensor | None = None, layout_mask: torch.Tensor | None = None,
                drop_layout: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity prediction.

        Args:
            x: ``[B, C_in, F, H, W]`` clip or ``[B, C_in, H, W]`` image, ``x_t = (1 − t)·x₀ + t·ε``; with
                ``frame_mask`` the given frames hold their clean values.
            timestep: t ∈ [0, 1] (1 = pure noise), scalar or ``[B]``.
            encoder_hidden_states / encoder_attention_mask / pooled_text / context_states / drop_text: the text,
                as for :class:`~genmodels.sana.SanaDiT` (None = the null text).
            frame_mask: ``[B, F]`` bool, True = a given (clean) frame; None = none given. Needs a model built
                with ``frame_conditioning=True``.
            layout_boxes / layout_phrases / layout_mask: a layout (needs ``layout_conditioning=True``):
                ``[B, K, F, 4]`` boxes in pixels (x0, y0, x1, y1; x1, y1 exclusive), ``[B, K, P]`` pooled text of
                each object's phrase, ``[B, K]`` bool (True = a real object; None = all). None = no layout.
            drop_layout: ``[B]`` bool, items whose layout is ignored (training dropout, the unconditional half
                of guidance).

        Returns:
            the velocity ``ε − x₀``, shaped like ``x`` (with ``C_out`` channels).
        """
        if x.ndim not in (4, 5):
            raise ValueError(f"x must be [B, C, F, H, W] or [B, C, H, W], got shape {tuple(x.shape)}")
        is_image = x.ndim == 4
        if is_image:
            x = x[:, :, None]
        batch, channels, frames, height, width = x.shape
        if channels != self.config.in_channels:
            raise ValueError(f"x has {channels} channels, the model expects {self.config.in_channels}")
        if not 1 <= frames <= MAX_FRAMES:
            raise ValueError(f"clips must have 1..{MAX_FRAMES} frames, got {frames}")
        self.check_input_size(height, width)
        timestep = torch.as_tensor(timestep, device=x.device, dtype=torch.float32)
        timestep = timestep.reshape(1).expand(batch) if timestep.numel() == 1 else timestep.reshape(batch)
        text, pooled_text = self.resolve_text(batch, encoder_hidden_states, encoder_attention_mask, pooled_text,
                                              context_states, drop_text)

        c = self.add_pooled_text(self.t_embedder(timestep), pooled_text)
        if self.text_pool is not None:
            c = c + self.text_pool(text.context, text.mask)

        # Patching: every frame separately; the frame mask rides along as one more input channel.
        x = x.to(self.patch_embed.weight.dtype)
        if self.config.frame_conditioning:
            if frame_mask is None:
                frame_mask = torch.zeros(batch, frames, dtype=torch.bool, device=x.device)
            if tuple(frame_mask.shape) != (batch, frames):
                raise ValueError(f"frame_mask must be [B, F] = {(batch, frames)}, got {tuple(frame_mask.shape)}")
            m = frame_mask.to(x.dtype)[:, None, :, None, None].expand(batch, 1, frames, height, width)
            x = torch.cat([x, m], dim=1)
        elif frame_mask is not None:
            raise ValueError("frame_mask given, but the model was built with frame_conditioning=False")
        x = self.patch_embed(rearrange(x, "b c f h w -> (b f) c h w"))
        h, w = x.shape[-2:]
        x = rearrange(x, "(b f) c h w -> b (f h w) c", b=batch)
        x = x + position_embedding(frames, h, w, x.shape[-1]).to(device=x.device, dtype=x.dtype)
        if layout_boxes is not None or layout_phrases is not None:
            x = x + self._layout_features(layout_boxes, layout_phrases, layout_mask, drop_layout, batch, frames,
                                          height, width).to(x.dtype)

        orders = self._orders(frames, h, w, x.device)
        for i, block in enumerate(self.blocks):
            order, inverse = orders[i % len(orders)]
            state = None if text.states is None else text.states[i]
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, c, order, inverse, text.context, text.mask, state)
            else:
                x = block(x, c, order, inverse, text.context, text.mask, state)

        x = self.final_layer(x, c)
        p = self.patch_size
        out = rearrange(x, "b (f h w) (p q c) -> b c f (h p) (w q)", f=frames, h=h, w=w, p=p, q=p)
        return out[:, :, 0] if is_image else out


__all__ = [
    "BidirectionalSSM",
    "DiMBlock",
    "DiffusionMamba",
    "LayoutEmbedder",
    "SoftmaxMixer",
    "box_masks",
    "position_embedding",
    "scan_orders",
    "snake_order",
    "zigzag_orders_2d",
]
