"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

color (brightness, saturation, contrast), translation (up to 1/8 of the image, zero padding) and
cutout (a square of half the image side set to zero), each drawn independently per sample and per call,
all differentiable in the image so G's gradient flows through. Random draws come from a generator the
caller passes, which keeps training bit-reproducible and resumable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ganforge.errors import UserError


def _u(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape[0], 1, 1, 1, generator=g, device=g.device).to(x.device, x.dtype)


def brightness(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x + (_u(x, g) - 0.5)


def saturation(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (_u(x, g) * 2) + mean


def contrast(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_u(x, g) + 0.5) + mean


def translation(x: torch.Tensor, g: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by integer (dy, dx) in [-r, r], filling with zeros (the original's pad-and-gather)."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=g, device=g.device).to(x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=g, device=g.device).to(x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    iy = (gy + dy + 1).clamp(0, h + 1).expand(n, h, w)
    ix = (gx + dx + 1).clamp(0, w + 1).expand(n, h, w)
    padded = F.pad(x, [1, 1, 1, 1])
    b = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[b, iy, ix].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, g: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=g, device=g.device).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=g, device=g.device).to(x.device)
    gy = torch.arange(h, device=x.device).view(1, h, 1)
    gx = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (gy >= cy - ch // 2) & (gy < cy - ch // 2 + ch) & (gx >= cx - cw // 2) & (gx < cx - cw // 2 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


class DiffAugment:
    """Callable `aug(x, generator) -> x'` for a comma-separated policy such as 'color,translation,cutout'."""

    def __init__(self, policy: str = "color,translation,cutout") -> None:
        names = [p.strip() for p in policy.split(",") if p.strip()]
        bad = [p for p in names if p not in POLICIES]
        if bad or not names:
            raise UserError(
                f"unknown DiffAugment policy {', '.join(bad) or repr(policy)}; use a comma list of {', '.join(POLICIES)}"
            )
        self.policy = names
        self.ops = [op for name in names for op in POLICIES[name]]

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for op in self.ops:
            x = op(x, generator)
        return x
