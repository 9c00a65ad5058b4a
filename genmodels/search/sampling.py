"""Repeated sampling: N candidates from a seeded, batched generator, with the cost of every one recorded.

A **generate fn** is ``generate_fn(seeds: list[int]) -> (outputs, nfe)``: one output per seed, in order, where
output i depends only on ``seeds[i]`` (one generator per candidate), and ``nfe`` is the number of denoiser calls
the batched call made (the pipelines' convention: a call over the whole batch, CFG-batched, counts once).

Cost units used throughout ``genmodels.search``:

- **NFE** of a candidate: the denoiser calls its own sample went through (steps × solver order × RePaint
  repeats ...), whatever it was batched with;
- **total NFE**: the sum over candidates, i.e. sample-level denoiser evaluations, what compute scales with (Video-T1's
  cost table counts this way: 8 roots × 5 candidates × 60 calls);
- **batched calls**: the sum of what the generate fn reported, the wall-clock-relevant count on a wide device.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

GenerateFn = Callable[[list[int]], tuple[Sequence[Any], int]]


@dataclass
class Candidates:
    """``outputs``: N outputs in seed order; ``seeds``: ``[N]``; ``nfe``: ``[N]`` int, denoiser evaluations spent
    on each candidate; ``batched_calls``: denoiser calls over all generate-fn calls (a batched call counting
    once); ``seconds``: wall time of generation (not of verification)."""

    outputs: list[Any]
    seeds: list[int]
    nfe: np.ndarray
    batched_calls: int
    seconds: float

    @property
    def total_nfe(self) -> int:
        """Sample-level denoiser evaluations over all candidates (``nfe.sum()``)."""
        return int(self.nfe.sum())

    def __len__(self) -> int:
        return len(self.outputs)


def sample_candidates(generate_fn: GenerateFn, n: int, seeds: Sequence[int] | None = None,
                      batch_size: int | None = None) -> Candidates:
    """Draw ``n`` candidates, ``batch_size`` per call (default: all in one call), seeds ``seeds`` (default
    ``0..n-1``). Since each output depends only on its seed, the result does not depend on ``batch_size``."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != n:
        raise ValueError(f"need one seed per candidate: n = {n}, got {len(seeds)} seeds")
    batch_size = n if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    outputs: list[Any] = []
    nfe = np.zeros(n, dtype=np.int64)
    calls = 0
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        chunk = seeds[start:start + batch_size]
        out, spent = generate_fn(chunk)
        out = list(out)
        if len(out) != len(chunk):
            raise ValueError(f"the generate fn returned {len(out)} outputs for {len(chunk)} seeds")
        outputs.extend(out)
        nfe[start:start + len(chunk)] = int(spent)  # every sample in the batch went through every call
        calls += int(spent)
    return Candidates(outputs=outputs, seeds=seeds, nfe=nfe, batched_calls=calls,
                      seconds=time.perf_counter() - t0)


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per seed (what ``lingen generate`` uses, so results match it)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


# Adapters


def text_to_image_generate_fn(pipe, prompt: str, **call_kwargs) -> GenerateFn:
    """Generate fn over a ``TextToImagePipeline``: candidate i is ``prompt`` with ``torch.Generator(seed_i)``.

    Outputs are uint8 ``[H, W, 3]`` arrays; ``call_kwargs`` go to the pipeline (``num_inference_steps``,
    ``guidance_scale``, ``mask``, ``image``, ``height``, ``width``). Needs a pipeline that accepts one generator
    per prompt (``accepts_generator_list``), so a candidate is the same whatever batch it is drawn in.
    """
    if not getattr(pipe, "accepts_generator_list", False):
        raise ValueError(f"{type(pipe).__name__} does not take one generator per image; batched search needs it")

    def generate(seeds: list[int]) -> tuple[list[np.ndarray], int]:
        out = pipe([prompt] * len(seeds), generator=generators(seeds), output_type="np", **call_kwargs)
        return list(out.images), int(out.nfe)

    return generate


def pianoroll_generate_fn(pipe, roll: np.ndarray, mask: np.ndarray, **call_kwargs) -> GenerateFn:
    """Generate fn over a ``PianoRollInpaintPipeline``: candidate i inpaints ``roll`` ``[2, 64, W]`` where
    ``mask`` ``[64, W]`` is True, drawing its noise from ``torch.Generator(seed_i)`` alone.

    Outputs are rolls ``[2, 64, W]`` (values k/127, known cells copied exactly); ``call_kwargs``:
    ``num_inference_steps``, ``repaint``. The pipeline's own busyness selection is bypassed (all candidates
    come back); its sampler takes the list of generators, one per candidate (at most 64 per call).
    """

    def generate(seeds: list[int]) -> tuple[list[np.ndarray], int]:
        out = pipe(roll, mask, num_samples=len(seeds), generator=generators(seeds), **call_kwargs)
        return list(out.candidates), int(out.nfe)

    return generate
