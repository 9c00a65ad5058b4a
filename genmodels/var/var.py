"""VAR: a scale-causal transformer that predicts the token map of each scale from all coarser ones.

Sequence (L = Σ p_k² tokens over the schedule ``patch_nums``): position 0 is the start token (the conditioning
vector + ``pos_start``); the p_{k+1}² positions of scale k+1 hold the running reconstruction f̂ after scales
1..k, area-downsampled to p_{k+1} × p_{k+1} and projected by ``word_embed`` (tokens are never embedded by id).
A learned position per token and a learned level embedding per scale are added. The logits at the positions
of scale k predict that scale's ids.

Blocks (GPT-2-like, AdaLN from the conditioning vector, as in the reference):
  x += γ1 ⊙ Attn(LN(x)(1 + s1) + b1);  x += CrossWKV(LN(x), text);  x += γ2 ⊙ FFN(LN(x)(1 + s2) + b2)

Self-attention is bidirectional inside a scale and causal across scales, in two interchangeable forms:
``attention="softmax"`` (q, k L2-normalised with a learned per-head scale, the block mask in a full pass and a
KV cache at inference) and ``attention="linear"`` (the core's ``linear_attention`` with ReLU features and the
normaliser: ``block_sizes`` = the scales in a full pass, the state carried from scale to scale at inference:
constant memory in the number of scales). Conditioning: the pooled text drives the start token and AdaLN; the
text tokens reach every block through CrossWKV (``cross_attn="crosswkv"``; ``"softmax"`` / ``"none"`` too).

Inference runs one scale at a time (:meth:`VARTransformer.step`), with optional FastVAR cached token pruning
(:class:`FastVARConfig`); :func:`sample_var` is the coarse-to-fine sampler with the CFG ramp, top-k / top-p and
teacher-forced known tokens (zero-shot in- and out-painting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from kernels import linear_attention

from ..layers.crosswkv import CrossWKV
from ..layers.dit import TextConditioning, TextContext, layer_norm, modulate
from .quant import MultiScaleQuantizer, check_patch_nums, downsample
from .vqvae import MultiScaleVQVAE

ATTENTION_MODES = ("softmax", "linear")
CROSS_ATTN_MODES = ("crosswkv", "softmax", "none")


def block_causal_mask(block_sizes: Sequence[int], device=None) -> torch.Tensor:
    """``[L, L]`` bool: token i may attend to token j iff scale(j) ≤ scale(i)."""
    level = torch.repeat_interleave(torch.arange(len(block_sizes), device=device),
                                    torch.tensor(list(block_sizes), device=device))
    return level[None, :] <= level[:, None]


# FastVAR: cached token pruning


@dataclass
class FastVARConfig:
    """Training-free cached token pruning at the largest scales (FastVAR, ICCV 2025).

    ``prune``: {scale index: fraction of that scale's tokens to drop} (scale indices count from 0; negative
    indices count from the end, −1 = last). ``cache_scale``: the scale whose branch outputs are cached for
    restoring pruned tokens (default: the scale before the first pruned one). ``layers``: (first, last) block
    indices where pruning applies (default all). ``skip_last``: drop this many final scales entirely (their
    tokens are not predicted: the accumulated f̂ is decoded as it stands).

    At a pruned scale each branch (self-attention, cross-attention, FFN) of each block scores its input tokens by
    ‖x_i − mean(x)‖² (distance from the map's DC component), runs on the top (1 − r) fraction only, and writes
    those outputs into the cached branch output of ``cache_scale`` area-resized to the current map. Only kept
    tokens join the KV cache / the linear-attention state.
    """

    prune: dict[int, float] = field(default_factory=dict)
    cache_scale: int | None = None
    layers: tuple[int, int] | None = None
    skip_last: int = 0

    def resolved(self, num_scales: int, depth: int) -> FastVARConfig:
        prune = {}
        for k, ratio in self.prune.items():
            idx = int(k) + num_scales if int(k) < 0 else int(k)
            if not 0 <= idx < num_scales:
                raise ValueError(f"FastVAR: scale index {k} out of range for {num_scales} scales")
            if not 0.0 <= float(ratio) < 1.0:
                raise ValueError(f"FastVAR: prune ratio must be in [0, 1), got {ratio} at scale {k}")
            if float(ratio) > 0:
                prune[idx] = float(ratio)
        if not 0 <= self.skip_last < num_scales:
            raise ValueError(f"FastVAR: skip_last must be in [0, {num_scales}), got {self.skip_last}")
        cache = self.cache_scale
        if prune:
            first = min(prune)
            if first == 0:
                raise ValueError("FastVAR: the first scale cannot be pruned (no earlier scale to restore from)")
            cache = first - 1 if cache is None else (int(cache) + num_scales if int(cache) < 0 else int(cache))
            if not 0 <= cache < first:
                raise ValueError(f"FastVAR: cache_scale {self.cache_scale} must precede the first pruned scale "
                                 f"{first}")
        layers = self.layers if self.layers is not None else (0, depth - 1)
        if not 0 <= layers[0] <= layers[1] < depth:
            raise ValueError(f"FastVAR: layers must be (first, last) within 0..{depth - 1}, got {self.layers}")
        return FastVARConfig(prune=prune, cache_scale=cache, layers=tuple(layers), skip_last=int(self.skip_last))

    @classmethod
    def parse(cls, spec: str) -> FastVARConfig:
        """``"-2:0.4,-1:0.5"`` (scale:ratio pairs), optionally ``";skip=1"``, ``";cache=-3"`` and
        ``";layers=1-4"`` (the first and last block that prune, as Infinity's schedule spares the outer ones)."""
        prune, kwargs = {}, {}
        for part in [p.strip() for p in spec.split(";") if p.strip()]:
            if part.startswith("skip="):
                kwargs["skip_last"] = int(part[5:])
            elif part.startswith("cache="):
                kwargs["cache_scale"] = int(part[6:])
            elif part.startswith("layers="):
                try:
                    first, last = part[7:].split("-")
                    kwargs["layers"] = (int(first), int(last))
                except ValueError as err:
                    raise ValueError(f"FastVAR spec {spec!r}: layers must be 'first-last', got {part!r}") from err
            else:
                for pair in [q.strip() for q in part.split(",") if q.strip()]:
                    try:
                        k, r = pair.split(":")
                        prune[int(k)] = float(r)
                    except ValueError as err:
                        raise ValueError(f"FastVAR spec {spec!r}: expected scale:ratio pairs, got {pair!r}") from err
        return cls(prune=prune, **kwargs)


def pivotal_tokens(x: torch.Tensor, keep: int) -> torch.Tensor:
    """FastVAR's pivotal token selection: indices ``[B, keep]`` (sorted) of the tokens of ``x`` ``[B, N, C]``
    farthest (squared L2) from the map's mean."""
    score = (x - x.mean(1, keepdim=True)).pow(2).sum(-1)
    return score.topk(keep, dim=1).indices.sort(dim=1).values


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))


