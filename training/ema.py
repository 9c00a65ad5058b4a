"""Exponential moving average of model weights with the inverse-power warm-up (k-diffusion / diffusers).

decay(step) = min(max_decay, 1 − (1 + step / inv_gamma)^(−power)); stepped once per optimizer step.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class InversePowerEMA:
    def __init__(self, model: nn.Module, power: float = 0.75, max_decay: float = 0.9999, inv_gamma: float = 1.0):
        if not 0 < power or not 0 <= max_decay < 1:
            raise ValueError(f"need power > 0 and 0 ≤ max_decay < 1, got {power}, {max_decay}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.max_decay, self.inv_gamma = power, max_decay, inv_gamma
        self.step_count = 0

    def decay(self) -> float:
        return min(self.max_decay, 1.0 - (1.0 + self.step_count / self.inv_gamma) ** -self.power)

    @torch.no_grad()
    def step(self, model: nn.Module) -> None:
        """Move the averaged weights towards ``model``'s; buffers are copied."""
        self.step_count += 1
        d = self.decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - d)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor], step_count: int) -> None:
        self.model.load_state_dict(state)
        self.step_count = step_count
