"""Batch-wise image transforms in pure torch (NCHW), so decoding, training and sampling agree bit for bit.

Resizing lives here rather than in Pillow so that a folder of JPEGs and an IDX file go through the
same antialiased filter, on any device. uint8 in gives uint8 out (rounded and clamped), float in
gives float out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights: what Pillow's convert("L") and most datasets use for gray images.
LUMA_601 = (0.299, 0.587, 0.114)


def _as_batch(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"expected an NCHW or CHW tensor, got shape {tuple(x.shape)}")
    return x, False


def _back_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Float results back to the input's dtype: round and clamp for uint8 so values stay exact."""
    if like.dtype == torch.uint8:
        return x.round_().clamp_(0, 255).to(torch.uint8)
    return x.to(like.dtype)


def center_crop_square(x: torch.Tensor) -> torch.Tensor:
    """Largest centred square; GAN models expect square images and cropping keeps the aspect ratio."""
    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    return x[..., top : top + s, left : left + s]


def resize(x: torch.Tensor, size: int | tuple[int, int], antialias: bool = True, mode: str = "bicubic") -> torch.Tensor:
    """Resize NCHW (or CHW) to `size` with torch's antialiased filter; a no-op when already that size.

    uint8 is resized in float32 and rounded back, so a constant image stays exactly constant.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    xb, squeezed = _as_batch(x)
    y = xb.float() if not xb.is_floating_point() else xb
    y = F.interpolate(y, size=hw, mode=mode, antialias=antialias, align_corners=False)
    y = _back_to(y, xb)
    return y.squeeze(0) if squeezed else y


def to_channels(x: torch.Tensor, c: int) -> torch.Tensor:
    """RGB -> gray with BT.601 weights, gray -> RGB by repetition; dtype is kept."""
    xb, squeezed = _as_batch(x)
    have = xb.shape[1]
    if have == c:
        y = xb
    elif have == 3 and c == 1:
        w = torch.tensor(LUMA_601, dtype=torch.float32, device=xb.device).view(1, 3, 1, 1)
        y = _back_to((xb.float() * w).sum(dim=1, keepdim=True), xb)
    elif have == 1 and c == 3:
        y = xb.expand(-1, 3, -1, -1).contiguous()
    else:
        raise ValueError(f"cannot convert {have} channels to {c}; only 1 <-> 3 is supported")
    return y.squeeze(0) if squeezed else y


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (x / 127.5 - 1), the range tanh generators produce."""
    return x.float() / 127.5 - 1.0


def from_unit_range(x: torch.Tensor) -> torch.Tensor:
    """Inverse of `to_unit_range`, rounding to nearest and clamping, so uint8 -> float -> uint8 is exact."""
    return ((x.float() + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def random_hflip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each sample with probability 0.5, drawn from `generator` so a seed reproduces the flips."""
    xb, squeezed = _as_batch(x)
    flip = torch.rand(xb.shape[0], generator=generator, device=generator.device) < 0.5
    flip = flip.to(xb.device)[:, None, None, None]
    y = torch.where(flip, xb.flip(-1), xb)
    return y.squeeze(0) if squeezed else y
