"""EDM (Karras et al. 2022) preconditioning, loss weightings and training noise-level distributions.

Conventions: ``x_σ = x₀ + σ·ε``; the raw network F sees ``c_in·x_σ`` and the noise level σ (it embeds
``c_noise = log(σ)/4`` itself) and the denoiser is ``D(x_σ, σ) = c_skip·x_σ + c_out·F(c_in·x_σ, σ)``.
σ is in data units (σ_data = 0.5 for data scaled to [-1, 1]).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

SIGMA_DATA = 0.5
Weighting = Literal["soft-min-snr", "karras", "snr"]


# Helpers

def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append singleton dims so that ``x`` (e.g. ``[B]``) broadcasts against an ``ndim``-dim tensor."""
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast a {x.ndim}-dim tensor to {ndim} dims")
    return x[(...,) + (None,) * (ndim - x.ndim)]


def as_sigma(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """σ as a float32-or-wider ``[B]`` tensor on x's device (a scalar is broadcast to the batch)."""
    sigma = torch.as_tensor(sigma, device=x.device)
    dtype = torch.promote_types(sigma.dtype, torch.float32) if sigma.is_floating_point() else torch.float32
    return sigma.to(dtype).expand(x.shape[0]) if sigma.ndim == 0 else sigma.to(dtype)


# Preconditioning

def karras_scalings(sigma: torch.Tensor, sigma_data: float = SIGMA_DATA):
    """``(c_skip, c_out, c_in)`` of EDM preconditioning, same shape as σ.

    c_skip = σd²/(σ²+σd²), c_out = σ·σd/√(σ²+σd²), c_in = 1/√(σ²+σd²).
    """
    var = sigma**2 + sigma_data**2
    c_skip = sigma_data**2 / var
    c_out = sigma * sigma_data * var.rsqrt()
    c_in = var.rsqrt()
    return c_skip, c_out, c_in


def noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    """``c_noise = log(σ)/4``, the scalar a network embeds to know the noise level."""
    return torch.log(sigma) / 4


def loss_weighting(sigma: torch.Tensor, weighting: Weighting = "soft-min-snr",
                   sigma_data: float = SIGMA_DATA) -> torch.Tensor:
    """Weight of the MSE on the preconditioned target ``(x₀ − c_skip·x_σ)/c_out``.

    - ``soft-min-snr`` (HDiT): ``(σ·σd)²/(σ²+σd²)²``; in x₀ space ``1/(σ²+σd²)``, a soft min(SNR, 1).
    - ``karras`` (EDM): 1, i.e. λ(σ) = 1/c_out² in x₀ space.
    - ``snr``: ``σd²/(σ²+σd²)``.
    """
    if weighting == "soft-min-snr":
        return (sigma * sigma_data) ** 2 / (sigma**2 + sigma_data**2) ** 2
    if weighting == "karras":
        return torch.ones_like(sigma)
    if weighting == "snr":
        return sigma_data**2 / (sigma**2 + sigma_data**2)
    raise ValueError(f"unknown loss weighting {weighting!r}; expected 'soft-min-snr', 'karras' or 'snr'")


class KarrasDenoiser(nn.Module):
    """Wraps a raw network ``F(c_in·x, σ, **cond)`` into the EDM denoiser ``D(x, σ, **cond)`` and its loss.

    The inner model receives the already-scaled input ``c_in·x`` and the raw σ ``[B]``.
    """

    def __init__(self, model: nn.Module, sigma_data: float = SIGMA_DATA,
                 weighting: Weighting = "soft-min-snr"):
        super().__init__()
        loss_weighting(torch.ones(1), weighting)  # validate early
        self.inner_model = model
        self.sigma_data = sigma_data
        self.weighting = weighting

    def extra_repr(self) -> str:
        return f"sigma_data={self.sigma_data}, weighting={self.weighting!r}"

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor | float, **cond) -> torch.Tensor:
        """``D(x, σ) = c_skip·x + c_out·F(c_in·x, σ)``: x ``[B, ...]`` noisy input, σ scalar or ``[B]``."""
        sigma = as_sigma(sigma, x)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in karras_scalings(sigma, self.sigma_data))
        out = self.inner_model((x * c_in).to(x.dtype), sigma, **cond)
        return (c_skip * x + c_out * out).to(x.dtype)

    forward = denoise

    def loss(self, x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor, **cond) -> torch.Tensor:
        """Weighted MSE of F against ``(x₀ − c_skip·x_σ)/c_out``, ``x_σ = x₀ + σ·noise``: per sample ``[B]``.

        Returned per sample so the caller chooses the reduction (mean, masked, importance-weighted).
        """
        sigma = as_sigma(sigma, x0)
        c_skip, c_out, c_in = (append_dims(c, x0.ndim) for c in karras_scalings(sigma, self.sigma_data))
        noised = x0 + noise * append_dims(sigma, x0.ndim)
        out = self.inner_model((noised * c_in).to(x0.dtype), sigma, **cond)
        target = (x0 - c_skip * noised) / c_out
        mse = (out.float() - target.float()).pow(2).flatten(1).mean(1)
        return mse * loss_weighting(sigma, self.weighting, self.sigma_data)


# Training noise levels

