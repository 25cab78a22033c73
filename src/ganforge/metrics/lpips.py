"""LPIPS-VGG16 (Zhang et al. 2018), the distance of the perceptual path length in StyleGAN's papers.

Written from scratch (no torchvision, no `lpips` package) with the official layouts, so the official files load
strictly: the VGG16 trunk as torchvision's `vgg16-397923af.pth` (`features.N.weight/bias`) and the learned linear
heads as the `lpips` package's `weights/v0.1/vgg.pth` (`linK.model.1.weight`). Pass the folder holding both files.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ganforge.errors import UserError

VGG_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16
LIN_FILE = "vgg.pth"  # lpips v0.1 linear heads
# VGG16 "D" configuration; LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)
_CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer: inputs in [-1, 1] to ImageNet-normalised ones
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class _Lin(nn.Module):
    """lpips' NetLinLayer layout (Dropout, then a 1x1 conv without bias), so its keys are `model.1.weight`."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))


class LPIPS(nn.Module):
    """d(x0, x1) for NCHW images in [-1, 1] (gray is repeated to RGB): per image, the sum over five VGG16 layers of
    the spatial mean of w_l . (unit-normalised feature difference)^2."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        for k, ch in enumerate(_CHANNELS):
            self.add_module(f"lin{k}", _Lin(ch))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x.float() - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10))
            if i == _TAPS[-1]:
                break
        return out

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        total = torch.zeros(x0.shape[0], device=x0.device)
        for k, (a, b) in enumerate(zip(self._taps(x0), self._taps(x1), strict=True)):
            lin = getattr(self, f"lin{k}").model[1]
            total = total + lin((a - b) ** 2).mean(dim=(1, 2, 3))
        return total


def _load(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise UserError(f"LPIPS weights: {path} is missing; put torchvision's {VGG_FILE} and lpips' {LIN_FILE} "
                        "in that folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or not a weights-only file
        raise UserError(f"LPIPS weights: {path} is not a readable PyTorch state dict ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(state, dict):
        raise UserError(f"LPIPS weights: {path} does not hold a state dict")
    return state


def load_lpips(folder: str | os.PathLike[str]) -> LPIPS:
    """LPIPS-VGG16 from a folder with the two official files; a missing or mismatched tensor is a UserError."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise UserError(f"--lpips-weights {d}: give a folder holding {VGG_FILE} and {LIN_FILE}")
    trunk = {k: v for k, v in _load(d / VGG_FILE).items() if k.startswith("features.")}
    heads = _load(d / LIN_FILE)
    model = LPIPS()
    try:
        model.load_state_dict({**trunk, **heads}, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise UserError(f"--lpips-weights {d}: not the official VGG16/LPIPS layout ({(lines + [''])[1][:160]})") from None
    return model.eval().requires_grad_(False)
