"""Exponential moving average of the generator's weights (G_ema), the generator one samples from.

Averaging over steps removes much of the step-to-step jitter of GAN training (Karras et al. 2018,
Yazici et al. 2019). Buffers (BatchNorm running statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    def __init__(self, model: nn.Module, decay: float, start: int = 0) -> None:
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # warm-up: a short memory early on, so G_ema is not stuck near the random init
        decay = 0.0 if step < self.start else min(self.decay, (1 + step) / (10 + step))
        ema_p = list(self.model.parameters())
        src_p = list(model.parameters())
        if decay == 0.0:
            torch._foreach_copy_(ema_p, src_p)
        else:
            torch._foreach_lerp_(ema_p, src_p, 1.0 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
