"""Adversarial losses, registered by name.

A loss maps discriminator logits to scalars: `d_loss(d_real, d_fake)` and `g_loss(d_fake)`.
Regularizers (gradient penalty, R1) are separate objects so that they compose with any loss;
the trainer never changes per GAN family.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganforge.registry import Registry


class GANLoss:
    """Interface: subclasses implement the two halves of the minimax game."""

    def d_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


LOSSES: Registry[type[GANLoss]] = Registry("loss")


@LOSSES.register("nsgan")
class NonSaturatingLoss(GANLoss):
    """Goodfellow et al. 2014 with the non-saturating G loss, on logits (BCE-with-logits is stable)."""

    def d_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        # softplus(-x) = -log(sigmoid(x)); softplus(x) = -log(1 - sigmoid(x))
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-d_fake).mean()


def build_loss(name: str) -> GANLoss:
    return LOSSES.get(name)()
