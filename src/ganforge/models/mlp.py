"""MLP GAN (Goodfellow et al. 2014 style): the smallest model that learns MNIST-like data.

G: Linear blocks with BatchNorm + LeakyReLU, tanh output. D: Linear + LeakyReLU + Dropout, no
BatchNorm (BatchNorm in an MLP discriminator leaks batch statistics and destabilizes training).
Conditional variant (Mirza & Osindero 2014): the label vector is concatenated to z and to the image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge.config import Key, extend_schema
from ganforge.models.layers import label_vector
from ganforge.models.registry import MODELS, ModelFamily, num_labels

extend_schema("model", {"hidden": Key(256, int, "hidden width of the MLP models", min=1, max=65536)}, owner="mlp")


class MLPGenerator(nn.Module):
    def __init__(
        self, z_dim: int, resolution: int, channels: int, hidden: int = 256, labels: int | None = None
    ) -> None:
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.num_labels = z_dim, resolution, channels, labels
        widths = [hidden, hidden * 2, hidden * 4]
        layers: list[nn.Module] = []
        prev = z_dim + (labels or 0)
        for i, w in enumerate(widths):
            layers.append(nn.Linear(prev, w, bias=i == 0))
            if i > 0:  # no BatchNorm straight on the latent, as in most reference MLP GANs
                layers.append(nn.BatchNorm1d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = w
        layers += [nn.Linear(prev, channels * resolution * resolution), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_labels:
            z = torch.cat([z, label_vector(labels, self.num_labels)], dim=1)
        return self.net(z).view(-1, self.channels, self.resolution, self.resolution)


class MLPDiscriminator(nn.Module):
    def __init__(
        self, resolution: int, channels: int, hidden: int = 256, dropout: float = 0.3, labels: int | None = None
    ) -> None:
        super().__init__()
        self.num_labels = labels
        widths = [hidden * 4, hidden * 2, hidden]
        layers: list[nn.Module] = []
        prev = channels * resolution * resolution + (labels or 0)
        for w in widths:
            layers += [nn.Linear(prev, w), nn.LeakyReLU(0.2, inplace=True), nn.Dropout(dropout)]
            prev = w
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = x.flatten(1)
        if self.num_labels:
            h = torch.cat([h, label_vector(labels, self.num_labels)], dim=1)
        return self.net(h).view(-1)


def _g(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return MLPGenerator(m["z_dim"], d["resolution"], d["channels"], m["hidden"], num_labels(cfg))


def _d(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    dropout = 0.3 if m["d_dropout"] is None else m["d_dropout"]
    return MLPDiscriminator(d["resolution"], d["channels"], m["hidden"], dropout, num_labels(cfg))


MODELS.register("mlp")(
    ModelFamily(_g, _d, resolutions=(28, 32, 64), description="MLP G (BatchNorm+LeakyReLU) / MLP D (dropout)")
)
