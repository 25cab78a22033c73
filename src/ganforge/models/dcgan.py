"""DCGAN (Radford et al. 2016), generalised to 28, 32, 64 and 128 pixels.

At 64x64 with nf=64 this is layer for layer the pytorch/examples `dcgan` network. Other sizes change
only the number of doubling stages (28 starts from 7x7 instead of 4x4). Options: conditional
BatchNorm in G and a projection head in D for class/attribute-conditional training, and spectral
normalisation of D's weights (the "SNDCGAN" of Miyato et al. 2018).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.config import Key, extend_schema
from ganforge.models.equalized import MinibatchStd
from ganforge.models.layers import Norm2d, Projection, label_vector, maybe_sn
from ganforge.models.registry import MODELS, ModelFamily, num_labels

extend_schema("model", {
    "d_norm": Key("batch", str, "dcgan: normalization in D", choices=("batch", "none")),
    "d_spectral_norm": Key(False, bool, "dcgan: spectral normalisation of every D weight (sngan always has it)"),
    "d_mbstd": Key(0, int, "dcgan: minibatch-stddev group size before D's head, a diversity signal against dropped "
                           "modes (ProGAN); 0 = off", min=0, max=1024),
}, owner="dcgan")


def _stages(resolution: int) -> tuple[int, int]:
    """(base size, number of 2x stages) so that base * 2**stages == resolution."""
    base = 7 if resolution % 7 == 0 else 4
    n = int(math.log2(resolution // base))
    assert base * 2**n == resolution, resolution
    return base, n


def dcgan_init(m: nn.Module) -> None:
    """N(0, 0.02) weights, BatchNorm N(1, 0.02), zero biases: the DCGAN paper's initialisation."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) and not hasattr(m, "parametrizations"):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)) and m.affine:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int, nf: int = 64, labels: int | None = None) -> None:
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.num_labels = z_dim, resolution, channels, labels
        base, n = _stages(resolution)
        c = nf * 2 ** (n - 1)
        # conditional: the label enters twice, concatenated to z (a direct signal from step 0) and
        # through conditional BatchNorm at every stage (as in BigGAN)
        self.convs = nn.ModuleList([nn.ConvTranspose2d(z_dim + (labels or 0), c, base, 1, 0, bias=False)])
        self.norms = nn.ModuleList([Norm2d(c, labels)])
        for _ in range(n - 1):
            self.convs.append(nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False))
            self.norms.append(Norm2d(c // 2, labels))
            c //= 2
        self.to_img = nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False)
        self.apply(dcgan_init)

    def fold_batchnorm_(self) -> None:
        """Eval only: fold each stage's plain BatchNorm into its transposed conv (see models/inference.py)."""
        from ganforge.models.inference import fold, foldable

        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if foldable(conv, norm.norm):
                self.convs[i] = fold(conv, norm.norm)
                norm.norm = nn.Identity()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_labels:
            z = torch.cat([z.flatten(1), label_vector(labels, self.num_labels)], dim=1)
        x = z.view(z.shape[0], -1, 1, 1)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            x = F.relu(norm(conv(x), labels), inplace=True)
        return torch.tanh(self.to_img(x))


class DCGANDiscriminator(nn.Module):
    def __init__(
        self, resolution: int, channels: int, nf: int = 64, norm: str = "batch", dropout: float = 0.0,
        sn: bool = False, labels: int | None = None, mbstd: int = 0,
    ) -> None:
        super().__init__()
        base, n = _stages(resolution)
        use_bn = norm == "batch"

        def act() -> list[nn.Module]:
            return [nn.LeakyReLU(0.2, inplace=True)] + ([nn.Dropout(dropout)] if dropout > 0 else [])

        layers: list[nn.Module] = [maybe_sn(nn.Conv2d(channels, nf, 4, 2, 1, bias=not use_bn), sn), *act()]
        c = nf
        for _ in range(n - 1):
            layers.append(maybe_sn(nn.Conv2d(c, c * 2, 4, 2, 1, bias=not use_bn), sn))
            if use_bn:
                layers.append(nn.BatchNorm2d(c * 2))
            layers += act()
            c *= 2
        self.features = nn.Sequential(*layers)
        # the spread of each feature over a group of images, as one more map: D sees a batch with too little
        # variety (a dropped class) and G's gradient pushes it apart
        self.mbstd = MinibatchStd(mbstd, 1) if mbstd else None
        self.head = maybe_sn(nn.Conv2d(c + (1 if mbstd else 0), 1, base, 1, 0, bias=not use_bn), sn)
        self.projection = Projection(labels, c * base * base, sn) if labels else None
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.head(h if self.mbstd is None else self.mbstd(h)).view(-1)
        if self.projection is not None:
            out = out + self.projection(h.flatten(1), labels)
        return out


def _g(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return DCGANGenerator(m["z_dim"], d["resolution"], d["channels"], m["nf"], num_labels(cfg))


def _d(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    dropout = 0.0 if m["d_dropout"] is None else m["d_dropout"]
    return DCGANDiscriminator(d["resolution"], d["channels"], m["d_nf"] or m["nf"], m["d_norm"], dropout,
                              m["d_spectral_norm"], num_labels(cfg), m["d_mbstd"])


MODELS.register("dcgan")(ModelFamily(_g, _d, resolutions=(28, 32, 64, 128), description="DCGAN (Radford et al. 2016)"))