def _restore(cached: torch.Tensor, side: int, idx: torch.Tensor, fresh: torch.Tensor) -> torch.Tensor:
    """The cached branch output ``[B, n, C]`` of a ``√n × √n`` map area-resized to ``side × side``, with the
    fresh outputs of the kept tokens scattered in."""
    b, n, c = cached.shape
    s0 = int(round(math.sqrt(n)))
    grid = cached.transpose(1, 2).reshape(b, c, s0, s0)
    full = F.interpolate(grid.float(), size=(side, side), mode="area").flatten(2).transpose(1, 2).to(fresh.dtype)
    return full.scatter(1, idx[..., None].expand(-1, -1, c), fresh)


@dataclass
class _Prune:
    """Per-call pruning instructions for one block at one scale."""

    keep: int  # tokens kept (< N)
    side: int
    cached: dict  # branch name -> cached output [B, n, C] of the cache scale


class Attention(nn.Module):
    """Self-attention with separate q / v biases, in softmax (L2-normalised q, k, learned scale) or linear form."""

    def __init__(self, dim: int, head_dim: int, mode: str):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"width {dim} must be a multiple of head_dim {head_dim}")
        self.heads, self.head_dim, self.mode = dim // head_dim, head_dim, mode
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(dim)), nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        # VAR's attn_l2_norm: q and k unit-norm per head, q scaled by exp(clamp(log s, max=log 100)), s₀ = 4
        self.log_scale = nn.Parameter(torch.full((1, self.heads, 1, 1), math.log(4.0)))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, head_dim={self.head_dim}, mode={self.mode!r}"

    def _qkv(self, x: torch.Tensor):
        b, n, c = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(x, self.qkv.weight, bias).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.mode == "softmax":
            q = F.normalize(q, dim=-1) * self.log_scale.clamp(max=math.log(100.0)).exp()
            k = F.normalize(k, dim=-1)
        return q, k, v

    def _out(self, o: torch.Tensor) -> torch.Tensor:
        return self.proj(o.transpose(1, 2).flatten(2))

    def forward(self, x: torch.Tensor, block_sizes: Sequence[int]) -> torch.Tensor:
        """Full teacher-forced pass over all scales."""
        q, k, v = self._qkv(x)
        if self.mode == "softmax":
            mask = block_causal_mask(block_sizes, x.device)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        else:
            o = linear_attention(q, k, v, block_sizes=block_sizes, feature_map="relu", normalize=True)
        return self._out(o)

    def step(self, x: torch.Tensor, cache: dict, keep_idx: torch.Tensor | None = None) -> torch.Tensor:
        """One scale's tokens ``x`` ``[B, n, C]`` against the carried ``cache`` (updated in place): the KV cache
        (softmax) or the linear-attention state (linear). Only the tokens given here join the cache."""
        q, k, v = self._qkv(x)
        if self.mode == "softmax":
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
            o = F.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            o, cache["state"] = linear_attention(q, k, v, feature_map="relu", normalize=True,
                                                 initial_state=cache.get("state"), return_state=True)
        return self._out(o)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class VARBlock(nn.Module):
    def __init__(self, dim: int, head_dim: int, mlp_ratio: float, attention: str, cross_attn: str,
                 cross_head_dim: int, layer_id: int, depth: int):
        super().__init__()
        self.attn = Attention(dim, head_dim, attention)
        self.cross_attn = None
        if cross_attn != "none":
            self.cross_attn = CrossWKV(dim, dim, head_dim=cross_head_dim, mode=cross_attn, layer_id=layer_id,
                                       n_layers=depth)
        self.ffn = FeedForward(dim, int(dim * mlp_ratio))
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def _cross(self, x: torch.Tensor, text: TextContext, state: torch.Tensor | None) -> torch.Tensor:
        return self.cross_attn(layer_norm(x), text.context, text.mask, state=state)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, text: TextContext, block_sizes: Sequence[int],
                state: torch.Tensor | None = None) -> torch.Tensor:
        g1, g2, s1, s2, b1, b2 = self.ada_lin(cond)[:, None].chunk(6, dim=-1)
        x = x + g1 * self.attn(modulate(layer_norm(x), b1, s1), block_sizes)
        if self.cross_attn is not None:
            x = x + self._cross(x, text, state)
        return x + g2 * self.ffn(modulate(layer_norm(x), b2, s2))

    def step(self, x: torch.Tensor, cond: torch.Tensor, text: TextContext, state: torch.Tensor | None,
             cache: dict, prune: _Prune | None = None, record: dict | None = None) -> torch.Tensor:
        """One scale at inference. ``prune``: FastVAR instructions (else every token runs); ``record``: a dict
        that receives each branch's full output (the FastVAR cache scale)."""
        g1, g2, s1, s2, b1, b2 = self.ada_lin(cond)[:, None].chunk(6, dim=-1)

        def branch(name: str, inp: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]):
            if prune is None:
                out = fn(inp, None)
            else:
                idx = pivotal_tokens(inp, prune.keep)
                out = _restore(prune.cached[name], prune.side, idx, fn(_gather(inp, idx), idx))
            if record is not None:
                record[name] = out
            return out

        x = x + g1 * branch("attn", modulate(layer_norm(x), b1, s1), lambda u, i: self.attn.step(u, cache, i))
        if self.cross_attn is not None:
            x = x + branch("cross", layer_norm(x),
                           lambda u, i: self.cross_attn(u, text.context, text.mask, state=state))
        return x + g2 * branch("ffn", modulate(layer_norm(x), b2, s2), lambda u, i: self.ffn(u))


