"""Learning rate vs batch size: scaling rules, warm-up, a layer-wise trust-ratio optimizer, and the surge
estimate of the best Adam learning rate from a measured gradient-noise scale.

- ``scaled_lr``: none | sqrt (Adam-style optimisers; Granziol et al., Malladi et al.) | linear (Goyal et al.,
  SGD), relative to the batch at which the base rate was tuned. Apply it exactly once.
- ``warmup_factor``: Goyal et al.'s gradual warm-up, a linear ramp from the base batch's rate to the scaled one.
- ``LAMB``: Adam with the LARS/LAMB layer-wise trust ratio ‖w‖ / ‖update‖ per parameter tensor.
- ``GradientNoiseScale``: McCandlish et al.'s simple noise scale B_noise = tr(Σ) / |G|², estimated from the
  squared norms of a small-batch and a large-batch gradient of the same step (micro-batch vs accumulated,
  or one process vs all processes); ``surge_optimal_lr`` turns it into the optimal Adam rate for a batch
  (Li et al. 2024: ε_opt(B) = ε_max / (½(√(B_noise/B) + √(B/B_noise))), peaking at B = B_noise).
"""

from __future__ import annotations

import math

import torch

RULES = ("none", "sqrt", "linear")


def scaled_lr(base_lr: float, total_batch: int, base_batch: int, rule: str) -> float:
    """LR for ``total_batch`` given ``base_lr`` tuned at ``base_batch``."""
    if rule not in RULES:
        raise ValueError(f"unknown lr scaling rule {rule!r}; expected one of {RULES}")
    if total_batch <= 0 or base_batch <= 0:
        raise ValueError(f"batch sizes must be positive, got {total_batch} and {base_batch}")
    ratio = total_batch / base_batch
    return base_lr * {"none": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[rule]


def warmup_factor(step: int, warmup_steps: int, start_ratio: float = 0.0) -> float:
    """Multiplier of the target LR at optimizer ``step``: linear from ``start_ratio`` to 1 over ``warmup_steps``.

    Goyal et al.'s gradual warm-up starts at the base batch's rate: ``start_ratio = base_lr / scaled_lr``."""
    if warmup_steps <= 0:
        return 1.0
    progress = min(1.0, (step + 1) / warmup_steps)
    return start_ratio + (1.0 - start_ratio) * progress


def decay_factor(step: int, max_steps: int, warmup_steps: int, kind: str = "none", final_ratio: float = 0.1,
                 decay_start: int | None = None) -> float:
    """Multiplier after the warm-up, reaching ``final_ratio`` at ``max_steps``:

    - ``"none"``: 1;
    - ``"cosine"``: cosine from 1 after the warm-up;
    - ``"cooldown"``: warmup-stable-decay — 1 until ``decay_start``, then linear down. A run trained at a
      constant rate can be resumed with a cooldown and annealed without retraining its stable phase.
    """
    if kind == "none":
        return 1.0
    if kind == "cosine":
        progress = min(1.0, max(0, step - warmup_steps) / max(1, max_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if kind == "cooldown":
        if decay_start is None or not warmup_steps <= decay_start < max_steps:
            raise ValueError(f"the cooldown needs warmup_steps <= decay_start < max_steps, got decay_start "
                             f"{decay_start} (warm-up {warmup_steps}, max_steps {max_steps})")
        progress = min(1.0, max(0, step - decay_start) / (max_steps - decay_start))
        return 1.0 - (1.0 - final_ratio) * progress
    raise ValueError(f"unknown LR decay {kind!r}; expected none, cosine or cooldown")


def surge_optimal_lr(batch: float, b_noise: float, lr_max: float) -> float:
    """Li et al.'s surge law for Adam: the best LR at ``batch`` given the noise scale, peaking at ``lr_max``."""
    if batch <= 0 or b_noise <= 0:
        raise ValueError("batch and b_noise must be positive")
    return lr_max / (0.5 * (math.sqrt(b_noise / batch) + math.sqrt(batch / b_noise)))


class GradientNoiseScale:
    """Running estimate of B_noise = tr(Σ)/|G|² from paired gradient norms (McCandlish et al., App. A).

    With E|G_B|² = |G|² + tr(Σ)/B for a batch of B samples, two measurements of one step give unbiased
    estimates |G|² ≈ (B_big·|G_big|² − B_small·|G_small|²)/(B_big − B_small) and
    tr(Σ) ≈ (|G_small|² − |G_big|²)/(1/B_small − 1/B_big). Both are averaged with an EMA before the ratio,
    as the single-step estimates are noisy.
    """

    def __init__(self, beta: float = 0.95):
        self.beta = beta
        self.g2 = None
        self.trace = None

    def update(self, small_sq_norm: float, b_small: int, big_sq_norm: float, b_big: int) -> float | None:
        if not b_big > b_small > 0:
            raise ValueError(f"need b_big > b_small > 0, got {b_big}, {b_small}")
        g2 = (b_big * big_sq_norm - b_small * small_sq_norm) / (b_big - b_small)
        trace = (small_sq_norm - big_sq_norm) / (1 / b_small - 1 / b_big)
        self.g2 = g2 if self.g2 is None else self.beta * self.g2 + (1 - self.beta) * g2
        self.trace = trace if self.trace is None else self.beta * self.trace + (1 - self.beta) * trace
        return self.value

    @property
    def value(self) -> float | None:
        if self.g2 is None or self.g2 <= 0:
            return None
        return self.trace / self.g2


def grad_sq_norm(parameters) -> float:
    """Σ ‖grad‖² over parameters that have a gradient."""
    total = 0.0
    for p in parameters:
        if p.grad is not None:
            total += float(p.grad.detach().float().pow(2).sum())
    return total


class LAMB(torch.optim.Optimizer):
    """Adam(W) moments with a per-tensor trust ratio (You et al. 2019): w ← w − lr·r·u, where
    u = m̂/(√v̂ + eps) + wd·w and r = ‖w‖/‖u‖ (1 when either norm is 0), clipped to ``max_trust``."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 max_trust: float = 10.0):
        if lr <= 0 or eps <= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"invalid LAMB hyper-parameters lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_trust=max_trust))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p, dtype=torch.float32)
                    state["v"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                g = p.grad.float()
                state["m"].lerp_(g, 1 - b1)
                state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = state["m"] / (1 - b1 ** state["step"])
                v_hat = state["v"] / (1 - b2 ** state["step"])
                update = m_hat / (v_hat.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * p.float()
                w_norm, u_norm = p.float().norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                trust = trust.clamp(max=group["max_trust"])
                p.add_((update * trust * -group["lr"]).to(p.dtype))
        return loss