def _generator_device(generator: torch.Generator | None, device):
    """Draw on the generator's device (a CPU generator must draw on the CPU), then move to ``device``."""
    return generator.device if generator is not None else device


def stratified_uniform(n: int, *, generator: torch.Generator | None = None, device=None,
                       dtype=torch.float32) -> torch.Tensor:
    """``[n]`` uniform samples on [0, 1), one in each of n equal strata (lower-variance batch statistics)."""
    u = torch.rand(n, generator=generator, device=_generator_device(generator, device), dtype=dtype)
    return (torch.arange(n, dtype=dtype, device=u.device) + u).to(device) / n


def cosine_interpolated_sigma(u: torch.Tensor, *, image_d: float, noise_d_low: float = 32,
                              noise_d_high: float | None = None, sigma_data: float = SIGMA_DATA,
                              sigma_min: float = 1e-2, sigma_max: float = 80.0) -> torch.Tensor:
    """Map u ∈ [0, 1] to σ by simple diffusion's interpolated shifted-cosine logSNR schedule.

    Two cosine logSNR schedules spanning [σ_min, σ_max], each shifted by ``2·log(noise_d/image_d)`` for
    ``noise_d = noise_d_low`` and ``noise_d_high`` (default ``image_d``), are lerped with weight u, and
    ``σ = σd·exp(−logSNR/2)``. Endpoints are exact: u = 0 → σ_max, u = 1 → σ_min. Computed in float64.
    """
    noise_d_high = image_d if noise_d_high is None else noise_d_high
    t = u.to(torch.float64)
    logsnr_hi = -2 * math.log(sigma_min / sigma_data)  # logSNR at σ_min
    logsnr_lo = -2 * math.log(sigma_max / sigma_data)  # logSNR at σ_max

    def cosine(lo: float, hi: float) -> torch.Tensor:
        t_min, t_max = math.atan(math.exp(-0.5 * lo)), math.atan(math.exp(-0.5 * hi))
        return -2 * torch.log(torch.tan(t_min + t * (t_max - t_min)))

    def shifted(noise_d: float) -> torch.Tensor:
        shift = 2 * math.log(noise_d / image_d)
        return cosine(logsnr_lo - shift, logsnr_hi - shift) + shift

    logsnr = torch.lerp(shifted(noise_d_low), shifted(noise_d_high), t)
    return (sigma_data * torch.exp(-logsnr / 2)).clamp(sigma_min, sigma_max).to(u.dtype)


@dataclass
class SigmaSampler:
    """Training σ distribution: ``SigmaSampler(...)(n, generator=, device=) -> [n]`` in [σ_min, σ_max].

    - ``cosine-interpolated`` (HDiT default): stratified u through :func:`cosine_interpolated_sigma`;
      ``image_d`` is the image's longer side in pixels (k-diffusion uses ``max(input_size)``),
      ``noise_d_low`` 32, ``noise_d_high`` defaults to ``image_d``. Unlike k-diffusion (whose default range is
      [1e-3, 1e3]) the schedule spans exactly [σ_min, σ_max].
    - ``log-normal`` (EDM): ``log σ ~ N(loc, scale²)``, clamped to [σ_min, σ_max].
    """

    kind: Literal["cosine-interpolated", "log-normal"] = "cosine-interpolated"
    image_d: float = 64
    noise_d_low: float = 32
    noise_d_high: float | None = None
    loc: float = -1.2
    scale: float = 1.2
    sigma_data: float = SIGMA_DATA
    sigma_min: float = 1e-2
    sigma_max: float = 80.0

    def __post_init__(self):
        if self.kind not in ("cosine-interpolated", "log-normal"):
            raise ValueError(f"unknown sigma distribution {self.kind!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    def from_uniform(self, u: torch.Tensor) -> torch.Tensor:
        """σ for given uniform draws ``u`` ∈ (0, 1) (the inverse-CDF form, no stratification): lets every
        training item draw its own σ from its own seed, independent of how items are batched."""
        if self.kind == "cosine-interpolated":
            return cosine_interpolated_sigma(
                u, image_d=self.image_d, noise_d_low=self.noise_d_low, noise_d_high=self.noise_d_high,
                sigma_data=self.sigma_data, sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        z = torch.special.ndtri(u.double().clamp(1e-12, 1 - 1e-12)).to(u.dtype)
        return (z * self.scale + self.loc).exp().clamp(self.sigma_min, self.sigma_max)

    def __call__(self, n: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        if self.kind == "cosine-interpolated":
            u = stratified_uniform(n, generator=generator, device=device)
            # Stratification orders u; shuffle so σ is not correlated with the batch index.
            perm = torch.randperm(n, generator=generator, device=_generator_device(generator, device))
            u = u[perm.to(u.device)]
            return cosine_interpolated_sigma(
                u, image_d=self.image_d, noise_d_low=self.noise_d_low, noise_d_high=self.noise_d_high,
                sigma_data=self.sigma_data, sigma_min=self.sigma_min, sigma_max=self.sigma_max)
        z = torch.randn(n, generator=generator, device=_generator_device(generator, device)).to(device)
        return (z * self.scale + self.loc).exp().clamp(self.sigma_min, self.sigma_max)
