"""SNGAN ResNet generator and discriminator (Miyato et al. 2018, the CIFAR-10 / STL layouts), with
spectral normalisation on every D weight, the hinge loss in its presets, and the class-conditional
variant of Miyato & Koyama 2018 (conditional BatchNorm in G, projection in D).

32x32: G 4 -> 8 -> 16 -> 32 at constant width nf (256 in the paper); D = optimized block (down),
block (down), block, block, at width nf (128 in the paper). 64x64: widths double per stage (G from
8nf down to nf, D from nf up to 16nf), as in the common 64x64 SNGAN configurations.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ganforge.models.layers import Norm2d, Projection, head_logits, label_vector
from ganforge.models.registry import MODELS, ModelFamily, num_labels


def _xavier(m: nn.Module, gain: float = 1.0) -> nn.Module:
    nn.init.xavier_uniform_(m.weight, gain)
    if m.bias is not None:
        nn.init.zeros_(m.bias)
    return m


class GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, labels: int | None) -> None:
        super().__init__()
        self.n1, self.n2 = Norm2d(c_in, labels), Norm2d(c_out, labels)
        self.c1 = _xavier(nn.Conv2d(c_in, c_out, 3, 1, 1), 2**0.5)
        self.c2 = _xavier(nn.Conv2d(c_out, c_out, 3, 1, 1), 2**0.5)
        self.sc = _xavier(nn.Conv2d(c_in, c_out, 1, 1, 0))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        h = F.interpolate(F.relu(self.n1(x, labels)), scale_factor=2, mode="nearest")
        h = self.c2(F.relu(self.n2(self.c1(h), labels)))
        return h + self.sc(F.interpolate(x, scale_factor=2, mode="nearest"))


class DBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False) -> None:
        super().__init__()
        self.down, self.first = down, first
        self.c1 = spectral_norm(_xavier(nn.Conv2d(c_in, c_out, 3, 1, 1), 2**0.5))
        self.c2 = spectral_norm(_xavier(nn.Conv2d(c_out, c_out, 3, 1, 1), 2**0.5))
        self.sc = spectral_norm(_xavier(nn.Conv2d(c_in, c_out, 1, 1, 0))) if (c_in != c_out or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)  # the optimized first block has no pre-activation
        h = self.c2(F.relu(self.c1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.sc(F.avg_pool2d(s, 2))
        elif self.sc is not None:
            s = self.sc(s)
            if self.down:
                s = F.avg_pool2d(s, 2)
        return h + s


def _g_widths(resolution: int, nf: int) -> list[int]:
    return [nf] * 4 if resolution == 32 else [8 * nf, 8 * nf, 4 * nf, 2 * nf, nf]


def _d_plan(resolution: int, nf: int) -> list[tuple[int, bool]]:
    """(out channels, downsample) per block after the optimized first block."""
    if resolution == 32:
        return [(nf, True), (nf, False), (nf, False)]
    return [(2 * nf, True), (4 * nf, True), (8 * nf, True), (16 * nf, False)]


class SNGANGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int, nf: int = 256, labels: int | None = None) -> None:
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.num_labels = z_dim, resolution, channels, labels
        w = _g_widths(resolution, nf)
        self.fc = _xavier(nn.Linear(z_dim + (labels or 0), 4 * 4 * w[0]))  # label also concatenated to z
        self.blocks = nn.ModuleList(GBlock(w[i], w[i + 1], labels) for i in range(len(w) - 1))
        self.bn = nn.BatchNorm2d(w[-1])
        self.to_img = _xavier(nn.Conv2d(w[-1], channels, 3, 1, 1))
        self.w0 = w[0]

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_labels:
            z = torch.cat([z, label_vector(labels, self.num_labels)], dim=1)
        x = self.fc(z).view(z.shape[0], self.w0, 4, 4)
        for block in self.blocks:
            x = block(x, labels)
        return torch.tanh(self.to_img(F.relu(self.bn(x))))


class SNGANDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int, nf: int = 128, labels: int | None = None) -> None:
        super().__init__()
        blocks = [DBlock(channels, nf, down=True, first=True)]
        c = nf
        for c_out, down in _d_plan(resolution, nf):
            blocks.append(DBlock(c, c_out, down))
            c = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = spectral_norm(_xavier(nn.Linear(c, 1)))
        self.projection = Projection(labels, c, sn=True) if labels else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))  # global sum pooling
        return head_logits(self.head, self.projection, h, labels)


def _g(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return SNGANGenerator(m["z_dim"], d["resolution"], d["channels"], m["nf"], num_labels(cfg))


def _d(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return SNGANDiscriminator(d["resolution"], d["channels"], m["d_nf"] or m["nf"], num_labels(cfg))


MODELS.register("sngan")(
    ModelFamily(
        _g, _d, resolutions=(32, 64), description="SNGAN ResNet G / spectral-norm ResNet D (Miyato et al. 2018)"
    )
)
