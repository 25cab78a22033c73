"""Projection losses: pixel error plus a perceptual distance in a feature network, a small registry of networks.

Pixel MSE alone makes projection chase the average of plausible images (blurry, off-manifold answers score well);
a distance between deep features rewards the right shapes and textures (Zhang et al. 2018, LPIPS; the stylegan2-ada
projector uses LPIPS alone). Every network here is read the LPIPS way: per layer, unit-normalise each position's
channel vector, square the difference, weight channels (LPIPS's learned 1x1 "lin" layers, or equally), average over
positions and sum over layers. Networks: the run's domain CNN (Fashion-MNIST/MNIST, shipped weights), LPIPS-VGG16
(the official PerceptualSimilarity state dict, weights file given by the user), FID Inception (pool features).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import UserError
from ganforge.metrics.features import FeatureExtractor, build_extractor, prepare
from ganforge.metrics.lpips import LPIPS, load_lpips, unit
from ganforge.models.inference import inference_copy
from ganforge.registry import Registry

NO_NETWORK = "none"


class FeatureDistance(nn.Module):
    """Images (N, C, H, W) in [-1, 1] -> a list of feature maps (N, C_l, H_l, W_l) or vectors (N, D_l), and the
    LPIPS-style distance between two such lists."""

    name = "feature-distance"

    def channel_weights(self) -> list[Tensor] | None:
        """Per-layer channel weights (LPIPS's learned lin layers); None: every channel counts 1."""
        return None

    def features(self, x: Tensor) -> list[Tensor]:
        raise NotImplementedError

    def distance(self, fx: list[Tensor], fy: list[Tensor]) -> Tensor:
        lin = self.channel_weights()
        total = torch.zeros(fx[0].shape[0], device=fx[0].device)
        for i, (a, b) in enumerate(zip(fx, fy, strict=True)):
            a, b = (t if t.dim() == 4 else t[:, :, None, None] for t in (a, b))
            d = (unit(a) - unit(b)).square()
            if lin is not None:
                d = d * lin[i].view(1, -1, 1, 1).to(d)
            total = total + d.sum(dim=1).mean(dim=(1, 2))
        return total


class ExtractorDistance(FeatureDistance):
    """A registered ganforge feature network (metrics/features.py), tapped after every ReLU of its convolutional
    body (the domain CNN) plus its final features; networks without a body give their features only."""

    def __init__(self, net: FeatureExtractor) -> None:
        super().__init__()
        self.net = inference_copy(net)  # BatchNorm folded, channels-last: the same features, faster
        self.name = net.name

    def features(self, x: Tensor) -> list[Tensor]:
        x = prepare(x, self.net)
        body = getattr(self.net, "body", None)
        if body is None:
            return [self.net.embed(x)["features"]]
        taps = []
        for layer in body:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                taps.append(x)
        taps.append(torch.relu(self.net.fc(x)))  # the network's own "features" (DomainCNN.embed)
        return taps


# --- LPIPS-VGG16 (metrics/lpips.py: one network and its loaders, shared with PPL) --------------------------------


class LPIPSVGG16(LPIPS, FeatureDistance):
    """LPIPS-VGG16 as a projection distance: its five VGG16 taps and learned channel weights; the module tree is
    `lpips.LPIPS(net="vgg")`'s, so the official state dict loads unchanged."""

    name = "lpips-vgg16"
    max_size = 256  # as the stylegan2-ada projector: larger images are area-downsampled to 256 first

    def features(self, x: Tensor) -> list[Tensor]:
        if x.shape[-1] > self.max_size:
            x = F.adaptive_avg_pool2d(x, (self.max_size, self.max_size))
        return self.taps(x)


def load_lpips_vgg16(weights: str | os.PathLike[str] | None) -> LPIPSVGG16:
    """LPIPS-VGG16 from the user's weights (metrics/lpips.load_lpips: one lpips state-dict file, or a folder with
    torchvision's VGG16 and lpips' heads). No file, no network: the weights are not bundled with ganforge."""
    if weights is None:
        raise UserError("--network lpips-vgg16 needs its weights: --network-weights FILE, a state dict saved from "
                        "lpips.LPIPS(net='vgg') (pip install lpips), or a folder with vgg16-397923af.pth and vgg.pth")
    model = LPIPSVGG16()
    model.load_state_dict(load_lpips(weights).state_dict())
    return model


# --- the registry ------------------------------------------------------------------------------------------------

DistanceFactory = Callable[[str | None], FeatureDistance]
NETWORKS: Registry[DistanceFactory] = Registry("projection network")


def _extractor(name: str) -> DistanceFactory:
    def build(weights: str | None) -> FeatureDistance:
        return ExtractorDistance(build_extractor(name, **({} if weights is None else {"weights": weights})))

    return build


for _name in ("fashion-mnist-cnn", "mnist-cnn", "inception-fid"):
    NETWORKS.register(_name)(_extractor(_name))
NETWORKS.register("lpips-vgg16")(load_lpips_vgg16)


def build_network(name: str, weights: str | None = None) -> FeatureDistance | None:
    """The named distance network in eval mode with frozen weights; `none`: pixel loss only."""
    if name == NO_NETWORK:
        if weights is not None:
            raise UserError("--network-weights needs a --network other than none")
        return None
    net = NETWORKS.get(name)(weights)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval()


def default_network_name(cfg: dict) -> str:
    """The run's domain CNN for Fashion-MNIST/MNIST runs (what ganforge judges those runs with), else none: LPIPS
    and Inception need weights files that ganforge does not bundle."""
    from ganforge.metrics.domain import DOMAIN_DATASETS
    from ganforge.metrics.evaluate import default_network

    name = default_network(cfg["data"]["source"])
    return name if name in DOMAIN_DATASETS else NO_NETWORK


@dataclass
class ProjectionLoss:
    """total = pixel_weight * MSE + feature_weight * distance(network), per image. `network` None: pixels only."""

    network: FeatureDistance | None = None
    pixel_weight: float = 1.0
    feature_weight: float = 0.1

    def target_features(self, targets: Tensor) -> list[Tensor] | None:
        """The targets' features, computed once per projection."""
        if self.network is None:
            return None
        with torch.no_grad():
            return [f.detach() for f in self.network.features(targets)]

    def __call__(self, images: Tensor, targets: Tensor, target_feats: list[Tensor] | None) -> dict[str, Tensor]:
        """{"pixel", "feature", "total"}: (N,) each, for images against their targets."""
        pixel = (images - targets).square().flatten(1).mean(dim=1)
        if self.network is None or target_feats is None:
            feature = torch.zeros_like(pixel)
        else:
            feature = self.network.distance(self.network.features(images), target_feats)
        return {"pixel": pixel, "feature": feature, "total": self.pixel_weight * pixel + self.feature_weight * feature}

    def to(self, device: torch.device | str) -> ProjectionLoss:
        if self.network is not None:
            self.network.to(device)
        return self
