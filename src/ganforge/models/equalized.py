"""Layers of the style-based and progressive GANs (Karras et al. 2018, 2019, 2020).

- Equalized learning rate: weights are stored as N(0, 1 / lr_mul) and scaled at run time by
  lr_mul * sqrt(gain / fan_in) (He's constant), so Adam's per-parameter step sizes are the same for
  every layer whatever its fan-in; lr_mul < 1 slows a whole network down (StyleGAN's mapping net).
- Pixel-wise feature normalization (ProGAN's G).
- Minibatch standard deviation (ProGAN and StyleGAN D): one extra feature map with the average
  standard deviation over groups of images, so D can see a lack of variety and punish collapse.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.config import Key, extend_schema

# keys of the families built from these layers (progan, stylegan2)
extend_schema("model", {
    "nf_max": Key(512, int, "channel cap of progan/stylegan2 layers (channels double per halving up to it)", min=1,
                  max=4096),
    "mbstd_group": Key(4, int, "progan/stylegan2 D: minibatch-stddev group size", min=1, max=1024),
}, owner="progan/stylegan2")


class EqualizedLinear(nn.Module):
    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
        lr_mul: float = 1.0, gain: float = 2.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.scale = lr_mul * math.sqrt(gain / in_features)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.scale, b)

    def extra_repr(self) -> str:
        o, i = self.weight.shape
        return f"in={i}, out={o}, scale={self.scale:.4g}, lr_mul={self.lr_mul}"


class EqualizedConv2d(nn.Module):
    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, padding: int | None = None,
        bias: bool = True, gain: float = 2.0,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = math.sqrt(gain / (in_channels * kernel_size * kernel_size))
        self.padding = kernel_size // 2 if padding is None else padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, padding={self.padding}, scale={self.scale:.4g}"


def pixel_norm(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) along `dim` (channels of a feature map, or the latent vector)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=dim, keepdim=True) + eps)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_norm(x)


class MinibatchStd(nn.Module):
    """Append the mean (over features and positions) of the per-group standard deviation of each
    feature as `num_channels` extra maps. Groups of `group_size` images (the batch if it is smaller
    or does not divide evenly), as in ProGAN/StyleGAN2."""

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = n
        f = self.num_channels
        y = x.reshape(g, n // g, f, c // f, h, w).float()
        y = (y - y.mean(dim=0)).pow(2).mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (n/g, f)
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)
