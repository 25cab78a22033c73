"""DCGAN (Radford et al. 2016), generalised to 28, 32, 64 and 128 pixels.

At 64x64 with nf=64 this is layer for layer the pytorch/examples `dcgan` network. Other sizes change
only the number of doubling stages (28 starts from 7x7 instead of 4x4).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ganforge.models.registry import MODELS, ModelFamily


def _stages(resolution: int) -> tuple[int, int]:
    """(base size, number of 2x stages) so that base * 2**stages == resolution."""
    base = 7 if resolution % 7 == 0 else 4
    n = int(math.log2(resolution // base))
    assert base * 2**n == resolution, resolution
    return base, n


def dcgan_init(m: nn.Module) -> None:
    """N(0, 0.02) weights, BatchNorm N(1, 0.02), zero biases: the DCGAN paper's initialisation."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int, nf: int = 64) -> None:
        super().__init__()
        self.z_dim, self.resolution, self.channels = z_dim, resolution, channels
        base, n = _stages(resolution)
        c = nf * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(z_dim, c, base, 1, 0, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(True),
        ]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(z.view(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, nf: int = 64, norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        base, n = _stages(resolution)
        use_bn = norm == "batch"

        def act() -> list[nn.Module]:
            return [nn.LeakyReLU(0.2, inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])

        layers: list[nn.Module] = [nn.Conv2d(channels, nf, 4, 2, 1, bias=not use_bn), *act()]
        c = nf
        for _ in range(n - 1):
            layers.append(nn.Conv2d(c, c * 2, 4, 2, 1, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm2d(c * 2))
            layers += act()
            c *= 2
        layers.append(nn.Conv2d(c, 1, base, 1, 0, bias=not use_bn))
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main(x).view(-1)


def _g(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return DCGANGenerator(m["z_dim"], d["resolution"], d["channels"], m["nf"])


def _d(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    dropout = 0.0 if m["d_dropout"] is None else m["d_dropout"]
    return DCGANDiscriminator(d["resolution"], d["channels"], m["nf"], m["d_norm"], dropout)


MODELS.register("dcgan")(ModelFamily(_g, _d, resolutions=(28, 32, 64, 128), description="DCGAN (Radford et al. 2016)"))
