"""LPIPS-VGG16 (Zhang et al. 2018): the distance of StyleGAN's perceptual path length and of its projector.

Written from scratch (no torchvision, no `lpips` package) as the module tree of `lpips.LPIPS(net="vgg")`
(`scaling_layer.*`, `net.slice1..5.*`, `lin0..4.model.1.weight`), so the official files load strictly, from either
form users have: one state-dict file saved from `lpips.LPIPS(net="vgg")`, or a folder with torchvision's VGG16
`vgg16-397923af.pth` (`features.N.*`) and the lpips package's linear heads `weights/v0.1/vgg.pth`. One class, two
loaders: PPL (metrics/ppl.py) and projection (latent/perceptual.py) use the same network.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ganforge.errors import UserError

VGG_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16
LIN_FILE = "vgg.pth"  # lpips v0.1 linear heads
# VGG16 "D" configuration; LPIPS's five slices end at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
CHANNELS = (64, 128, 256, 512, 512)
# lpips' ScalingLayer: inputs in [-1, 1] to ImageNet-normalised ones
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


class _Lin(nn.Module):
    """lpips' NetLinLayer layout (Dropout, then a 1x1 conv without bias), so its keys are `model.1.weight`."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False))


class _Slices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        for k, (lo, hi) in enumerate(VGG_SLICES):
            s = nn.Sequential()
            for i in range(lo, hi):
                s.add_module(str(i), layers[i])
            setattr(self, f"slice{k + 1}", s)


def unit(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Each position's channel vector scaled to unit length (lpips' normalize_tensor)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """d(x0, x1) for NCHW images in [-1, 1] (gray is repeated to RGB): per image, the sum over five VGG16 layers of
    the spatial mean of w_l . (unit-normalised feature difference)^2."""

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = nn.Module()
        self.scaling_layer.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.scaling_layer.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.net = _Slices()
        for k, c in enumerate(CHANNELS):
            setattr(self, f"lin{k}", _Lin(c))

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five VGG16 feature maps LPIPS compares (not yet normalised)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x.float() - self.scaling_layer.shift) / self.scaling_layer.scale
        out = []
        for k in range(len(VGG_SLICES)):
            x = getattr(self.net, f"slice{k + 1}")(x)
            out.append(x)
        return out

    def channel_weights(self) -> list[Tensor]:
        return [getattr(self, f"lin{k}").model[1].weight.view(-1) for k in range(len(VGG_SLICES))]

    def forward(self, x0: Tensor, x1: Tensor) -> Tensor:
        total = torch.zeros(x0.shape[0], device=x0.device)
        for a, b, w in zip(self.taps(x0), self.taps(x1), self.channel_weights(), strict=True):
            total = total + ((unit(a) - unit(b)).square() * w.view(1, -1, 1, 1)).sum(dim=1).mean(dim=(1, 2))
        return total


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
        raise UserError(f"{what} weights {p} are not a readable weights file ({' '.join(str(e).split())[:160]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"{what} weights {p} do not hold a state dict of tensors")
    return state


def _folder_state(d: Path) -> dict[str, Tensor]:
    """torchvision's VGG16 file (`features.N.*`) + lpips' heads, renamed into the LPIPS tree."""
    for name in (VGG_FILE, LIN_FILE):
        if not (d / name).is_file():
            raise UserError(f"LPIPS weights: {d / name} is missing; put torchvision's {VGG_FILE} and lpips' "
                            f"{LIN_FILE} in that folder")
    slice_of = {i: k + 1 for k, (lo, hi) in enumerate(VGG_SLICES) for i in range(lo, hi)}
    state: dict[str, Tensor] = {"scaling_layer.shift": torch.tensor(SHIFT).view(1, 3, 1, 1),
                                "scaling_layer.scale": torch.tensor(SCALE).view(1, 3, 1, 1)}
    for k, v in read_state_dict(d / VGG_FILE, "VGG16").items():
        parts = k.split(".")
        if parts[0] == "features" and int(parts[1]) in slice_of:  # the classifier and the last pool are not used
            state[f"net.slice{slice_of[int(parts[1])]}.{parts[1]}.{parts[2]}"] = v
    return {**state, **read_state_dict(d / LIN_FILE, "LPIPS")}


def load_lpips(path: str | os.PathLike[str]) -> LPIPS:
    """LPIPS-VGG16 from `torch.save(lpips.LPIPS(net="vgg").state_dict(), FILE)` (newer lpips also lists the heads
    under `lins.N`, the same tensors: accepted) or from a folder with the two official files; a missing or
    mismatched tensor is a one-line UserError. The weights are not bundled with ganforge (VGG16's are
    ImageNet-trained, LPIPS's heads BSD-licensed: fetch them yourself)."""
    p = Path(path).expanduser()
    if p.is_dir():
        state = _folder_state(p)
    else:
        state = {k.removeprefix("module."): v for k, v in read_state_dict(p, "LPIPS").items()}
        state = {k: v for k, v in state.items() if not k.startswith("lins.")}
    model = LPIPS()
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = " ".join((lines[1] if len(lines) > 1 else lines[0]).split())[:160] if lines else ""
        raise UserError(f"LPIPS weights {p} are not lpips.LPIPS(net='vgg')'s state dict nor the official "
                        f"VGG16/LPIPS files ({detail})") from None
    return model.eval().requires_grad_(False)
