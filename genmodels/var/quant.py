"""Multi-scale residual vector quantisation (VAR's tokenizer bottleneck).

One codebook ``[V, C]`` is shared by every scale of the schedule ``patch_nums = (p_1, …, p_K)`` (the last one is
the latent side). Encoding a latent f ``[B, C, p_K, p_K]``, with f_rest = f and f̂ = 0, for k = 1..K:

  r_k = area-downsample(f_rest → p_k × p_k)         (identity at the last scale)
  idx_k = argmin_j ‖r_k − e_j‖²                     (plain squared L2, one token map of p_k² ids)
  h_k = φ_k(bicubic-upsample(e[idx_k] → p_K × p_K))  (the upsample is the identity at the last scale)
  f̂ += h_k,  f_rest −= h_k

φ(h) = (1 − ρ)·h + ρ·conv3×3(h) with ρ = 0.5; ``share_phi`` convolutions are shared across the K scales (scale k
uses the one whose tick, on ``linspace(1/(3K), 1 − 1/(3K))``, is nearest k/(K−1)). The training loss is the mean
over scales of β·‖sg(f̂_k) − f‖² + ‖f̂_k − sg(f)‖² (β = 0.25) and the output is f + sg(f̂ − f) (straight-through).

Codebook health: an exponential moving average of each code's hit rate is kept per scale (``usage``), and in
training, codes unused for a while at every scale are restarted onto residual vectors of the current batch
(``restart_dead_codes``), the usual cure for the coarse-scale collapse users of the original report.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

USAGE_DECAY = 0.99


def check_patch_nums(patch_nums: Sequence[int]) -> tuple[int, ...]:
    """A scale schedule: strictly increasing positive sides, at least one scale."""
    nums = tuple(int(p) for p in patch_nums)
    if not nums or nums[0] < 1 or any(b <= a for a, b in zip(nums, nums[1:])):
        raise ValueError(f"patch_nums must be strictly increasing positive sides, got {list(patch_nums)}")
    return nums


def upsample(x: torch.Tensor, side: int) -> torch.Tensor:
    """Bicubic upsample ``[B, C, h, h] -> [B, C, side, side]`` (identity when already that size)."""
    if x.shape[-1] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="bicubic", align_corners=False)


def downsample(x: torch.Tensor, side: int) -> torch.Tensor:
    """Area downsample ``[B, C, H, H] -> [B, C, side, side]`` (identity when already that size)."""
    if x.shape[-1] == side:
        return x
    return F.interpolate(x, size=(side, side), mode="area")


class Phi(nn.Conv2d):
    """φ(h) = (1 − ρ)·h + ρ·conv3×3(h)."""

    def __init__(self, dim: int, ratio: float = 0.5):
        super().__init__(dim, dim, kernel_size=3, padding=1)
        self.ratio = float(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mul(1 - self.ratio) + super().forward(h).mul_(self.ratio)


class MultiScaleQuantizer(nn.Module):
    """Residual quantisation of ``[B, C, p_K, p_K]`` latents over ``patch_nums`` with one shared codebook."""

    def __init__(self, vocab_size: int, dim: int, patch_nums: Sequence[int], *, beta: float = 0.25,
                 phi_ratio: float = 0.5, share_phi: int = 4):
        super().__init__()
        self.patch_nums = check_patch_nums(patch_nums)
        if vocab_size < 2 or dim < 1:
            raise ValueError(f"need vocab_size >= 2 and dim >= 1, got {vocab_size}, {dim}")
        if share_phi < 1:
            raise ValueError(f"share_phi must be >= 1, got {share_phi}")
        self.vocab_size, self.dim, self.beta = int(vocab_size), int(dim), float(beta)
        self.embedding = nn.Embedding(self.vocab_size, self.dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / self.vocab_size, 1.0 / self.vocab_size)
        k = len(self.patch_nums)
        n_phi = min(share_phi, k)
        self.phis = nn.ModuleList(Phi(self.dim, phi_ratio) for _ in range(n_phi))
        if n_phi == 1:
            self.phi_index = [0] * k
        else:
            ticks = torch.linspace(1 / (3 * n_phi), 1 - 1 / (3 * n_phi), n_phi)
            where = [i / (k - 1) if k > 1 else 0.0 for i in range(k)]
            self.phi_index = [int((ticks - w).abs().argmin()) for w in where]
        # EMA of the fraction of tokens that hit each code, per scale (codebook usage tracking)
        self.register_buffer("usage", torch.zeros(k, self.vocab_size), persistent=True)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def side(self) -> int:
        return self.patch_nums[-1]

    @property
    def tokens_per_scale(self) -> list[int]:
        return [p * p for p in self.patch_nums]

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, dim={self.dim}, patch_nums={self.patch_nums}, beta={self.beta}"

    def _check_latent(self, f: torch.Tensor) -> None:
        if f.ndim != 4 or f.shape[1] != self.dim or f.shape[2] != self.side or f.shape[3] != self.side:
            raise ValueError(f"latent must be [B, {self.dim}, {self.side}, {self.side}], got {tuple(f.shape)}")

    def nearest(self, r: torch.Tensor) -> torch.Tensor:
        """Code ids ``[B, h, w]`` of the codebook vectors nearest (squared L2) to ``r`` ``[B, C, h, w]``."""
        flat = r.permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        codes = self.embedding.weight.float()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codes.T + codes.pow(2).sum(1)[None]
        return dist.argmin(1).view(r.shape[0], r.shape[2], r.shape[3])

    def scale_embedding(self, idx: torch.Tensor, k: int) -> torch.Tensor:
        """h_k = φ_k(upsample(e[idx_k])): ids ``[B, p_k, p_k]`` (or ``[B, p_k²]``) -> ``[B, C, p_K, p_K]``."""
        p = self.patch_nums[k]
        idx = idx.reshape(idx.shape[0], p, p)
        h = self.embedding(idx).permute(0, 3, 1, 2)
        return self.phis[self.phi_index[k]](upsample(h, self.side))

    def codes_to_scale_embedding(self, codes: torch.Tensor, k: int) -> torch.Tensor:
        """Like :meth:`scale_embedding` but from code vectors ``[B, C, p_k, p_k]`` (e.g. a soft mixture)."""
        return self.phis[self.phi_index[k]](upsample(codes, self.side))

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Quantise ``f``: returns (straight-through f̂ ``[B, C, p_K, p_K]``, VQ loss, the K id maps).

        In training mode the per-scale usage EMA is updated."""
        self._check_latent(f)
        f32 = f.float()
        f_rest, f_hat = f32.detach().clone(), torch.zeros_like(f32)
        loss = f32.new_zeros(())
        ids = []
        for k, p in enumerate(self.patch_nums):
            idx = self.nearest(downsample(f_rest, p))
            ids.append(idx)
            h = self.scale_embedding(idx, k)
            f_hat = f_hat + h
            f_rest = f_rest - h.detach()
            loss = loss + self.beta * F.mse_loss(f_hat.detach(), f32) + F.mse_loss(f_hat, f32.detach())
            if self.training:
                with torch.no_grad():
                    hits = torch.bincount(idx.flatten(), minlength=self.vocab_size).float() / idx.numel()
                    self.usage[k].mul_(USAGE_DECAY).add_(hits, alpha=1 - USAGE_DECAY)
        f_st = f32 + (f_hat - f32).detach()
        return f_st.to(f.dtype), loss / self.num_scales, ids

    @torch.no_grad()
    def encode(self, f: torch.Tensor) -> list[torch.Tensor]:
        """The token pyramid of ``f``: K id maps ``[B, p_k, p_k]`` (coarse to fine)."""
        self._check_latent(f)
        f_rest, ids = f.float().clone(), []
        for k, p in enumerate(self.patch_nums):
            idx = self.nearest(downsample(f_rest, p))
            ids.append(idx)
            f_rest -= self.scale_embedding(idx, k)
        return ids

    def check_ids(self, ids: Sequence[torch.Tensor]) -> None:
        if len(ids) != self.num_scales:
            raise ValueError(f"expected {self.num_scales} token maps, got {len(ids)}")
        for idx, p in zip(ids, self.patch_nums):
            if idx.numel() != idx.shape[0] * p * p:
                raise ValueError(f"token map for scale {p}×{p} has shape {tuple(idx.shape)}")
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.vocab_size):
                raise ValueError(f"token ids must lie in [0, {self.vocab_size})")

    def ids_to_fhat(self, ids: Sequence[torch.Tensor], upto: int | None = None) -> torch.Tensor:
        """Σ_{k < upto} h_k (all scales by default) ``[B, C, p_K, p_K]`` float32."""
        self.check_ids(ids)
        upto = self.num_scales if upto is None else upto
        f_hat = None
        for k in range(upto):
            h = self.scale_embedding(ids[k], k).float()
            f_hat = h if f_hat is None else f_hat + h
        return f_hat

    def teacher_inputs(self, ids: Sequence[torch.Tensor]) -> torch.Tensor:
        """VAR's teacher-forced inputs for scales 2..K: the running f̂ after scales 1..k, area-downsampled to
        p_{k+1}, flattened and concatenated: ``[B, L − 1, C]`` (L = Σ p_k²) float32."""
        self.check_ids(ids)
        f_hat, parts = None, []
        for k in range(self.num_scales - 1):
            h = self.scale_embedding(ids[k], k).float()
            f_hat = h if f_hat is None else f_hat + h
            nxt = self.patch_nums[k + 1]
            parts.append(downsample(f_hat, nxt).flatten(2).transpose(1, 2))
        if not parts:
            return self.embedding.weight.new_zeros(ids[0].shape[0], 0, self.dim).float()
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def restart_dead_codes(self, f: torch.Tensor, threshold: float | None = None,
                           generator: torch.Generator | None = None) -> int:
        """Move codes whose usage EMA is below ``threshold`` at every scale (default: 1 % of uniform use) onto
        random latent vectors of ``f`` ``[B, C, H, W]`` plus small noise; their usage is reset to the threshold.
        Returns how many codes were restarted."""
        threshold = 0.01 / self.vocab_size if threshold is None else threshold
        dead = (self.usage < threshold).all(0).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        pool = f.detach().float().permute(0, 2, 3, 1).reshape(-1, self.dim)
        pick = torch.randint(0, pool.shape[0], (dead.numel(),), generator=generator, device=pool.device)
        noise = torch.randn(dead.numel(), self.dim, generator=generator, device=pool.device) * 1e-3
        self.embedding.weight.data[dead] = (pool[pick] + noise).to(self.embedding.weight.dtype)
        self.usage[:, dead] = threshold
        return int(dead.numel())

    def usage_per_scale(self) -> list[float]:
        """Fraction of the codebook each scale currently uses (codes with usage EMA above 1 % of uniform)."""
        alive = self.usage > 0.01 / self.vocab_size
        return [float(a) for a in alive.float().mean(1)]


__all__ = ["MultiScaleQuantizer", "Phi", "check_patch_nums", "downsample", "upsample"]
