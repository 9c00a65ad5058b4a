"""Immiscible diffusion: pair each training image with a nearby noise sample instead of a random one.

Two options (Li et al., "Immiscible Diffusion"): ``assign`` solves a batch linear assignment between images
and noise samples (scipy's Hungarian solver on L2 distances) and ``knn`` draws k candidates per image and
keeps the nearest. Both keep the noise marginally Gaussian while shortening the image↔noise paths.
"""

from __future__ import annotations

import torch


def nearest_of_k_noise(x0: torch.Tensor, k: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """For every image of ``x0`` [B, ...], the nearest (L2) of ``k`` fresh Gaussian noise samples."""
    if k < 1:
        raise ValueError(f"immiscible k must be ≥ 1, got {k}")
    gen_device = generator.device if generator is not None else x0.device
    cand = torch.randn((k, *x0.shape), generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
    if k == 1:
        return cand[0]
    dist = (cand - x0[None]).flatten(2).pow(2).sum(-1)  # [k, B]
    idx = dist.argmin(0)
    return cand[idx, torch.arange(x0.shape[0], device=x0.device)]


def assigned_noise(x0: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch of Gaussian noise, permuted by linear assignment to minimise the total L2 distance to ``x0``."""
    from scipy.optimize import linear_sum_assignment

    gen_device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
    cost = torch.cdist(x0.flatten(1).double(), noise.flatten(1).double()).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return noise[torch.as_tensor(cols[rows.argsort()], device=x0.device)]


def training_noise(x0: torch.Tensor, mode: str = "none", k: int = 4,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise for a training batch: ``mode`` is ``none`` (plain Gaussian), ``knn`` (nearest of k) or ``assign``."""
    if mode == "none":
        return nearest_of_k_noise(x0, 1, generator=generator)
    if mode == "knn":
        return nearest_of_k_noise(x0, k, generator=generator)
    if mode == "assign":
        return assigned_noise(x0, generator=generator)
    raise ValueError(f"unknown immiscible mode {mode!r}; expected 'none', 'knn' or 'assign'")


def item_generators(seeds: torch.Tensor) -> list[torch.Generator]:
    """One CPU generator per training item, from the per-item seeds the training loop attaches."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
