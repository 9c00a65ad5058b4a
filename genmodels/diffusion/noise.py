"""Immiscible diffusion: pair each training image with a nearby noise sample instead of a random one.

Two options (Li et al., "Immiscible Diffusion"): ``assign`` solves a batch linear assignment between images
and noise samples (scipy's Hungarian solver on L2 distances) and ``knn`` draws k candidates per image and
keeps the nearest. Both keep the noise marginally Gaussian while shortening the image↔noise paths.

Under data parallelism ``assign`` is solved over the global batch (:class:`GlobalBatch`, :func:`assign_noise`):
the noise of all processes is gathered, re-paired with all images, and every process takes its slice back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


def assignment(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The permutation ``p`` [B] minimising Σᵢ ‖x0[i] − noise[p[i]]‖ (L2, scipy's linear assignment in float64):
    ``noise[p]`` is the noise batch re-paired to the images, which stay where they are."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(x0.flatten(1).double(), noise.flatten(1).double()).cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    return torch.as_tensor(cols[rows.argsort()], device=x0.device)


def assigned_noise(x0: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """A batch of Gaussian noise, permuted by linear assignment to minimise the total L2 distance to ``x0``."""
    gen_device = generator.device if generator is not None else x0.device
    noise = torch.randn(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
    return noise[assignment(x0, noise)]


@dataclass(frozen=True)
class GlobalBatch:
    """How one process sees the batch of all data-parallel processes (the training loop passes one as
    ``batch["global_batch"]`` when it runs on several processes).

    ``gather(t)`` concatenates ``t`` [B, ...] of every process along dim 0 in process order (accelerate's
    ``accelerator.gather``: a collective, so every process must call it); ``rank`` is this process's index.
    All processes have the same local batch size B."""

    gather: Callable[[torch.Tensor], torch.Tensor]
    rank: int


def assign_noise(x0: torch.Tensor, noise: torch.Tensor, global_batch: GlobalBatch | None = None) -> torch.Tensor:
    """Re-pair ``noise`` [B, ...] with ``x0`` [B, ...] by linear assignment; returns the noise for ``x0``'s rows.

    With ``global_batch`` the assignment is solved over the batch of all processes: x0 and noise are gathered,
    every process solves the same (deterministic) assignment on the same global matrices and keeps its own
    slice, so N processes × batch B pair noise with data exactly like one process × batch N·B. Only the noise
    moves: each image keeps its own σ / t and conditioning (class label, caption), so conditioning needs no
    permutation."""
    if global_batch is None:
        return noise[assignment(x0, noise)]
    b = x0.shape[0]
    all_x0, all_noise = global_batch.gather(x0.contiguous()), global_batch.gather(noise.contiguous())
    assigned = all_noise[assignment(all_x0, all_noise)]
    return assigned[global_batch.rank * b : (global_batch.rank + 1) * b].to(noise.device)


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
