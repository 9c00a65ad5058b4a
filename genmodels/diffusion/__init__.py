"""Diffusion formulations: EDM preconditioning, losses, σ distributions; samplers incl. RePaint inpainting."""

from .edm import (
    SIGMA_DATA,
    KarrasDenoiser,
    SigmaSampler,
    cosine_interpolated_sigma,
    karras_scalings,
    loss_weighting,
    noise_conditioning,
    stratified_uniform,
)
from .sampling import (
    SamplerOutput,
    get_sigmas_karras,
    make_edm_scheduler,
    sample,
    sample_edm_scheduler,
    sample_euler,
    sample_heun,
    sample_inpaint,
)

__all__ = [
    "SIGMA_DATA",
    "KarrasDenoiser",
    "SamplerOutput",
    "SigmaSampler",
    "cosine_interpolated_sigma",
    "get_sigmas_karras",
    "karras_scalings",
    "loss_weighting",
    "make_edm_scheduler",
    "noise_conditioning",
    "sample",
    "sample_edm_scheduler",
    "sample_euler",
    "sample_heun",
    "sample_inpaint",
    "stratified_uniform",
]