class VARTransformer(ModelMixin, ConfigMixin, TextConditioning):
    """Text-conditioned next-scale prediction transformer (see the module docstring).

    Config: ``vocab_size`` (V) and ``latent_channels`` (C_vae) of the tokenizer, ``patch_nums``, ``width`` (C),
    ``depth``, ``head_dim``, ``mlp_ratio``, ``attention`` (``"softmax" | "linear"``), ``text_dim``,
    ``pooled_text_dim`` (> 0: the start token and AdaLN need a pooled vector), ``cross_attn``
    (``"crosswkv" | "softmax" | "none"``), ``cross_head_dim``, ``init_adaln_gamma``.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(self, vocab_size: int = 512, latent_channels: int = 32,
                 patch_nums: Sequence[int] = (1, 2, 3, 4, 6, 8), width: int = 256, depth: int = 6,
                 head_dim: int = 64, mlp_ratio: float = 4.0, attention: str = "softmax", text_dim: int = 64,
                 pooled_text_dim: int = 64, cross_attn: str = "crosswkv", cross_head_dim: int = 64,
                 init_adaln_gamma: float = 1e-3):
        super().__init__()
        self.patch_nums = check_patch_nums(patch_nums)
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention must be one of {ATTENTION_MODES}, got {attention!r}")
        if cross_attn not in CROSS_ATTN_MODES:
            raise ValueError(f"cross_attn must be one of {CROSS_ATTN_MODES}, got {cross_attn!r}")
        if pooled_text_dim < 1:
            raise ValueError("VAR needs a pooled text vector (pooled_text_dim ≥ 1) for its start token and AdaLN")
        c, k = width, len(self.patch_nums)
        self.block_sizes = [p * p for p in self.patch_nums]
        length = sum(self.block_sizes)
        self.init_text_side(text_dim, pooled_text_dim, c)
        self.pooled_embedder = nn.Sequential(nn.Linear(pooled_text_dim, c), nn.SiLU(), nn.Linear(c, c))
        self.word_embed = nn.Linear(latent_channels, c)
        init_std = math.sqrt(1 / c / 3)
        self.pos_start = nn.Parameter(torch.empty(1, 1, c).normal_(0, init_std))
        self.pos_embed = nn.Parameter(torch.empty(1, length, c).normal_(0, init_std))
        self.lvl_embed = nn.Embedding(k, c)
        nn.init.trunc_normal_(self.lvl_embed.weight, std=init_std)
        self.blocks = nn.ModuleList(
            VARBlock(c, head_dim, mlp_ratio, attention, cross_attn, cross_head_dim, i, depth) for i in range(depth))
        self.head_ada = nn.Sequential(nn.SiLU(), nn.Linear(c, 2 * c))
        self.head = nn.Linear(c, vocab_size)
        self._init_weights(init_std, init_adaln_gamma)
        self.register_buffer("level_of_token", torch.repeat_interleave(
            torch.arange(k), torch.tensor(self.block_sizes)), persistent=False)

    def _init_weights(self, std: float, gamma: float) -> None:
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear) and "cross_attn" not in name and "caption_embedder" not in name:
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.head.weight.mul_(0.02)
            depth = len(self.blocks)
            for block in self.blocks:
                block.attn.proj.weight.div_(math.sqrt(2 * depth))
                block.ffn.fc2.weight.div_(math.sqrt(2 * depth))
                lin = block.ada_lin[1]
                lin.weight.mul_(0.5)
                c = lin.weight.shape[1]
                lin.weight[: 2 * c].mul_(gamma)  # γ1, γ2 rows
            self.head_ada[1].weight.mul_(0.5)

    # configs

    @classmethod
    def tiny_config(cls) -> dict:
        """Tests: matches ``MultiScaleVQVAE.tiny_config`` (V = 32, C_vae = 8, scales 1, 2, 4)."""
        return dict(vocab_size=32, latent_channels=8, patch_nums=(1, 2, 4), width=64, depth=2, head_dim=32,
                    mlp_ratio=2.0, text_dim=32, pooled_text_dim=32, cross_head_dim=32)

    @classmethod
    def shapes_config(cls) -> dict:
        """Shapes world (``MultiScaleVQVAE.shapes_config``, tiny CLIP text features of width 64): width 256,
        depth 6, heads of 64, softmax attention, CrossWKV."""
        return dict(vocab_size=512, latent_channels=32, patch_nums=(1, 2, 3, 4, 6, 8), width=256, depth=6,
                    head_dim=64, mlp_ratio=4.0, attention="softmax", text_dim=64, pooled_text_dim=64,
                    cross_attn="crosswkv", cross_head_dim=64)

    @classmethod
    def shapes128_config(cls) -> dict:
        """``shapes_config`` on the scale schedule of ``MultiScaleVQVAE.shapes128_config`` (128×128)."""
        return {**cls.shapes_config(), "patch_nums": MultiScaleVQVAE.shapes128_config()["patch_nums"]}

    @classmethod
    def shapes256_config(cls) -> dict:
        """``shapes_config`` on the scale schedule of ``MultiScaleVQVAE.shapes256_config`` (256×256)."""
        return {**cls.shapes_config(), "patch_nums": MultiScaleVQVAE.shapes256_config()["patch_nums"]}

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def seq_len(self) -> int:
        return sum(self.block_sizes)

    def param_groups(self, base_lr: float = 1e-4, weight_decay: float = 0.0) -> list[dict]:
        """AdamW groups: weight decay on 2-D weights except embeddings / position tables."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            is_table = any(t in name for t in ("embed", "pos_", "null_"))
            (decay if p.ndim >= 2 and not is_table else no_decay).append(p)
        return [{"params": decay, "lr": base_lr, "weight_decay": weight_decay},
                {"params": no_decay, "lr": base_lr, "weight_decay": 0.0}]

    # conditioning

    def condition(self, pooled_text: torch.Tensor) -> torch.Tensor:
        """The conditioning vector ``[B, C]`` (start token content and AdaLN input) from the pooled text."""
        return self.pooled_embedder(pooled_text.to(self.pos_start.dtype))

    def _text(self, batch: int, encoder_hidden_states, encoder_attention_mask, pooled_text, context_states,
              drop_text) -> tuple[TextContext, torch.Tensor]:
        text, pooled = self.resolve_text(batch, encoder_hidden_states, encoder_attention_mask, pooled_text,
                                         context_states, drop_text)
        if pooled is None:
            pooled = self.null_pooled_embedding.expand(batch, -1)
        return text, pooled

    def embed_scale_inputs(self, inputs: torch.Tensor, scale: int) -> torch.Tensor:
        """Scale ``scale`` (≥ 1) inputs: f̂ downsampled ``[B, p², C_vae]`` → ``[B, p², C]`` with position and level."""
        start = sum(self.block_sizes[:scale])
        pos = self.pos_embed[:, start:start + self.block_sizes[scale]]
        return self.word_embed(inputs.to(self.pos_start.dtype)) + pos + self.lvl_embed.weight[scale]

    def start_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        return cond[:, None] + self.pos_start + self.pos_embed[:, :1] + self.lvl_embed.weight[0]

    def _head(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.head_ada(cond)[:, None].chunk(2, dim=-1)
        return self.head(modulate(layer_norm(x), shift, scale)).float()

    # full (teacher-forced) pass

    def forward(self, inputs: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                encoder_attention_mask: torch.Tensor | None = None, pooled_text: torch.Tensor | None = None,
                context_states: TextContext | None = None, drop_text: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits ``[B, L, V]`` (float32) from the inputs of scales 2..K ``[B, L − 1, C_vae]``
        (``MultiScaleQuantizer.teacher_inputs``)."""
        b = inputs.shape[0]
        if inputs.ndim != 3 or inputs.shape[1] != self.seq_len - 1 or inputs.shape[2] != self.config.latent_channels:
            raise ValueError(f"inputs must be [B, {self.seq_len - 1}, {self.config.latent_channels}], "
                             f"got {tuple(inputs.shape)}")
        text, pooled = self._text(b, encoder_hidden_states, encoder_attention_mask, pooled_text, context_states,
                                  drop_text)
        cond = self.condition(pooled)
        rest = self.word_embed(inputs.to(self.pos_start.dtype)) + self.pos_embed[:, 1:] \
            + self.lvl_embed(self.level_of_token[1:])
        x = torch.cat([self.start_tokens(cond), rest], dim=1)
        states = text.states or [None] * len(self.blocks)
        for block, state in zip(self.blocks, states):
            x = block(x, cond, text, self.block_sizes, state)
        return self._head(x, cond)

    # incremental inference

    def new_cache(self) -> list[dict]:
        """Per-block inference caches (KV cache or linear-attention state), filled by :meth:`step`."""
        return [{} for _ in self.blocks]

    def step(self, x: torch.Tensor, scale: int, cond: torch.Tensor, text: TextContext, cache: list[dict],
             fastvar: FastVARConfig | None = None, fastvar_cache: list[dict] | None = None) -> torch.Tensor:
        """Logits ``[B, p_scale², V]`` of one scale from its embedded tokens ``x`` (``start_tokens`` for scale 0,
        ``embed_scale_inputs`` after); ``cache`` carries the coarser scales. ``fastvar`` must be resolved
        (``FastVARConfig.resolved``); ``fastvar_cache`` (one dict per block) holds the cache scale's outputs."""
        states = text.states or [None] * len(self.blocks)
        n = x.shape[1]
        side = self.patch_nums[scale]
        for i, (block, state) in enumerate(zip(self.blocks, states)):
            prune, record = None, None
            if fastvar is not None:
                ratio = fastvar.prune.get(scale, 0.0)
                in_layers = fastvar.layers[0] <= i <= fastvar.layers[1]
                if ratio > 0 and in_layers:
                    keep = max(1, min(n, int(round(n * (1 - ratio)))))
                    if keep < n:
                        prune = _Prune(keep=keep, side=side, cached=fastvar_cache[i])
                if scale == fastvar.cache_scale:
                    record = fastvar_cache[i]
            x = block.step(x, cond, text, state, cache[i], prune, record)
        return self._head(x, cond)


def adapt_scale_schedule(state: dict[str, torch.Tensor], old_patch_nums: Sequence[int],
                         new_patch_nums: Sequence[int]) -> dict[str, torch.Tensor]:
    """A ``VARTransformer`` state dict trained on ``old_patch_nums`` made loadable for ``new_patch_nums`` (e.g. a
    64² model warm-starting a 128² one). Only the per-scale tables depend on the schedule: each new scale takes
    the level embedding of the old scale nearest in side (the larger on a tie) and that scale's position grid,
    copied when the sides match and bilinearly resized otherwise. Everything else is returned unchanged."""
    old, new = check_patch_nums(old_patch_nums), check_patch_nums(new_patch_nums)
    pos, lvl = state["pos_embed"], state["lvl_embed.weight"]
    if pos.shape[1] != sum(p * p for p in old) or lvl.shape[0] != len(old):
        raise ValueError(f"the state dict's position table ({pos.shape[1]} rows) and level table ({lvl.shape[0]}) "
                         f"do not match the schedule {list(old)}")
    starts = [sum(p * p for p in old[:k]) for k in range(len(old))]
    grids, levels = [], []
    for p in new:
        j = min(range(len(old)), key=lambda k: (abs(old[k] - p), -old[k]))
        grid = pos[0, starts[j]:starts[j] + old[j] ** 2].T.reshape(1, -1, old[j], old[j])
        if old[j] != p:
            grid = F.interpolate(grid.float(), size=(p, p), mode="bilinear", align_corners=False).to(pos.dtype)
        grids.append(grid.reshape(-1, p * p).T)
        levels.append(lvl[j])
    return {**state, "pos_embed": torch.cat(grids)[None].contiguous(), "lvl_embed.weight": torch.stack(levels)}


# sampling


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then top-p (nucleus) filtering of ``[..., V]`` logits (removed entries → −inf); 0 / 1.0 disable."""
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if 0 < top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the most likely token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def cfg_ramp(cfg: float, scale: int, num_scales: int) -> float:
    """VAR's linear CFG ramp: t = cfg · k / (K − 1) (0 at the 1×1 scale, ``cfg`` at the last)."""
    return cfg * scale / max(1, num_scales - 1)


def resize_mask(mask: torch.Tensor, side: int) -> torch.Tensor:
    """A keep-mask ``[B, S, S]`` (1 = known) bilinearly resized to ``side × side`` and thresholded at 0.5."""
    m = F.interpolate(mask[:, None].float(), size=(side, side), mode="bilinear", align_corners=False)
    return m[:, 0] >= 0.5


@dataclass
class VARSample:
    """Output of :func:`sample_var`: ``ids`` (one ``[B, p, p]`` map per scale that was sampled), ``f_hat``
    (``[B, C_vae, p_K, p_K]`` float32, ready for ``MultiScaleVQVAE.decode_fhat``) and ``passes`` (transformer
    calls, one per scale)."""

    ids: list[torch.Tensor]
    f_hat: torch.Tensor
    passes: int


@torch.no_grad()
def sample_var(model: VARTransformer, quantizer: MultiScaleQuantizer, *, encoder_hidden_states: torch.Tensor,
               encoder_attention_mask: torch.Tensor | None, pooled_text: torch.Tensor, cfg: float = 0.0,
               top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
               known_ids: Sequence[torch.Tensor] | None = None, known_mask: torch.Tensor | None = None,
               fastvar: FastVARConfig | None = None, progress: Callable[[int, int], None] | None = None
               ) -> VARSample:
    """Coarse-to-fine sampling, one transformer pass per scale.

    CFG (``cfg`` > 0): the batch is doubled (prompts, then the null text) and the guided logits are
    (1 + t)·cond − t·uncond with t ramping linearly over the scales. ``known_ids`` (a token pyramid, e.g.
    ``MultiScaleQuantizer.encode`` of a source image) with ``known_mask`` ``[B, p_K, p_K]`` (True = keep) force
    the known tokens at every scale (the mask resized to each scale; scales of ≤ 3 tokens are always forced):
    zero-shot in- / out-painting. ``fastvar``: cached token pruning and skipped final scales."""
    b = encoder_hidden_states.shape[0]
    k_scales = model.num_scales
    if quantizer.patch_nums != model.patch_nums or quantizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer (scales {quantizer.patch_nums}, V = {quantizer.vocab_size}) does not match "
                         f"the transformer (scales {model.patch_nums}, V = {model.config.vocab_size})")
    if cfg < 0 or not math.isfinite(cfg):
        raise ValueError(f"cfg must be a finite number ≥ 0, got {cfg}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need top_k ≥ 0 and 0 < top_p ≤ 1, got top_k={top_k}, top_p={top_p}")
    if (known_ids is None) != (known_mask is None):
        raise ValueError("give known_ids and known_mask together")
    if known_ids is not None:
        quantizer.check_ids(known_ids)
        if known_mask.shape != (b, quantizer.side, quantizer.side):
            raise ValueError(f"known_mask must be [{b}, {quantizer.side}, {quantizer.side}], "
                             f"got {tuple(known_mask.shape)}")
    fv = fastvar.resolved(k_scales, len(model.blocks)) if fastvar is not None else None
    guided = cfg > 0
    tokens, mask, pooled = encoder_hidden_states, encoder_attention_mask, pooled_text
    if guided:
        null_tokens, null_mask, null_pooled = model.null_text(b, tokens.shape[1])
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        tokens = torch.cat([tokens, null_tokens.to(tokens.dtype)])
        mask = torch.cat([mask.bool(), null_mask])
        pooled = torch.cat([pooled, null_pooled.to(pooled.dtype)])
    text = model.cross_attention_states(tokens, mask)
    cond = model.condition(pooled)
    cache = model.new_cache()
    fv_cache = [{} for _ in model.blocks] if fv is not None else None
    f_hat = torch.zeros(b, quantizer.dim, quantizer.side, quantizer.side, device=tokens.device)
    x = model.start_tokens(cond)
    ids, last = [], k_scales - (fv.skip_last if fv is not None else 0)
    for k in range(last):
        logits = model.step(x, k, cond, text, cache, fv, fv_cache)
        if guided:
            t = cfg_ramp(cfg, k, k_scales)
            logits = (1 + t) * logits[:b] - t * logits[b:]
        logits = filter_logits(logits, top_k, top_p)
        probs = logits.softmax(-1).flatten(0, 1)
        idx = torch.multinomial(probs, 1, generator=generator).view(b, -1)
        p = model.patch_nums[k]
        if known_ids is not None:
            keep = torch.ones(b, p * p, dtype=torch.bool, device=idx.device) if p * p <= 3 else \
                resize_mask(known_mask, p).flatten(1)
            idx = torch.where(keep, known_ids[k].reshape(b, -1).to(idx.device), idx)
        ids.append(idx.view(b, p, p))
        f_hat = f_hat + quantizer.scale_embedding(idx, k).float()
        if progress is not None:
            progress(k + 1, last)
        if k + 1 < last:
            nxt = downsample(f_hat, model.patch_nums[k + 1]).flatten(2).transpose(1, 2)
            x = model.embed_scale_inputs(nxt, k + 1)
            if guided:
                x = torch.cat([x, x])
    return VARSample(ids=ids, f_hat=f_hat, passes=last)


__all__ = ["FastVARConfig", "VARSample", "VARTransformer", "adapt_scale_schedule", "block_causal_mask", "cfg_ramp",
           "filter_logits", "pivotal_tokens", "resize_mask", "sample_var"]
