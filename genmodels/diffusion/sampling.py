"""Samplers over an EDM denoiser ``D(x, σ) -> x̂₀``: Karras Euler / Heun (Alg. 2), RePaint inpainting, and
diffusers' EDM schedulers.

A *denoise fn* takes ``x [B, ...]`` at noise level ``σ [B]`` and returns the estimate of the clean sample;
bind conditioning with ``functools.partial(denoiser, class_labels=...)``. Every sampler returns a
:class:`SamplerOutput` with the number of denoiser calls (NFE). Randomness comes only from ``generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from .edm import SIGMA_DATA, karras_scalings

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
Method = Literal["euler", "heun"]


@dataclass
class SamplerOutput:
    """``sample``: the final x at σ = 0; ``nfe``: number of denoiser calls spent."""

    sample: torch.Tensor
    nfe: int


# Helpers

def get_sigmas_karras(n: int, sigma_min: float = 1e-2, sigma_max: float = 80.0, rho: float = 7.0,
                      device=None) -> torch.Tensor:
    """Karras et al. schedule ``(σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ``, i = 0..n−1, then a
    final 0: ``[n + 1]`` float32, decreasing. Same values as diffusers' EDM schedulers with ``"karras"``."""
    if n < 1:
        raise ValueError(f"need at least one step, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    max_inv_rho, min_inv_rho = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


def _randn(shape, generator: torch.Generator | list[torch.Generator] | None, like: torch.Tensor | None = None, *,
           device=None, dtype=None) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, returned on ``like``'s (or the given) device.

    ``generator`` may be a list with one generator per item of the leading dimension (diffusers' convention):
    item i is then drawn from ``generator[i]`` alone, so it does not depend on what else is in the batch."""
    device = like.device if like is not None else device
    dtype = like.dtype if like is not None else dtype
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([_randn((1, *shape[1:]), g, device=device, dtype=dtype) for g in generator])
    draw_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=draw_device, dtype=dtype).to(device)


class _Counted:
    """Calls ``denoise`` with σ broadcast to ``[B]`` and counts the calls."""

    def __init__(self, denoise: DenoiseFn):
        self.denoise = denoise
        self.nfe = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.denoise(x, sigma.to(x.device).expand(x.shape[0]))


def _churn_gamma(sigma: float, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    """Karras Alg. 2's γ_i: the fraction by which σ is raised before a step (0 = deterministic)."""
    return min(s_churn / n_steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0


def _ode_step(denoise: _Counted, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
              method: Method) -> torch.Tensor:
    """One step of the probability-flow ODE dx/dσ = (x − D(x, σ))/σ from σ to σ_next (Euler, or Heun's
    2nd-order correction when σ_next > 0)."""
    d = (x - denoise(x, sigma)) / sigma
    x_next = x + (sigma_next - sigma) * d
    if method == "heun" and sigma_next > 0:
        d_next = (x_next - denoise(x_next, sigma_next)) / sigma_next
        x_next = x + (sigma_next - sigma) * (d + d_next) / 2
    return x_next


# Core loop: Karras Alg. 2 with optional RePaint replacement and resampling

def _sample_loop(denoise: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, *, method: Method,
                 s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
                 generator: torch.Generator | None, callback: ProgressFn | None,
                 x_known: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                 repaint: int = 1) -> SamplerOutput:
    if method not in ("euler", "heun"):
        raise ValueError(f"unknown method {method!r}; expected 'euler' or 'heun'")
    counted = _Counted(denoise)
    sigmas = sigmas.to(x.device)
    n_steps = len(sigmas) - 1
    total, done = n_steps * repaint, 0
    for i in range(n_steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = _churn_gamma(float(sigma), n_steps, s_churn, s_tmin, s_tmax)
        sigma_hat = sigma * (1 + gamma)
        for r in range(repaint):
            if gamma > 0:
                x = x + _randn(x.shape, generator, x) * s_noise * (sigma_hat**2 - sigma**2).sqrt()
            if mask is not None:
                # Re-impose the known region, noised afresh to the current level (mask 1 = generate).
                known = x_known + _randn(x.shape, generator, x) * sigma_hat
                x = torch.lerp(known, x, mask)
            x_next = _ode_step(counted, x, sigma_hat, sigma_next, method)
            if r < repaint - 1:
                # RePaint resampling: undo the step by re-noising from σ_{i+1} back to σ_i.
                x = x_next + _randn(x.shape, generator, x) * (sigma**2 - sigma_next**2).sqrt()
            done += 1
            if callback is not None:
                callback(done, total)
        x = x_next
    if mask is not None:
        x = torch.lerp(x_known, x, mask)
    return SamplerOutput(sample=x, nfe=counted.nfe)


# Public samplers

def sample_euler(denoise: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, *, s_churn: float = 0.0,
                 s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                 generator: torch.Generator | None = None,
                 callback: ProgressFn | None = None) -> SamplerOutput:
    """Karras Alg. 2 with Euler steps. x: ``[B, ...]`` noise already scaled to ``sigmas[0]``; sigmas:
    decreasing ``[n + 1]`` ending at 0 (see :func:`get_sigmas_karras`). NFE = n. ``s_churn > 0`` adds
    fresh noise before each step (stochastic sampler); 0 is the deterministic ODE solver."""
    return _sample_loop(denoise, x, sigmas, method="euler", s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                        s_noise=s_noise, generator=generator, callback=callback)


def sample_heun(denoise: DenoiseFn, x: torch.Tensor, sigmas: torch.Tensor, *, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0,
                generator: torch.Generator | None = None,
                callback: ProgressFn | None = None) -> SamplerOutput:
    """Karras Alg. 2 with Heun (2nd-order) steps; the last step to σ = 0 is Euler. NFE = 2n − 1."""
    return _sample_loop(denoise, x, sigmas, method="heun", s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                        s_noise=s_noise, generator=generator, callback=callback)


def sample(denoise: DenoiseFn, shape: tuple[int, ...], *, num_steps: int = 50, method: Method = "heun",
           sigma_min: float = 1e-2, sigma_max: float = 80.0, rho: float = 7.0, s_churn: float = 0.0,
           generator: torch.Generator | None = None, device=None, dtype=torch.float32,
           callback: ProgressFn | None = None) -> SamplerOutput:
    """Draw samples of ``shape`` from noise: ``x = σ_max·ε`` then Euler / Heun over a Karras schedule."""
    sigmas = get_sigmas_karras(num_steps, sigma_min, sigma_max, rho, device=device)
    x = _randn(shape, generator, device=device, dtype=dtype) * sigmas[0]
    return _sample_loop(denoise, x, sigmas, method=method, s_churn=s_churn, s_tmin=0.0, s_tmax=float("inf"),
                        s_noise=1.0, generator=generator, callback=callback)


def sample_inpaint(denoise: DenoiseFn, x_known: torch.Tensor, mask: torch.Tensor, *, num_steps: int = 50,
                   repaint: int = 1, method: Method = "euler", sigma_min: float = 1e-2,
                   sigma_max: float = 80.0, rho: float = 7.0, s_churn: float = 0.0, s_tmin: float = 0.0,
                   s_tmax: float = float("inf"), s_noise: float = 1.0,
                   generator: torch.Generator | None = None,
                   callback: ProgressFn | None = None) -> SamplerOutput:
    """RePaint-style inpainting with resampling, in σ (EDM) terms.

    x_known: ``[B, C, H, W]`` clean image (its masked part is ignored); mask: broadcastable to x_known,
    values in [0, 1], **1 = generate**, 0 = keep (fractional values blend, for soft masks).

    At every level σ_i the known region is replaced by ``x_known + σ_i·ε`` (fresh ε) and the whole image
    takes one Euler / Heun step to σ_{i+1}. With ``repaint = r > 1`` that step is repeated r times: between
    repeats the result is re-noised back to σ_i with fresh noise of std ``√(σ_i² − σ_{i+1}²)`` (RePaint's
    resampling with jump length 1), which lets the generated part harmonise with the known part.
    NFE = r × (plain sampler's NFE). The output's known region equals ``x_known`` exactly (bitwise where
    mask = 0). With an all-ones mask, r = 1 and no churn this is the plain sampler with the same generator.
    ``callback(step, total)`` fires after every (step, repeat), ``total = num_steps · r``.
    """
    if not 1 <= repaint <= 10 or int(repaint) != repaint:
        raise ValueError(f"repaint must be an integer in 1..10, got {repaint!r}")
    mask = mask.to(device=x_known.device, dtype=x_known.dtype)
    try:
        torch.broadcast_shapes(mask.shape, x_known.shape)
    except RuntimeError as err:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to x_known "
                         f"{tuple(x_known.shape)}") from err
    if mask.numel() and (mask.min() < 0 or mask.max() > 1):
        raise ValueError("mask values must lie in [0, 1] (1 = generate, 0 = keep)")
    sigmas = get_sigmas_karras(num_steps, sigma_min, sigma_max, rho, device=x_known.device)
    x = _randn(x_known.shape, generator, x_known) * sigmas[0]
    return _sample_loop(denoise, x, sigmas, method=method, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax,
                        s_noise=s_noise, generator=generator, callback=callback, x_known=x_known, mask=mask,
                        repaint=int(repaint))


# diffusers' EDM schedulers

def make_edm_scheduler(kind: Literal["euler", "dpmsolver++"] = "dpmsolver++", *, sigma_min: float = 1e-2,
                       sigma_max: float = 80.0, sigma_data: float = SIGMA_DATA, rho: float = 7.0):
    """diffusers ``EDMEulerScheduler`` or ``EDMDPMSolverMultistepScheduler`` (2nd-order DPM-Solver++)
    configured for our EDM setup: Karras σ schedule, ``prediction_type="epsilon"`` (which in these
    schedulers *means* EDM preconditioning ``D = c_skip·x + c_out·F``), final σ = 0."""
    from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler

    common = dict(sigma_min=sigma_min, sigma_max=sigma_max, sigma_data=sigma_data, sigma_schedule="karras",
                  prediction_type="epsilon", rho=rho, final_sigmas_type="zero")
    if kind == "euler":
        return EDMEulerScheduler(**common)
    if kind == "dpmsolver++":
        return EDMDPMSolverMultistepScheduler(**common, algorithm_type="dpmsolver++", solver_order=2)
    raise ValueError(f"unknown scheduler {kind!r}; expected 'euler' or 'dpmsolver++'")


def sample_edm_scheduler(denoise: DenoiseFn, shape: tuple[int, ...], *, scheduler="dpmsolver++",
                         num_steps: int = 25, sigma_min: float = 1e-2, sigma_max: float = 80.0,
                         rho: float = 7.0,
                         generator: torch.Generator | None = None, device=None, dtype=torch.float32,
                         callback: ProgressFn | None = None) -> SamplerOutput:
    """Plain (non-inpainting) sampling with a diffusers EDM scheduler over a denoise fn.

    ``scheduler``: ``"euler"``, ``"dpmsolver++"`` or a configured scheduler instance. NFE = num_steps.

    How the fit works, and where it does not: diffusers' EDM schedulers expect the *raw* network output F
    and apply ``D = c_skip·x + c_out·F`` themselves (``precondition_outputs``; ``"epsilon"`` is their name
    for this, ``"v_prediction"`` flips the sign of c_out). To keep one denoise-fn interface (CFG and
    inpainting act on D) we hand them ``F = (D − c_skip·x)/c_out``, which their preconditioning maps back to
    D exactly up to rounding. The initial noise is ``σ_max·ε``, not their ``init_noise_sigma =
    √(σ_max² + 1)`` (a variance-preserving leftover). ``scale_model_input`` is still called each step: it
    advances the scheduler's step index, but its ``c_in·x`` is not needed because D preconditions itself.
    RePaint resampling moves *up* in σ between repeats, which these schedulers (stateful, monotone step
    index, multistep history) cannot express, so :func:`sample_inpaint` uses the hand-written loop.
    """
    if isinstance(scheduler, str):
        scheduler = make_edm_scheduler(scheduler, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
    sigma_data = scheduler.config.sigma_data
    scheduler.set_timesteps(num_steps, device=device)
    counted = _Counted(denoise)
    x = _randn(shape, generator, device=device, dtype=dtype) * scheduler.sigmas[0].to(device)
    for i, t in enumerate(scheduler.timesteps):
        scheduler.scale_model_input(x, t)
        sigma = scheduler.sigmas[scheduler.step_index].to(device=device, dtype=torch.float32)
        x0 = counted(x, sigma)
        c_skip, c_out, _ = karras_scalings(sigma, sigma_data)
        model_output = ((x0 - c_skip * x) / c_out).to(x.dtype)
        x = scheduler.step(model_output, t, x, generator=generator).prev_sample
        if callback is not None:
            callback(i + 1, num_steps)
    return SamplerOutput(sample=x, nfe=counted.nfe)
