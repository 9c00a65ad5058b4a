"""DiT conditioning pieces shared by the text-conditioned diffusion transformers (SANA-style DiT, Diffusion Mamba).

* :func:`timestep_embedding`, :class:`TimestepEmbedder`: t ∈ [0, 1] → sinusoidal(1000·t) → MLP (PixArt).
* :class:`CaptionEmbedder`: text tokens → model width (SANA's ``y_embedder`` + RMSNorm).
* :func:`make_pooled_embedder`, :class:`PooledTextEmbedder`: the pooled text vector → model width, added to the
  timestep embedding (a plain Linear, or an RMS-normalised MLP: ``pooled_mlp=True``).
* :class:`TextContext`, :class:`TextConditioning`: the text side of a model — a learned null text for
  classifier-free guidance, caption dropout, input checks, and CrossWKV states absorbed once per prompt batch.
  A model using the mixin calls ``init_text_side`` (``caption_embedder``, ``null_text_embedding``,
  ``null_pooled_embedding``) and owns ``pooled_embedder`` (None without pooled input), ``blocks`` (each
  with a ``cross_attn`` :class:`~genmodels.layers.CrossWKV`), and config fields ``text_dim`` and ``cross_attn``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .norms import RMSNorm

LN_EPS = 1e-6  # PixArt / SANA / DiT LayerNorms (no affine)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(t·f_j), sin(t·f_j)]``, ``f_j = max_period^(−j/half)``: ``[B] -> [B, dim]``
    float32. The models feed it ``1000·t`` (t ∈ [0, 1]), the DDPM-era timestep range PixArt / SANA use."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``x·(1 + scale) + shift``; x ``[B, N, C]``, shift / scale ``[B, 1, C]``."""
    return x * (1 + scale) + shift


