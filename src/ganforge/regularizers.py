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


def path_length_penalty(
    G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None, pl_mean: torch.Tensor, decay: float,
    generator: torch.Generator, shrink: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
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
