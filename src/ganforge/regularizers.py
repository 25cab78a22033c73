"""Discriminator regularizers that compose with any loss.

- Gradient penalty (Gulrajani et al. 2017): lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] on random
  interpolates x_hat between real and fake images: the soft 1-Lipschitz constraint of WGAN-GP.
- R1 (Mescheder et al. 2018): gamma/2 * E[||grad_x D(x)||^2] on real images; applied lazily every k
  steps with its weight multiplied by k (Karras et al. 2020), which costs 1/k of the compute.
- Drift (Karras et al. 2018): eps * E[D(real)^2] keeps a WGAN critic's outputs near 0.
- Path length (Karras et al. 2020): a G regularizer of style-based generators.

Each is a function (the math, tested against autograd) and a `Part` of the objective registered in
`PARTS` (its config keys, weight and laziness). Adding a regularizer: one class here with
`@PARTS.register("name")`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge.errors import UserError
from ganforge.losses import PARTS, DStep, GStep, Part, Terms, gp_weight


def _input_grad(D: nn.Module, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """d(sum D(x)) / dx with the graph kept, so the penalty itself can be backpropagated."""
    out = D(x, labels)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad


def gradient_penalty(
    D: nn.Module, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """E[(||grad D(x_hat)|| - 1)^2] (unweighted) with x_hat = eps*real + (1-eps)*fake, eps ~ U(0,1) per sample."""
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=generator.device).to(real.device, real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    grad = _input_grad(D, x_hat, labels)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def r1_penalty(D: nn.Module, real: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """E[||grad D(x)||^2] (unweighted; multiply by gamma/2) on real images."""
    x = real.detach().requires_grad_(True)
    grad = _input_grad(D, x, labels)
    return grad.flatten(1).pow(2).sum(dim=1).mean()


def path_length_penalty(
    G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, pl_mean: torch.Tensor, decay: float,
    generator: torch.Generator, shrink: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleGAN2's path-length regularizer: E[(||J_w^T y||_2 - a)^2] with y ~ N(0, I) / sqrt(H*W) and a
    the running mean of the lengths, so a fixed-size step in w moves the image by a fixed amount
    whatever the direction. Runs on batch/`shrink` samples (as the paper). Returns (penalty, new a)."""
    n = max(1, z.shape[0] // shrink)
    ws = G.mapping(z[:n], None if labels is None else labels[:n], update_w_avg=False)  # as stylegan2-ada
    img = G.synthesis(ws)
    y = torch.randn(img.shape, generator=generator, device=generator.device).to(img.device, img.dtype)
    y = y / (img.shape[2] * img.shape[3]) ** 0.5
    (grad,) = torch.autograd.grad((img * y).sum(), ws, create_graph=True)
    lengths = grad.square().sum(dim=2).mean(dim=1).sqrt()
    new_mean = pl_mean.lerp(lengths.mean().detach(), decay)
    return (lengths - new_mean).square().mean(), new_mean


# --- the regularizers as parts of the objective ----------------------------------------------------
@PARTS.register("drift")
class Drift(Part):
    order = 10

    def __init__(self, weight: float) -> None:
        self.weight = weight

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        return cls(cfg["loss"]["drift"]) if cfg["loss"]["drift"] else None

    def d_terms(self, s: DStep) -> Terms:
        return {"drift": (self.weight, s.d_real.square().mean())}


@PARTS.register("gp")
class GradientPenalty(Part):
    order = 20
    logged = ("gp",)

    def __init__(self, weight: float) -> None:
        self.weight = weight

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        w = gp_weight(cfg)
        return cls(w) if w else None

    def d_terms(self, s: DStep) -> Terms:
        return {"gp": (self.weight, gradient_penalty(s.D, s.real, s.fake, s.labels, s.rng))}


@PARTS.register("r1")
class R1(Part):
    order = 30

    def __init__(self, gamma: float, every: int) -> None:
        self.gamma, self.every = gamma, every

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        lc = cfg["loss"]
        return cls(lc["r1_gamma"], lc["r1_every"]) if lc["r1_gamma"] else None

    def d_terms(self, s: DStep) -> Terms:
        if s.d_iter % self.every:
            return {}
        # lazy: k times the weight, 1/k as often
        return {"r1": ((self.gamma / 2) * self.every, r1_penalty(s.D, s.real, s.labels))}


@PARTS.register("path_length")
class PathLength(Part):
    order = 40

    def __init__(self, weight: float, every: int, decay: float, device: torch.device) -> None:
        self.weight, self.every, self.decay = weight, every, decay
        self.mean = torch.zeros((), device=device)  # the running target a

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        lc = cfg["loss"]
        if not lc["pl_weight"]:
            return None
        if not hasattr(G, "mapping"):
            raise UserError(f"loss.pl_weight needs a style-based generator (stylegan2), not {cfg['model']['name']!r}; "
                            "set loss.pl_weight=0")
        return cls(lc["pl_weight"], lc["pl_every"], lc["pl_decay"], next(G.parameters()).device)

    def g_terms(self, s: GStep) -> Terms:
        if s.step % self.every:
            return {}
        pl, self.mean = path_length_penalty(s.G, s.z, s.labels, self.mean, self.decay, s.rng)
        return {"pl": (self.weight * self.every, pl)}

    def progress(self) -> dict[str, float]:
        return {"pl_mean": float(self.mean)}

    def state_dict(self) -> dict[str, Any]:
        return {"pl_mean": float(self.mean)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.mean.fill_(float(state["pl_mean"]) if state else 0.0)
