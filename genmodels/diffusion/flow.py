"""Rectified flow (flow matching with straight paths), as trained and sampled by SANA / SD3.

Noising path, with t ∈ [0, 1] (0 = data, 1 = noise):

    x_t = (1 − t)·x₀ + t·ε,      target velocity  v = dx_t/dt = ε − x₀,      x₀ = x_t − t·v.

Training draws t logit-normally (t = σ(u), u ~ N(mean, std²); SD3's "lognorm(0, 1)") and then applies the
resolution shift ``t' = s·t / (1 + (s − 1)·t)`` (s > 1 spends more time at high noise, which larger images
need; :func:`default_shift` gives SD3's √(pixels / base pixels) rule, 1 at 64²). Sampling integrates
dx/dt = v from t = 1 down to 0 on the same shifted grid.

A *velocity fn* takes ``x [B, ...]`` and ``t [B]`` and returns v ``[B, ...]``; bind the text with a closure
(:func:`cfg_velocity` wraps one for classifier-free guidance with a single batched call). Samplers:
:func:`sample_flow_euler` (hand-written), :func:`sample_flow_scheduler` (diffusers'
``FlowMatchEulerDiscreteScheduler`` or flow-configured ``DPMSolverMultistepScheduler``, i.e. SANA's
Flow-DPM-Solver = DPM-Solver++(2M) on x̂₀), and :func:`sample_flow_inpaint` (known region re-imposed on its
own straight path at every step, copied exactly at the end). All return a :class:`SamplerOutput`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .noise import item_generators
from .sampling import SamplerOutput, _randn

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ProgressFn = Callable[[int, int], None]
SchedulerKind = Literal["euler", "dpmsolver++"]

# Path and time distribution


def flow_interpolate(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``x_t = (1 − t)·x₀ + t·ε``; t ``[B]`` (or a scalar) broadcast over the trailing dims of ``x0`` ``[B, ...]``."""
    t = _expand(torch.as_tensor(t, dtype=x0.dtype, device=x0.device), x0)
    return (1 - t) * x0 + t * noise


