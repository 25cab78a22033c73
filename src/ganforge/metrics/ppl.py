"""Perceptual path length (Karras et al. 2019, StyleGAN section 4.2): how much the image changes, perceptually,
per small step along a latent interpolation. Smooth, disentangled latent spaces score low.

PPL = E[ d(G(lerp(t)), G(lerp(t + eps))) / eps^2 ] over latent pairs, with slerp between z directions (space "z",
on the sphere of radius sqrt(z_dim), so generators without a normalising mapping network see typical inputs) or
lerp between mapped w (space "w", style models only), t = 0 ("end", StyleGAN2's default) or t ~ U(0, 1) ("full"),
eps = 1e-4, and the mean taken over the values between the 1st and 99th percentiles, as in the official code.
d is LPIPS-VGG16 when its weights are given, else the squared L2 distance of the run's feature network. Unlike
FID, PPL needs the generator itself, so it is a function of (G, distance) rather than of two feature arrays.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from ganforge.data.pipeline import seeded_generator
from ganforge.errors import UserError

SPACES = ("z", "w")
SAMPLINGS = ("end", "full")
EPS = 1e-4

Distance = Callable[[Tensor, Tensor], Tensor]


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between the directions of a and b (StyleGAN's: the result has unit norm)."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    d = (a * b).sum(dim=-1, keepdim=True)
    p = t * torch.acos(d.clamp(-1.0, 1.0))
    c = b - d * a
    c = c / c.norm(dim=-1, keepdim=True)
    out = a * torch.cos(p) + c * torch.sin(p)
    return out / out.norm(dim=-1, keepdim=True)


def filtered_mean(dist: np.ndarray) -> float:
    """Mean of the values between the 1st (rounded down) and 99th (rounded up) percentiles."""
    lo = np.percentile(dist, 1, method="lower")
    hi = np.percentile(dist, 99, method="higher")
    return float(dist[(dist >= lo) & (dist <= hi)].mean())


def feature_distance(net: torch.nn.Module) -> Distance:
    """Squared L2 distance of a feature network's features (the run's own network)."""

    def d(x0: Tensor, x1: Tensor) -> Tensor:
        return (net(x0)["features"] - net(x1)["features"]).pow(2).sum(dim=1)

    return d


@torch.no_grad()
def path_lengths(
    G: torch.nn.Module, distance: Distance, n: int, *, space: str = "z", sampling: str = "end", eps: float = EPS,
    seed: int = 0, batch_size: int = 64,
) -> np.ndarray:
    """The n per-pair values d(...) / eps^2 (float64), before filtering."""
    if space not in SPACES or sampling not in SAMPLINGS:
        raise UserError(f"PPL space {space!r} / sampling {sampling!r}: choose space z or w, sampling end or full")
    if int(getattr(G, "num_labels", 0) or 0):
        raise UserError("PPL of conditional generators is not supported: the path would also need a label path")
    styled = hasattr(G, "mapping") and hasattr(G, "synthesis")
    if space == "w" and not styled:
        raise UserError(f"PPL in w needs a style-based generator; {type(G).__name__} has no mapping network: use z")
    if n < 1:
        raise UserError(f"PPL needs at least 1 latent pair, got {n}")
    device = next(G.parameters()).device
    gen = seeded_generator(seed, 1)
    out = []
    for i in range(0, n, batch_size):
        b = min(batch_size, n - i)
        z = torch.randn(2 * b, G.z_dim, generator=gen)
        t = torch.rand(b, 1, generator=gen) if sampling == "full" else torch.zeros(b, 1)
        z0, z1 = z[:b].to(device), z[b:].to(device)
        t = t.to(device)
        if space == "z":
            # on the sphere of radius sqrt(z_dim), where N(0, I) latents lie: StyleGAN's mapping normalises z, but a
            # DCGAN fed unit vectors would see inputs 1/sqrt(z_dim) of the size it was trained on
            lat = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + eps)]) * G.z_dim**0.5
            img = G(lat)
        else:
            w0, w1 = G.mapping(z0), G.mapping(z1)
            tt = t.view(-1, *([1] * (w0.dim() - 1)))
            lat = torch.cat([torch.lerp(w0, w1, tt), torch.lerp(w0, w1, tt + eps)])
            # the same per-layer noise for both ends, as G(z) uses in eval mode, else noise alone moves the image
            const = "noise_mode" in inspect.signature(getattr(G.synthesis, "forward", G.synthesis)).parameters
            img = G.synthesis(lat, noise_mode="const") if const else G.synthesis(lat)
        img = img.float().clamp(-1.0, 1.0)
        out.append((distance(img[:b], img[b:]).double() / eps**2).cpu().numpy())
    return np.concatenate(out)


def perceptual_path_length(
    G: torch.nn.Module, distance: Distance, n: int = 10000, *, space: str = "z", sampling: str = "end",
    eps: float = EPS, seed: int = 0, batch_size: int = 64,
) -> float:
    """PPL of generator G: the percentile-filtered mean of `path_lengths`."""
    return filtered_mean(path_lengths(G, distance, n, space=space, sampling=sampling, eps=eps, seed=seed,
                                      batch_size=batch_size))
