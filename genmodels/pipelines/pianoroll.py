"""Piano-roll inpainting (Pictures of MIDI): mask a region of a roll, an HDiT fills it with notes.

Mask semantics: ``mask`` ``[64, W]`` bool, **True = generate**, False = keep. The known region is
re-imposed at every noise level and copied verbatim into the output, so outside the mask the result equals
the input exactly (pixels and notes). ``repaint`` r resamples each step r times (RePaint; Pictures of MIDI
says this raises the note density, which this model does not reproduce: see BENCHMARKS.md); the busyness
selector generates ``num_samples`` candidates and returns the one at the chosen
percentile of notes inside the mask (100 = busiest).

Rolls wider than the model's training window are inpainted window by window (bar-aligned windows that cover
the mask, left to right, each seeing what the previous one generated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

import genmodels.hdit  # noqa: F401  (diffusers loads the transformer only from an imported module)
from genmodels.diffusion.edm import KarrasDenoiser
from genmodels.diffusion.sampling import sample_inpaint
from genmodels.music.roll import (
    MODEL_THRESHOLD,
    ROLL_PITCHES,
    STEPS_PER_BAR,
    check_roll,
    notes_to_roll,
    roll_notes,
)

ProgressFn = Callable[[int, int], None]


@dataclass
class PianoRollInpaintOutput(BaseOutput):
    """``roll``: the chosen result ``[2, 64, W]`` (values k/127); ``candidates``: all results ``[N, 2, 64, W]``;
    ``notes_in_mask``: onsets inside the mask per candidate; ``chosen``: index of ``roll`` in candidates;
    ``nfe``: denoiser evaluations spent (for all candidates, one batched call counting once per step)."""

    roll: np.ndarray
    candidates: np.ndarray
    notes_in_mask: list[int]
    chosen: int
    nfe: int


def check_mask(mask: np.ndarray, width: int) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != (ROLL_PITCHES, width):
        raise ValueError(f"mask must be [{ROLL_PITCHES}, {width}] (pitch rows × columns of the roll), "
                         f"got {list(mask.shape)}")
    mask = mask.astype(bool)
    if not mask.any():
        raise ValueError("the mask covers nothing: mark the region to generate")
    return mask


def bar_windows(mask: np.ndarray, window: int) -> list[int]:
    """Start columns of bar-aligned windows of ``window`` columns that together cover every masked column.

    One window when the mask's column span fits (centred on it, clamped to the roll); otherwise windows
    left to right, each starting at the first still-uncovered masked column's bar."""
    width = mask.shape[1]
    if width <= window:
        return [0]
    cols = np.flatnonzero(mask.any(0))
    lo, hi = int(cols[0]), int(cols[-1]) + 1
    max_start = width - window
    if hi - lo <= window:
        centre = (lo + hi) / 2 - window / 2
        start = int(round(centre / STEPS_PER_BAR)) * STEPS_PER_BAR
        start = min(max(start, 0), max_start)
        if start > lo or start + window < hi:  # rounding pushed it off the mask: align on the mask instead
            start = min(lo // STEPS_PER_BAR * STEPS_PER_BAR, max_start)
        return [start]
    starts, covered = [], lo
    while covered < hi:
        start = min(covered // STEPS_PER_BAR * STEPS_PER_BAR, max_start)
        starts.append(start)
        covered = start + window
        remaining = cols[cols >= covered]
        if remaining.size == 0:
            break
        covered = int(remaining[0])
    return starts


def clean_generated(x: np.ndarray, mask: np.ndarray, threshold: float = MODEL_THRESHOLD) -> np.ndarray:
    """Model output ``[2, 64, W]`` in [0, 1] → crisp notes inside ``mask`` (velocities k/127), zeros outside."""
    notes = roll_notes(np.where(mask[None], x, 0.0).astype(np.float32), threshold=threshold)
    return notes_to_roll(notes, width=x.shape[2]) * mask[None]


class PianoRollInpaintPipeline(DiffusionPipeline):
    """HDiT (``transformer``) + an EDM scheduler config (``scheduler``: σ range and ρ for the sampler)."""

    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    @property
    def window(self) -> int:
        size = getattr(self.transformer.config, "sample_size", None)
        return int(size[1]) if size else 128

    def check_inputs(self, roll, mask, num_inference_steps, repaint, num_samples, busyness):
        roll = check_roll(np.asarray(roll, dtype=np.float32))
        if roll.shape[1] != ROLL_PITCHES:
            raise ValueError(f"roll must be [2, {ROLL_PITCHES}, W], got {list(roll.shape)}")
        if roll.shape[2] < STEPS_PER_BAR or roll.shape[2] % STEPS_PER_BAR:
            raise ValueError(f"roll width must be a positive multiple of {STEPS_PER_BAR} columns (whole bars), "
                             f"got {roll.shape[2]}")
        mask = check_mask(mask, roll.shape[2])
        for name, value, lo, hi in (("num_inference_steps", num_inference_steps, 2, 500), ("repaint", repaint, 1, 10),
                                    ("num_samples", num_samples, 1, 64), ("busyness", busyness, 0, 100)):
            if not isinstance(value, (int, float)) or not lo <= value <= hi:  # NaN fails the comparison too
                raise ValueError(f"{name} must be a number in {lo}..{hi}, got {value!r}")
            if name != "busyness" and int(value) != value:
                raise ValueError(f"{name} must be an integer, got {value!r}")
        return roll, mask

    @torch.no_grad()
    def __call__(
        self,
        roll: np.ndarray,
        mask: np.ndarray,
        *,
        num_inference_steps: int = 24,
        repaint: int = 2,
        num_samples: int = 1,
        busyness: float = 100.0,
        generator: torch.Generator | None = None,
        callback: ProgressFn | None = None,
    ) -> PianoRollInpaintOutput:
        """Inpaint ``roll`` ``[2, 64, W]`` (values in [0, 1]) where ``mask`` ``[64, W]`` is True."""
        roll, mask = self.check_inputs(roll, mask, num_inference_steps, repaint, num_samples, busyness)
        n, window = int(num_samples), self.window
        results = np.repeat(roll[None], n, axis=0)
        starts = bar_windows(mask, window)
        per_window = num_inference_steps * repaint
        nfe = 0
        for w, start in enumerate(starts):
            sl = slice(start, start + min(window, roll.shape[2]))
            if not mask[:, sl].any():
                continue

            def cb(i, _total, offset=w * per_window):
                if callback is not None:
                    callback(offset + i, len(starts) * per_window)

            masks = np.broadcast_to(mask[:, sl], (n, *mask[:, sl].shape))
            filled, spent = self.inpaint_batch(results[:, :, :, sl], masks, num_inference_steps=num_inference_steps,
                                               repaint=repaint, generator=generator, callback=cb)
            results[:, :, :, sl] = filled
            nfe += spent
        counts = [int(((results[i, 0] > 0) & mask).sum()) for i in range(n)]
        order = np.argsort(counts, kind="stable")
        chosen = int(order[int(round(busyness / 100 * (n - 1)))])
        return PianoRollInpaintOutput(roll=results[chosen], candidates=results, notes_in_mask=counts,
                                      chosen=chosen, nfe=nfe)

    @torch.no_grad()
    def inpaint_batch(self, rolls: np.ndarray, masks: np.ndarray, *, num_inference_steps: int = 24, repaint: int = 2,
                      generator: torch.Generator | None = None, callback: ProgressFn | None = None
                      ) -> tuple[np.ndarray, int]:
        """One sampler run over a batch: ``rolls`` ``[N, 2, 64, w]`` (w ≤ the model window), ``masks``
        ``[N, 64, w]``, each roll with its own mask. Returns the cleaned results (known cells copied exactly)
        and the number of denoiser evaluations."""
        device = self.transformer.device
        known = torch.from_numpy(np.ascontiguousarray(rolls) * 2 - 1).to(device)
        m = torch.from_numpy(np.ascontiguousarray(masks)[:, None].repeat(2, axis=1)).to(device, known.dtype)
        cfg = self.scheduler.config
        out = sample_inpaint(KarrasDenoiser(self.transformer).denoise, known, m, num_steps=int(num_inference_steps),
                             repaint=int(repaint), sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, rho=cfg.rho,
                             generator=generator, callback=callback)
        x = ((out.sample.float().cpu().numpy() + 1) / 2).clip(0, 1)
        if not np.isfinite(x).all():
            raise FloatingPointError("the model produced NaN or infinite values; nothing was written")
        results = np.array(rolls, dtype=np.float32, copy=True)
        for i in range(len(results)):
            results[i] = np.where(masks[i][None], clean_generated(x[i], masks[i]), results[i])
        return results, out.nfe
