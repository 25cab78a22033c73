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
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganforge.errors import UserError
from ganforge.metrics.features import FeatureExtractor, build_extractor, prepare
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
            d = (_unit(a) - _unit(b)).square()
            if lin is not None:
                d = d * lin[i].view(1, -1, 1, 1).to(d)
            total = total + d.sum(dim=1).mean(dim=(1, 2))
        return total


def _unit(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Each position's channel vector scaled to unit length (LPIPS's normalize_tensor)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


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


# --- LPIPS-VGG16 in the official PerceptualSimilarity layout ----------------------------------------------------

VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def _vgg16_features() -> list[nn.Module]:
    layers: list[nn.Module] = []
    c = 3
    for v in VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            c = int(v)
    return layers


class _Lin(nn.Module):
    """LPIPS's NetLinLayer: Dropout then a 1x1 convolution to one channel, without bias (`model.1.weight`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class _Slices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = _vgg16_features()
        for k, (lo, hi) in enumerate(VGG_SLICES):
            s = nn.Sequential()
            for i in range(lo, hi):
                s.add_module(str(i), layers[i])
            setattr(self, f"slice{k + 1}", s)


class LPIPSVGG16(FeatureDistance):
    """LPIPS (Zhang et al. 2018) with the VGG16 backbone; the module tree mirrors `lpips.LPIPS(net="vgg")`, so its
    state dict (`scaling_layer.shift`, `net.slice1.0.weight`, ..., `lin0.model.1.weight`) loads unchanged."""

    name = "lpips-vgg16"
    max_size = 256  # as the stylegan2-ada projector: larger images are area-downsampled to 256 first

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.net = _Slices()
        for k, c in enumerate(LPIPS_CHANNELS):
            setattr(self, f"lin{k}", _Lin(c))

    def features(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] > self.max_size:
            x = F.adaptive_avg_pool2d(x, (self.max_size, self.max_size))
        x = (x - self.scaling_layer.shift) / self.scaling_layer.scale
        out = []
        for k in range(len(VGG_SLICES)):
            x = getattr(self.net, f"slice{k + 1}")(x)
            out.append(x)
        return out

    def channel_weights(self) -> list[Tensor]:
        return [getattr(self, f"lin{k}").model[1].weight.view(-1) for k in range(len(VGG_SLICES))]


def read_state_dict(path: str | os.PathLike[str], what: str) -> dict[str, Tensor]:
    """A state dict of tensors from a .pth/.pt (weights-only torch.load) or .safetensors file; one-line errors."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what} weights {p} do not exist; pass the path of the weights file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # damaged, truncated, pickled objects: several exception types
        raise UserError(
            f"{what} weights {p} are not a readable weights file ({' '.join(str(e).split())[:160]})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{what} weights {p} do not hold a state dict of tensors")
    return state


def load_lpips_vgg16(weights: str | os.PathLike[str] | None) -> LPIPSVGG16:
    """LPIPS-VGG16 from the user's file: `torch.save(lpips.LPIPS(net="vgg").state_dict(), FILE)` (newer lpips also
    lists the lin layers under `lins.N`, the same tensors: accepted). No file, no network: the weights are not
    bundled with ganforge (VGG16's are ImageNet-trained, LPIPS's lin layers BSD-licensed: fetch them yourself)."""
    if weights is None:
        raise UserError("--network lpips-vgg16 needs its weights: --network-weights FILE, a state dict saved from "
                        "lpips.LPIPS(net='vgg') (pip install lpips)")
    state = {k.removeprefix("module."): v for k, v in read_state_dict(weights, "LPIPS").items()}
    state = {k: v for k, v in state.items() if not k.startswith("lins.")}
    model = LPIPSVGG16()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = " ".join((lines[1] if len(lines) > 1 else lines[0]).split())[:160] if lines else ""
        raise UserError(f"LPIPS weights {weights} are not lpips.LPIPS(net='vgg')'s state dict ({detail})") from None
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