def flow_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The velocity ``v = ε − x₀`` of the straight path (independent of t)."""
    return noise - x0


def shift_time(t: torch.Tensor | float, shift: float) -> torch.Tensor | float:
    """Resolution shift ``s·t / (1 + (s − 1)·t)``: maps [0, 1] onto itself, fixes 0 and 1, s = 1 is the identity
    (SD3 eq. 23; diffusers' ``shift`` / ``flow_shift``)."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def default_shift(height: int, width: int, base: int = 64) -> float:
    """SD3's resolution rule: shift ``√(H·W / base²)``, so 1 at 64×64 (our base), 2 at 128², 4 at 256²."""
    return math.sqrt(height * width) / base


def logit_normal_timesteps(n: int, *, mean: float = 0.0, std: float = 1.0, shift: float = 1.0,
                           generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``n`` training times ``shift_time(σ(u), shift)``, u ~ N(mean, std²): ``[n]`` float32, strictly inside (0, 1)
    (clamped 1e-5 away from the ends, where float32 σ(u) would round to 0 or 1)."""
    u = _randn((n,), generator, device=device, dtype=torch.float32) * std + mean
    t = shift_time(torch.sigmoid(u), shift)
    return t.clamp(1e-5, 1 - 1e-5)


def flow_timesteps(steps: int, shift: float = 1.0, device=None) -> torch.Tensor:
    """The sampling grid ``shift_time(linspace(1, 0, steps + 1), shift)``: ``[steps + 1]`` float32, from 1 to 0.
    Same values as diffusers' ``FlowMatchEulerDiscreteScheduler`` given ``sigmas=linspace(1, 1/steps, steps)``
    (SD3's pipeline convention)."""
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return shift_time(t, shift).to(device=device, dtype=torch.float32)


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, *[1] * (like.ndim - 1)) if t.ndim else t


# Training objective


@dataclass
class FlowObjective:
    """Rectified-flow loss, ``objective(model, batch, generator) -> [B]`` (the training loop's interface).

    Per sample: t from :func:`logit_normal_timesteps` (``logit_mean``, ``logit_std``, ``shift``; shift None =
    :func:`default_shift` of the batch's image size, 1 at 64²), ε ~ N(0, I), loss = mean over pixels of
    ``(model(x_t, t, text) − (ε − x₀))²``.

    Batch keys: ``pixel_values`` ``[B, C, H, W]`` in [−1, 1]; optional text ``encoder_hidden_states``
    ``[B, L, D]``, ``encoder_attention_mask`` ``[B, L]`` and ``pooled_text`` ``[B, P]``; optional ``drop``
    ``[B]`` bool (captions to replace by the null text). Without ``drop``, each caption is dropped with
    probability ``text_drop_prob`` (SANA: 0.1) using ``generator``, which trains the null text for
    classifier-free guidance. Without text keys the model is trained unconditionally.

    Clips ``[B, C, F, H, W]`` with ``given_frames_prob`` > 0 train text-to-video and frame continuation in
    one model (temporal inpainting): with that probability an item gets its first k frames given, k uniform
    in 1..F−1, or k = 1 (only the first frame: image to video, where the caption alone says where the object
    goes) for a share ``one_frame_share`` of those items. Given frames enter the model clean (not noised) and
    flagged by ``frame_mask`` ``[B, F]``; the loss averages over the other frames only. The model must accept
    ``frame_mask``.

    With ``noise_seed`` ``[B]`` in the batch (the training loop attaches one per item), t, ε and the
    caption-dropout draw of item i all come from a generator seeded by ``noise_seed[i]`` (see
    :func:`~genmodels.diffusion.noise.item_generators`) and ``generator`` is ignored: an item's training
    noise then does not depend on the batch size, the process count or its position in the batch, which
    makes N processes × batch B train exactly like one process × batch N·B.

    A layout (``layout_boxes`` ``[B, K, F, 4]``, ``layout_phrases`` ``[B, K, P]`` encoded, ``layout_valid``
    ``[B, K]``; a model with ``layout_conditioning``) goes to the model with the caption; it is dropped with the
    caption, and otherwise with probability ``layout_drop_prob`` (drawn last, per item), so the model also
    learns text to video and continuation without one.
    """

    shift: float | None = None
    logit_mean: float = 0.0
    logit_std: float = 1.0
    text_drop_prob: float = 0.1
    given_frames_prob: float = 0.0
    one_frame_share: float = 0.0
    layout_drop_prob: float = 0.0

    TEXT_KEYS = ("encoder_hidden_states", "encoder_attention_mask", "pooled_text")

    def __call__(self, model, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        x0 = batch["pixel_values"]
        b = x0.shape[0]
        shift = default_shift(*x0.shape[-2:]) if self.shift is None else self.shift
        text = {key: batch[key] for key in self.TEXT_KEYS if batch.get(key) is not None}
        drop = batch.get("drop")
        if "noise_seed" in batch:  # one generator per item: results do not depend on how items are batched
            gens = item_generators(batch["noise_seed"])
            # per item, in this order: t, noise, caption-dropout draw
            t = torch.cat([logit_normal_timesteps(1, mean=self.logit_mean, std=self.logit_std, shift=shift,
                                                  generator=g) for g in gens]).to(x0.device)
            noise = _randn(x0.shape, gens, x0)
            if "encoder_hidden_states" in text and drop is None:
                drop = torch.cat([torch.rand((1,), generator=g) for g in gens]) < self.text_drop_prob
        else:
            t = logit_normal_timesteps(b, mean=self.logit_mean, std=self.logit_std, shift=shift, generator=generator,
                                       device=x0.device)
            noise = _randn(x0.shape, generator, x0)
            if "encoder_hidden_states" in text and drop is None:
                drop = _rand((b,), generator, x0.device) < self.text_drop_prob
        if "encoder_hidden_states" in text:
            text["drop_text"] = drop.to(device=x0.device, dtype=torch.bool)
        x_t = flow_interpolate(x0, noise, t)
        source = gens if "noise_seed" in batch else generator
        if not (self.given_frames_prob > 0 and x0.ndim == 5 and x0.shape[2] > 1):
            pred = model(x_t, t, **text, **self._layout(batch, drop, source, x0.device))
            return (pred.float() - flow_target(x0, noise).float()).pow(2).flatten(1).mean(1)
        given = self._given_frames(b, x0.shape[2], source, x0.device)
        keep = given[:, None, :, None, None]
        pred = model(torch.where(keep, x0, x_t), t, frame_mask=given, **text,
                     **self._layout(batch, drop, source, x0.device))
        err = (pred.float() - flow_target(x0, noise).float()).pow(2).mean(dim=(1, 3, 4))  # [B, F]
        weight = (~given).float()
        return (err * weight).sum(1) / weight.sum(1)

    def _layout(self, batch: dict, drop: torch.Tensor | None, generators, device) -> dict:
        """The model's layout arguments from ``batch`` (none without ``layout_boxes``), with ``drop_layout``:
        the caption's drop, or a draw below ``layout_drop_prob``."""
        if batch.get("layout_boxes") is None:
            return {}
        b = batch["layout_boxes"].shape[0]
        if isinstance(generators, list):
            u = torch.cat([torch.rand((1,), generator=g) for g in generators])
        else:
            u = _rand((b,), generators, "cpu")
        dropped = u.to(device) < self.layout_drop_prob
        if drop is not None:
            dropped = dropped | drop.to(device=device, dtype=torch.bool)
        return {"layout_boxes": batch["layout_boxes"], "layout_phrases": batch["layout_phrases"],
                "layout_mask": batch.get("layout_valid"), "drop_layout": dropped}

    def _given_frames(self, b: int, frames: int, generators, device) -> torch.Tensor:
        """``[B, F]`` bool: a prefix of k ∈ 1..F−1 frames with probability ``given_frames_prob``, else none
        (drawn after t, noise and the caption drop, from the item's generator when there is one); of the
        prefixes, a share ``one_frame_share`` has k = 1 and the rest k uniform in 1..F−1."""
        if isinstance(generators, list):
            u = torch.cat([torch.rand((2,), generator=g) for g in generators]).reshape(b, 2)
        else:
            u = _rand((b, 2), generators, "cpu")
        share = self.one_frame_share
        v = ((u[:, 1] - share) / (1 - share)).clamp(min=0) if share < 1 else torch.zeros(b)
        k = torch.where(u[:, 1] < share, 1, 1 + (v * (frames - 1)).long().clamp(max=frames - 2))
        k = torch.where(u[:, 0] < self.given_frames_prob, k, torch.zeros(b, dtype=torch.long))
        return (torch.arange(frames)[None] < k[:, None]).to(device)


def _rand(shape, generator: torch.Generator | None, device) -> torch.Tensor:  # one generator (training)
    draw_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=draw_device).to(device)


# Guidance


def check_guidance_interval(interval) -> tuple[float, float] | None:
    """``None`` (guidance at every step) or a pair ``(t_lo, t_hi)`` with 0 ≤ t_lo < t_hi ≤ 1, returned as floats;
    ``ValueError`` for anything else."""
    if interval is None:
        return None
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"guidance_interval must be None or a pair (t_lo, t_hi), got {interval!r}") from None
    if not 0 <= lo < hi <= 1:  # NaN fails the comparison
        raise ValueError(f"guidance_interval needs 0 <= t_lo < t_hi <= 1, got ({lo:g}, {hi:g})")
    return lo, hi


def cfg_velocity(velocity_fn: VelocityFn, guidance_scale: float, *,
                 interval: tuple[float, float] | None = None,
                 conditional_fn: VelocityFn | None = None) -> VelocityFn:
    """Classifier-free guidance ``v = v_u + w·(v_c − v_u)`` with one batched call.

    ``velocity_fn`` must evaluate a doubled batch ``[2B, ...]`` whose first half is unconditional (null
    text) and second half conditional (bind the text that way); the returned fn takes ``x [B, ...]``,
    ``t [B]``. w = 1 gives the conditional velocity, w = 0 the unconditional one.

    ``interval=(t_lo, t_hi)``: guide only where t_lo < t ≤ t_hi (guidance in a limited interval, Kynkäänniemi et
    al., NeurIPS 2024); elsewhere the result is the conditional velocity (w = 1), from ``conditional_fn``
    (``x [B]`` with the text alone: half the work) when given, else from the doubled call. Samples of one batch
    may sit at different t.
    """
    interval = check_guidance_interval(interval)

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        inside = None if interval is None else (t > interval[0]) & (t <= interval[1])
        if inside is not None and conditional_fn is not None and not inside.any():
            return conditional_fn(x, t)
        v_uncond, v_cond = velocity_fn(torch.cat([x, x]), torch.cat([t, t])).chunk(2)
        if inside is None or inside.all():
            return v_uncond + guidance_scale * (v_cond - v_uncond)
        w = torch.where(inside, float(guidance_scale), 1.0).to(v_cond.dtype)
        return v_uncond + _expand(w, v_cond) * (v_cond - v_uncond)

    return guided


# Samplers


class _Counted:
    """Calls ``velocity_fn`` with t broadcast to ``[B]`` float32 and counts the calls."""

    def __init__(self, velocity_fn: VelocityFn):
        self.velocity_fn, self.nfe = velocity_fn, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.velocity_fn(x, t.to(device=x.device, dtype=torch.float32).expand(x.shape[0]))


def _initial_noise(x: torch.Tensor | tuple[int, ...], generator, device, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return _randn(tuple(x), generator, device=device, dtype=dtype)


def sample_flow_euler(velocity_fn: VelocityFn, x: torch.Tensor | tuple[int, ...], steps: int = 20, *,
                      shift: float = 1.0, generator: torch.Generator | None = None,
                      callback: ProgressFn | None = None, device=None, dtype=torch.float32) -> SamplerOutput:
    """Euler integration of dx/dt = v from t = 1 to 0 on :func:`flow_timesteps` (steps, shift). NFE = steps.

    ``x``: the initial noise ``[B, ...]`` (x at t = 1), or a shape to draw it from ``generator``.
    ``callback(step, steps)`` fires after every step.
    """
    x = _initial_noise(x, generator, device, dtype)
    return _flow_loop(velocity_fn, x, steps, shift=shift, callback=callback)


def sample_flow_img2img(velocity_fn: VelocityFn, x_init: torch.Tensor, strength: float, steps: int = 20, *,
                        shift: float = 1.0, generator: torch.Generator | None = None,
                        callback: ProgressFn | None = None) -> SamplerOutput:
    """SDEdit (Meng et al., ICLR 2022) on the straight path: move the clean image ``x_init`` ``[B, ...]`` to
    ``t₀ = strength`` ∈ (0, 1] along its own path, ``x_{t₀} = (1 − t₀)·x_init + t₀·ε``, then integrate with Euler
    from t₀ to 0 over the last ``round(strength · steps)`` (at least 1) intervals of :func:`flow_timesteps`
    (steps, shift); t₀ is the grid point where those intervals start. Strength 1 is plain sampling from noise;
    small strengths keep the layout and redraw the texture. NFE = the intervals run. ``callback(i, n)`` fires
    after every step, with n the intervals run."""
    strength = float(strength)
    if not 0 < strength <= 1:
        raise ValueError(f"strength must lie in (0, 1], got {strength}")
    ts = flow_timesteps(steps, shift, device=x_init.device)
    run = max(1, round(strength * steps))
    ts = ts[steps - run:]
    x = flow_interpolate(x_init, _randn(x_init.shape, generator, x_init), ts[0])
    counted = _Counted(velocity_fn)
    for i in range(run):
        x = x + (ts[i + 1] - ts[i]) * counted(x, ts[i])
        if callback is not None:
            callback(i + 1, run)
    return SamplerOutput(sample=x, nfe=counted.nfe)


def make_flow_scheduler(kind: SchedulerKind = "dpmsolver++", *, shift: float = 1.0):
    """diffusers' flow-matching schedulers, configured like our sampler grid:

    * ``"euler"``: ``FlowMatchEulerDiscreteScheduler(shift=shift)``;
    * ``"dpmsolver++"``: ``DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction",
      flow_shift=shift, algorithm_type="dpmsolver++", solver_order=2)``, SANA's Flow-DPM-Solver (multistep
      DPM-Solver++(2M) on x̂₀ = x_t − t·v, first-order last step, final t = 0).
    """
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

    if kind == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    if kind == "dpmsolver++":
        return DPMSolverMultistepScheduler(num_train_timesteps=1000, use_flow_sigmas=True,
                                           prediction_type="flow_prediction", flow_shift=shift,
                                           algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
                                           final_sigmas_type="zero")
    raise ValueError(f"unknown flow scheduler {kind!r}; expected 'euler' or 'dpmsolver++'")


def scheduler_shift(scheduler) -> float:
    """The time shift a flow scheduler was configured with (``shift`` or ``flow_shift``)."""
    cfg = scheduler.config
    return float(cfg.get("shift", cfg.get("flow_shift", 1.0)))


def set_flow_timesteps(scheduler, steps: int, device=None) -> torch.Tensor:
    """``scheduler.set_timesteps`` for our grid; returns its t values ``[steps + 1]`` (``scheduler.sigmas``, the
    last one 0).

    ``FlowMatchEulerDiscreteScheduler`` gets ``sigmas=linspace(1, 1/steps, steps)`` (SD3's pipeline convention;
    its default grid instead ends at t = 1e-3 before the final 0 and shifts that end twice), so its grid equals
    :func:`flow_timesteps`. ``DPMSolverMultistepScheduler(use_flow_sigmas=True)`` builds its own grid, which
    starts at shift(1 − 1/1000) ≈ 0.999 rather than 1: the initial pure noise is treated as x at t ≈ 0.999.
    """
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    if type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
        scheduler.set_timesteps(sigmas=np.linspace(1.0, 1.0 / steps, steps).tolist(), device=device)
    else:
        scheduler.set_timesteps(steps, device=device)
    scheduler.set_begin_index(0)
    return scheduler.sigmas.to(torch.float32)


def sample_flow_scheduler(velocity_fn: VelocityFn, x: torch.Tensor | tuple[int, ...], steps: int = 20, *,
                          scheduler: SchedulerKind | object = "dpmsolver++", shift: float | None = None,
                          generator: torch.Generator | None = None, callback: ProgressFn | None = None,
                          device=None, dtype=torch.float32) -> SamplerOutput:
    """Sample with a diffusers flow scheduler (a kind for :func:`make_flow_scheduler`, or an instance; ``shift``
    only applies when building one, default 1). The model sees ``t = scheduler.sigmas[i]`` ∈ [0, 1], not the
    scheduler's integer-ish ``timesteps``. NFE = steps."""
    x = _initial_noise(x, generator, device, dtype)
    if isinstance(scheduler, str):
        scheduler = make_flow_scheduler(scheduler, shift=1.0 if shift is None else shift)
    return _flow_loop(velocity_fn, x, steps, scheduler=scheduler, generator=generator, callback=callback)


def sample_flow_inpaint(velocity_fn: VelocityFn, x_known: torch.Tensor, mask: torch.Tensor, steps: int = 20, *,
                        shift: float = 1.0, scheduler: SchedulerKind | object | None = None,
                        fresh_noise: bool = False, generator: torch.Generator | None = None,
                        callback: ProgressFn | None = None) -> SamplerOutput:
    """Flow inpainting: generate where ``mask`` is 1, keep ``x_known`` where it is 0.

    x_known: ``[B, C, H, W]`` clean image (its masked part is ignored); mask: broadcastable to it, values in
    [0, 1], **1 = generate** (fractional values blend). Before every step the known region is re-imposed on
    its own straight path, ``(1 − t_i)·x_known + t_i·ε``, with the sampler's initial noise ε (the exact ODE
    trajectory of those pixels) or, with ``fresh_noise``, a new ε each step (RePaint-style). After the last
    step the known region is copied from ``x_known`` exactly (bitwise where mask = 0). Euler on
    :func:`flow_timesteps` by default, or a diffusers flow ``scheduler`` (kind or instance). NFE = steps.
    """
    mask = mask.to(device=x_known.device, dtype=x_known.dtype)
    try:
        torch.broadcast_shapes(mask.shape, x_known.shape)
    except RuntimeError as err:
        raise ValueError(f"mask {tuple(mask.shape)} does not broadcast to x_known {tuple(x_known.shape)}") from err
    if mask.numel() and (mask.min() < 0 or mask.max() > 1):
        raise ValueError("mask values must lie in [0, 1] (1 = generate, 0 = keep)")
    if isinstance(scheduler, str):
        scheduler = make_flow_scheduler(scheduler, shift=shift)
    noise = _randn(x_known.shape, generator, x_known)
    return _flow_loop(velocity_fn, noise, steps, shift=shift, scheduler=scheduler, generator=generator,
                      callback=callback, x_known=x_known, mask=mask, fresh_noise=fresh_noise)


def _flow_loop(velocity_fn: VelocityFn, x: torch.Tensor, steps: int, *, shift: float = 1.0, scheduler=None,
               generator: torch.Generator | None = None, callback: ProgressFn | None = None,
               x_known: torch.Tensor | None = None, mask: torch.Tensor | None = None,
               fresh_noise: bool = False) -> SamplerOutput:
    """Integrate from t = 1 (x = noise) to 0 with Euler (``scheduler=None``) or ``scheduler.step``; with
    ``mask`` re-impose ``x_known`` on its path before each step and exactly at the end."""
    counted = _Counted(velocity_fn)
    if scheduler is None:
        ts = flow_timesteps(steps, shift, device=x.device)
    else:
        ts = set_flow_timesteps(scheduler, steps, device=x.device).to(x.device)
    noise = x
    for i in range(steps):
        t, t_next = ts[i], ts[i + 1]
        if mask is not None:
            eps = _randn(x.shape, generator, x) if fresh_noise and i > 0 else noise
            x = torch.lerp(flow_interpolate(x_known, eps, t), x, mask)
        v = counted(x, t)
        if scheduler is None:
            x = x + (t_next - t) * v
        else:
            x = scheduler.step(v, scheduler.timesteps[i], x, return_dict=False)[0]
        if callback is not None:
            callback(i + 1, steps)
    if mask is not None:
        x = torch.where(mask == 0, x_known, torch.lerp(x_known, x, mask))
    return SamplerOutput(sample=x, nfe=counted.nfe)


__all__ = [
    "FlowObjective",
    "cfg_velocity",
    "default_shift",
    "flow_interpolate",
    "flow_target",
    "flow_timesteps",
    "logit_normal_timesteps",
    "make_flow_scheduler",
    "sample_flow_euler",
    "sample_flow_img2img",
    "sample_flow_inpaint",
    "sample_flow_scheduler",
    "scheduler_shift",
    "set_flow_timesteps",
    "shift_time",
]