def layer_norm(x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the last dim without affine parameters, eps 1e-6."""
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS)


def xavier_init(layer: nn.Module) -> nn.Module:
    """PixArt's / DiT's basic init: Xavier-uniform weight (conv kernels flattened to 2-D), zero bias."""
    nn.init.xavier_uniform_(layer.weight.view(layer.weight.shape[0], -1))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


class TimestepEmbedder(nn.Module):
    """t ∈ [0, 1] → sinusoidal(1000·t) → Linear → SiLU → Linear: ``[B] -> [B, C]`` (PixArt, init N(0, 0.02))."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def extra_repr(self) -> str:
        return f"freq_dim={self.freq_dim}"

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(1000 * t, self.freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


class CaptionEmbedder(nn.Module):
    """Text tokens ``[B, L, text_dim] -> [B, L, C]``: Linear → GELU(tanh) → Linear, then RMSNorm (SANA's
    ``y_embedder`` + ``attention_y_norm``). SANA starts that norm's scale at 0.01; here it starts at 1, since
    CrossWKV's state and its GroupNorm eps assume unit-scale context."""

    def __init__(self, text_dim: int, dim: int):
        super().__init__()
        self.fc1, self.fc2 = xavier_init(nn.Linear(text_dim, dim)), xavier_init(nn.Linear(dim, dim))
        self.norm = RMSNorm(dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc2(F.gelu(self.fc1(y), approximate="tanh")))


class PooledTextEmbedder(nn.Module):
    """Pooled text ``[B, P] -> [B, C]``: RMS-normalise the vector (``x / √(mean x² + 1e-6)``), then Linear → SiLU →
    Linear (SD3's pooled-text projection, VAR's condition MLP).

    CLIP's pooled embedding is L2-normalised (entries ~1/√P), whatever the encoder's width; normalising to unit
    rms makes the path's input scale independent of P and of the encoder, and the hidden layer lets the adaLN
    input depend non-linearly on the caption. In the SANA run trained with a bare ``Linear(P, C)`` (7,500
    steps), that path's output varied across captions by only 0.006 rms (its bias dominated, 0.07 rms) next to
    the ~0.25 rms timestep embedding it is added to; this MLP did not change that at 600 steps (the cause was
    the training noise levels, BENCHMARKS.md, issue 5), so the shipped configs keep the Linear. Both layers keep
    PyTorch's default init.
    """

    def __init__(self, pooled_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(pooled_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.mlp(F.rms_norm(pooled, pooled.shape[-1:], eps=1e-6))


class TokenPool(nn.Module):
    """The projected caption tokens ``[B, L, C]`` (mask ``[B, L]``) → one ``[B, C]`` vector for adaLN: softmax
    attention pooling with a learned score per token (``Linear(C, 1)``), then ``Linear(C, C)``, initialised to
    zero so a model that gains it computes exactly what it computed before.

    Why: CLIP's pooled embedding is the end-of-text token of a causal encoder trained on still images; for
    captions that differ only in a direction word ("moving left" / "moving right") it is nearly the same vector
    (cosine 0.996 with the shipped tiny CLIP), so the adaLN path never learns the direction, while the word's
    own token differs (19 % for left / right, 73 % for up / down). Pooling the tokens lets every block's
    modulation, and so the scans' dynamics, depend on such a word.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        scores = self.score(context).squeeze(-1).float()  # [B, L]
        if mask is not None:
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
        weights = scores.softmax(dim=-1).to(context.dtype)
        return self.proj((weights[..., None] * context).sum(dim=1))


def make_pooled_embedder(pooled_dim: int, dim: int, mlp: bool) -> nn.Module | None:
    """The model's ``pooled_embedder``: None without pooled input (``pooled_dim`` 0), :class:`PooledTextEmbedder`
    when ``mlp``, else the plain ``Linear(pooled_dim, dim)`` of the first shipped models."""
    if not pooled_dim:
        return None
    return PooledTextEmbedder(pooled_dim, dim) if mlp else nn.Linear(pooled_dim, dim)


@dataclass
class TextContext:
    """Text conditioning prepared once per prompt batch (``model.cross_attention_states``) and reused at every
    sampling step.

    ``context``: projected tokens ``[B, L, C]``; ``mask``: ``[B, L]`` bool (True = real token) or None;
    ``states``: one CrossWKV state ``[B, H, d, d]`` float32 per block (``cross_attn="crosswkv"``), else None
    (the joint and softmax modes read ``context`` at every step).
    """

    context: torch.Tensor
    mask: torch.Tensor | None
    states: list[torch.Tensor] | None

    @property
    def batch_size(self) -> int:
        return self.context.shape[0]


class TextConditioning:
    """Mixin: the text side of a text-conditioned DiT (see the module docstring for what the model must own)."""

    def init_text_side(self, text_dim: int, pooled_text_dim: int, width: int) -> None:
        """Create ``caption_embedder`` and the learned null text (tokens, and pooled unless ``pooled_text_dim``
        is 0) in the model's ``__init__``."""
        self.caption_embedder = CaptionEmbedder(text_dim, width)
        self.null_text_embedding = nn.Parameter(torch.randn(1, text_dim) / text_dim**0.5)
        self.null_pooled_embedding = (
            nn.Parameter(torch.randn(1, pooled_text_dim) / pooled_text_dim**0.5) if pooled_text_dim else None
        )

    def add_pooled_text(self, emb: torch.Tensor, pooled_text: torch.Tensor | None) -> torch.Tensor:
        """The timestep embedding ``[B, C]`` plus the projected pooled text (``pooled_embedder``), if given."""
        if pooled_text is None:
            return emb
        if self.pooled_embedder is None:
            raise ValueError("pooled_text given, but the model was built with pooled_text_dim=0")
        return emb + self.pooled_embedder(pooled_text.to(emb.dtype))

    @property
    def pooled_dim(self) -> int:
        """Width of the pooled text input (0: none)."""
        return 0 if self.null_pooled_embedding is None else self.null_pooled_embedding.shape[1]

    def _check_text(self, tokens: torch.Tensor, mask: torch.Tensor | None, pooled: torch.Tensor | None,
                    batch: int | None = None) -> None:
        text_dim, pooled_dim = self.config.text_dim, self.pooled_dim
        if tokens.ndim != 3 or tokens.shape[-1] != text_dim or tokens.shape[1] < 1:
            raise ValueError(f"encoder_hidden_states must be [B, L ≥ 1, {text_dim}], got {tuple(tokens.shape)}")
        if batch is not None and tokens.shape[0] != batch:
            raise ValueError(f"encoder_hidden_states has batch {tokens.shape[0]}, the image batch is {batch}")
        if mask is not None and tuple(mask.shape) != tuple(tokens.shape[:2]):
            raise ValueError(f"encoder_attention_mask must be [B, L] = {tuple(tokens.shape[:2])}, "
                             f"got {tuple(mask.shape)}")
        if pooled is not None:
            if not pooled_dim:
                raise ValueError("pooled_text given, but the model was built with pooled_text_dim=0")
            if tuple(pooled.shape) != (tokens.shape[0], pooled_dim):
                raise ValueError(f"pooled_text must be [B, {pooled_dim}] = {(tokens.shape[0], pooled_dim)}, "
                                 f"got {tuple(pooled.shape)}")

    def null_text(self, batch: int, length: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The null (empty) text for ``batch`` samples: tokens ``[B, length, text_dim]`` holding the learned null
        token at position 0 and zeros after, mask ``[B, length]`` (only position 0 real), and the null pooled
        vector ``[B, pooled_text_dim]`` (None without pooled input)."""
        null = self.null_text_embedding
        tokens = torch.cat([null.expand(batch, 1, -1), null.new_zeros(batch, length - 1, null.shape[1])], dim=1)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=null.device)
        mask[:, 0] = True
        pooled = None if self.null_pooled_embedding is None else self.null_pooled_embedding.expand(batch, -1)
        return tokens, mask, pooled

    def apply_text_dropout(self, encoder_hidden_states: torch.Tensor, encoder_attention_mask: torch.Tensor | None,
                           pooled_text: torch.Tensor | None, drop: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace the text of the samples where ``drop`` ``[B]`` (bool) is True by the null text: one null token,
        the rest masked out, and the null pooled vector in place of a given pooled one. Differentiable w.r.t.
        the null embeddings, so caption dropout trains them. Returns (tokens, mask, pooled)."""
        batch, length = encoder_hidden_states.shape[:2]
        drop = drop.to(device=encoder_hidden_states.device, dtype=torch.bool).reshape(batch)
        null_tokens, null_mask, null_pooled = self.null_text(batch, length)
        mask = encoder_attention_mask
        if mask is None:
            mask = torch.ones(batch, length, dtype=torch.bool, device=encoder_hidden_states.device)
        tokens = torch.where(drop[:, None, None], null_tokens.to(encoder_hidden_states.dtype), encoder_hidden_states)
        mask = torch.where(drop[:, None], null_mask.to(mask.device), mask.bool())
        pooled = pooled_text
        if pooled_text is not None and null_pooled is not None:
            pooled = torch.where(drop[:, None], null_pooled.to(pooled_text.dtype), pooled_text)
        return tokens, mask, pooled

    def cross_attention_states(self, encoder_hidden_states: torch.Tensor,
                               encoder_attention_mask: torch.Tensor | None = None) -> TextContext:
        """Everything the blocks need from the text, computed once per prompt batch: the projected tokens and,
        in crosswkv mode, every block's absorbed WKV state (``CrossWKV.encode_context``). Pass the result as
        ``context_states=`` to ``forward`` at every sampling step (its batch must match the sample batch)."""
        self._check_text(encoder_hidden_states, encoder_attention_mask, None)
        return self._text_context(encoder_hidden_states, encoder_attention_mask, with_states=True)

    def _text_context(self, tokens: torch.Tensor, mask: torch.Tensor | None, with_states: bool) -> TextContext:
        context = self.caption_embedder(tokens.to(self.caption_embedder.fc1.weight.dtype))
        mask = None if mask is None else mask.bool()
        states = None
        if with_states and self.config.cross_attn == "crosswkv":
            states = [block.cross_attn.encode_context(context, mask) for block in self.blocks]
        return TextContext(context=context, mask=mask, states=states)

    def resolve_text(self, batch: int, encoder_hidden_states: torch.Tensor | None,
                     encoder_attention_mask: torch.Tensor | None, pooled_text: torch.Tensor | None,
                     context_states: TextContext | None, drop_text: torch.Tensor | None
                     ) -> tuple[TextContext, torch.Tensor | None]:
        """``forward``'s text arguments → (TextContext, pooled text): checks them against the sample batch,
        applies caption dropout, uses the null text when no text is given."""
        if context_states is not None:
            if encoder_hidden_states is not None or drop_text is not None:
                raise ValueError("give either context_states or encoder_hidden_states / drop_text, not both "
                                 "(apply the dropout before cross_attention_states)")
            if context_states.batch_size != batch:
                raise ValueError(f"context_states has batch {context_states.batch_size}, the sample batch is {batch}")
            return context_states, pooled_text
        if encoder_hidden_states is None:
            encoder_hidden_states, encoder_attention_mask, _ = self.null_text(batch)
        self._check_text(encoder_hidden_states, encoder_attention_mask, pooled_text, batch)
        if drop_text is not None:
            encoder_hidden_states, encoder_attention_mask, pooled_text = self.apply_text_dropout(
                encoder_hidden_states, encoder_attention_mask, pooled_text, drop_text)
        return self._text_context(encoder_hidden_states, encoder_attention_mask, with_states=False), pooled_text


__all__ = [
    "CaptionEmbedder",
    "LN_EPS",
    "PooledTextEmbedder",
    "TextConditioning",
    "TextContext",
    "TimestepEmbedder",
    "TokenPool",
    "layer_norm",
    "make_pooled_embedder",
    "modulate",
    "timestep_embedding",
    "xavier_init",
]


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``[N] -> [N, dim]`` float32: ``[sin(p·f_j), cos(p·f_j)]``, f_j = 10000^(−j/(dim/2))."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = positions.float()[:, None] * freqs[None]
    return F.pad(torch.cat([torch.sin(args), torch.cos(args)], dim=-1), (0, dim % 2))
