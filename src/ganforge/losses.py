"""Adversarial losses, registered by name.

A loss maps discriminator logits to scalars: `d_loss(d_real, d_fake)` and `g_loss(d_fake)`.
Regularizers (gradient penalty, R1; see regularizers.py) are separate so that they compose with any
loss; the trainer never changes per GAN family. A loss may name the regularizer weights its paper uses
(`default_gp`), which the config can override.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganforge.registry import Registry


class GANLoss:
    """Interface: subclasses implement the two halves of the minimax game."""

    default_gp: float = 0.0  # gradient-penalty weight the family is defined with (WGAN-GP: 10)

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


@LOSSES.register("wgan")
class WassersteinLoss(GANLoss):
    """Arjovsky et al. 2017: the critic estimates W1(real, fake); needs a Lipschitz constraint (use gp)."""

    def d_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return d_fake.mean() - d_real.mean()

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return -d_fake.mean()


@LOSSES.register("wgan-gp")
class WassersteinGPLoss(WassersteinLoss):
    """WGAN-GP (Gulrajani et al. 2017): the Wasserstein loss with a gradient penalty of weight 10."""

    default_gp = 10.0


@LOSSES.register("hinge")
class HingeLoss(GANLoss):
    """Hinge loss of SNGAN / BigGAN (Lim & Ye 2017, Miyato et al. 2018)."""

    def d_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return -d_fake.mean()


@LOSSES.register("lsgan")
class LeastSquaresLoss(GANLoss):
    """LSGAN (Mao et al. 2017) with the 0-1 coding: a = 0 (fake), b = c = 1 (real)."""

    def d_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((d_real - 1.0) ** 2).mean() + 0.5 * (d_fake**2).mean()

    def g_loss(self, d_fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((d_fake - 1.0) ** 2).mean()


def build_loss(name: str) -> GANLoss:
    return LOSSES.get(name)()
