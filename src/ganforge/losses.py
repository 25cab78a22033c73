"""The vocabulary of the training objective: adversarial losses and the parts that compose with them.

A loss maps discriminator logits to scalars: `d_loss(d_real, d_fake)` and `g_loss(d_fake)`.
Everything else a GAN family adds to the objective -- a gradient penalty, R1, drift, path length (see
regularizers.py), an augmentation (augment/), a growing schedule (training/schedule.py) -- is a `Part`
registered in `PARTS`: it declares whether the config turns it on and contributes terms, image
transforms and state. The trainer loops over the parts and never changes per GAN family.
A loss may name the regularizer weights its paper uses (`default_gp`), which the config can override.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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


def gp_weight(cfg: dict[str, Any]) -> float:
    """The gradient-penalty weight in force: loss.gp_weight, or the loss's own default (10 for wgan-gp)."""
    lc = cfg["loss"]
    return float(LOSSES.get(lc["name"]).default_gp if lc["gp_weight"] is None else lc["gp_weight"])


# --- parts of the objective ----------------------------------------------------------------------
@dataclass
class DStep:
    """What a D update hands to the parts: the (augmented) batch D saw and its outputs."""

    G: nn.Module
    D: nn.Module
    real: torch.Tensor  # augmented reals, as D saw them
    fake: torch.Tensor  # augmented fakes, detached from G
    d_real: torch.Tensor  # D(real)
    labels: torch.Tensor | None
    rng: torch.Generator  # the step's seeded stream: parts draw their noise from it
    d_iter: int  # D updates so far (lazy regularizers key on it)


@dataclass
class GStep:
    """What a G update hands to the parts."""

    G: nn.Module
    z: torch.Tensor
    labels: torch.Tensor | None
    rng: torch.Generator
    step: int  # G updates so far


Terms = dict[str, tuple[float, torch.Tensor]]  # name -> (weight, unweighted value)


class Part:
    """One composable piece of a GAN objective. Every hook is optional; the defaults do nothing.

    `from_config` returns None when the config leaves the part off, so a run only carries what it uses.
    `order` fixes where a part's terms are added (and so the floating-point sum); `logged` names the
    terms written to metrics.jsonl every step (lazy terms are not computed every step).
    """

    order: int = 100
    logged: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        raise NotImplementedError

    def prepare_batch(self, images_seen: int, models: tuple[nn.Module, ...]) -> int | None:
        """Called before each D batch: put the models in the state for `images_seen` (it acts: progressive growing
        sets the models' stage here); the batch size of that state, or None for "unchanged"."""
        return None

    def reals(self, real: torch.Tensor, D: nn.Module) -> torch.Tensor:
        """Transform reals before augmentation (progressive growing blends them like G's output)."""
        return real

    def augment(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        """Transform every image D sees, real and fake (differentiably)."""
        return x

    def d_terms(self, s: DStep) -> Terms:
        return {}

    def g_terms(self, s: GStep) -> Terms:
        return {}

    def after_d_step(self, s: DStep) -> None:
        """Adapt to what D just saw (ADA's p)."""

    def progress(self) -> dict[str, float]:
        """Numbers worth a column in metrics.jsonl and the progress bar."""
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        """JSON-able state that a resume must restore (None: stateless)."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """`state` is None when the checkpoint holds none for this part."""


PARTS: Registry[type[Part]] = Registry("objective part")
