"""Building blocks shared by the model families: label embeddings, conditional BatchNorm, the
projection discriminator head and spectral normalisation."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


def label_vector(labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Class indices (N,) -> one-hot (N, L); multi-hot attribute rows (N, L) pass through as float.

    One representation for both lets every conditional layer be a linear map of it: an embedding for
    classes, a sum of attribute embeddings for CelebA-style attributes."""
    if labels.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8) and labels.dim() == 1:
        return nn.functional.one_hot(labels.long(), num_labels).float()
    return labels.float().view(labels.shape[0], num_labels)


class LabelEmbedding(nn.Module):
    def __init__(self, num_labels: int, dim: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.proj = nn.Linear(num_labels, dim, bias=False)
        nn.init.normal_(self.proj.weight, 0.0, 1.0 / dim**0.5)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.proj(label_vector(labels, self.num_labels))


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm whose scale and shift depend on the label (de Vries et al. 2017; used by SNGAN/BigGAN):
    gamma = 1 + W_g y, beta = W_b y, so a label-free init is plain BatchNorm."""

    def __init__(self, channels: int, num_labels: int) -> None:
        super().__init__()
        self.num_labels = num_labels
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Linear(num_labels, channels, bias=False)
        self.beta = nn.Linear(num_labels, channels, bias=False)
        nn.init.zeros_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = label_vector(labels, self.num_labels)
        g = 1.0 + self.gamma(y)
        b = self.beta(y)
        return self.bn(x) * g[:, :, None, None] + b[:, :, None, None]


class Norm2d(nn.Module):
    """BatchNorm2d, or its conditional variant when the model is conditional: one call signature."""

    def __init__(self, channels: int, num_labels: int | None) -> None:
        super().__init__()
        self.norm = ConditionalBatchNorm2d(channels, num_labels) if num_labels else nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if isinstance(self.norm, ConditionalBatchNorm2d):
            if labels is None:
                raise ValueError("this generator is conditional: pass labels")
            return self.norm(x, labels)
        return self.norm(x)


class Projection(nn.Module):
    """Projection discriminator term (Miyato & Koyama 2018): <embed(y), h> added to the logit."""

    def __init__(self, num_labels: int, features: int, sn: bool = False) -> None:
        super().__init__()
        self.embed = LabelEmbedding(num_labels, features)
        if sn:
            self.embed.proj = spectral_norm(self.embed.proj)

    def forward(self, h: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("this discriminator is conditional: pass labels")
        return (self.embed(labels) * h).sum(dim=1)


def head_logits(
    head: nn.Module, projection: Projection | None, h: torch.Tensor, labels: torch.Tensor | None
) -> torch.Tensor:
    """D's output (N,): the unconditional head on features h, plus the projection term when conditional."""
    out = head(h).view(-1)
    return out if projection is None else out + projection(h, labels)


def maybe_sn(module: nn.Module, enabled: bool) -> nn.Module:
    return spectral_norm(module) if enabled else module
