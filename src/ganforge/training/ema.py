"""Exponential moving average of the generator's weights (G_ema), the generator one samples from.

Averaging over steps removes much of the step-to-step jitter of GAN training (Karras et al. 2018,
Yazici et al. 2019). Buffers (BatchNorm running statistics) are copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(step: int, images: int, decay: float, start: int = 0, kimg: float | None = None) -> float:
    """The one EMA rule (both backends): 0 (a copy) before `start`; else the per-step `decay`, or with `kimg` the
    half-life 0.5 ** (images / (kimg * 1000)) for the `images` of this step; capped by the warm-up
    (1 + step) / (10 + step), a short memory early on so G_ema is not stuck near the random init."""
    if step < start:
        return 0.0
    d = 0.5 ** (images / (kimg * 1000.0)) if kimg else decay
    return min(d, (1 + step) / (10 + step))


class EMA:
    """`decay` per step, or -- when `kimg` is given -- a half-life of `kimg` thousand real images (StyleGAN's
    ema_kimg): decay = 0.5 ** (images / (kimg * 1000)) for the images of each step, so the memory in images
    stays the same when the batch size changes (progressive growing, another GPU count)."""

    def __init__(self, model: nn.Module, decay: float, start: int = 0, kimg: float | None = None) -> None:
        self.decay, self.start, self.kimg = decay, start, kimg
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, images: int = 0) -> None:
        """After G update `step`, which consumed `images` real images."""
        decay = ema_decay(step, images, self.decay, self.start, self.kimg)
        ema_p = list(self.model.parameters())
        src_p = list(model.parameters())
        if decay == 0.0:
            torch._foreach_copy_(ema_p, src_p)
        else:
            torch._foreach_lerp_(ema_p, src_p, 1.0 - decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)
