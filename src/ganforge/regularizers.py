"""Discriminator regularizers that compose with any loss.

- Gradient penalty (Gulrajani et al. 2017): lambda * E[(||grad_x D(x_hat)||_2 - 1)^2] on random
  interpolates x_hat between real and fake images: the soft 1-Lipschitz constraint of WGAN-GP.
- R1 (Mescheder et al. 2018): gamma/2 * E[||grad_x D(x)||^2] on real images; applied lazily every k
  steps with its weight multiplied by k (Karras et al. 2020), which costs 1/k of the compute.
"""

from __future__ import annotations

import torch
from torch import nn


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
