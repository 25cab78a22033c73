"""Drawing images from a generator by seed: the one rule every command, metric and export follows.

A seed names a latent (`seeded_generator(seed, 0)`), so the same seed gives the same image in `ganforge sample`,
evaluation, the web playground and exported models. It lives with the models (not in generate.py) because
metrics sample generators too, and metrics sit below the run-folder layer.
"""

from __future__ import annotations

import torch

from ganforge.data.pipeline import seeded_generator
from ganforge.errors import UserError
from ganforge.models.registry import MODELS


def style_models() -> list[str]:
    """Registered families with a mapping network (truncation, style mixing, w-space walks)."""
    return [name for name in MODELS.names() if MODELS.get(name).styles]


def require_styles(G: torch.nn.Module, what: str) -> None:
    """Truncation and style mixing act on w; a model without a mapping network has none."""
    if not hasattr(G, "mapping") or not hasattr(G, "synthesis"):
        raise UserError(f"{what} needs a style-based model ({', '.join(style_models())}); "
                        f"this run's generator is {type(G).__name__}")


def run_label_kind(cfg: dict) -> str | None:
    """"class" or "attributes" for a conditional run's config, else None."""
    m = cfg["model"]
    return m.get("label_kind") if m.get("conditional") else None


def random_labels(G: torch.nn.Module, n: int, kind: str | None, seed: int) -> torch.Tensor | None:
    """Seeded labels for scoring a conditional generator (None for an unconditional one): classes drawn uniformly,
    attributes as independent fair bits. Evaluation and standing statistics use this one rule."""
    num = int(getattr(G, "num_labels", 0) or 0)
    if not num:
        return None
    gen = seeded_generator(seed, 1)  # stream 1: the latents of the same seed use stream 0
    if kind == "attributes":
        return (torch.rand(n, num, generator=gen) < 0.5).float()
    return torch.randint(0, num, (n,), generator=gen)


@torch.no_grad()
def sample(
    G: torch.nn.Module, n: int, *, seed: int = 0, batch_size: int = 256, labels: torch.Tensor | None = None,
    truncation_psi: float = 1.0,
) -> torch.Tensor:
    """n images in [-1, 1] (NCHW, CPU). The same seed gives the same latents whatever the batch size, so the
    same images (bitwise for conv models; within ~1e-6 for stylegan2 on CPU, whose matmuls round per batch size).
    `truncation_psi` < 1 trades variety for typicality on style-based models (1 = plain sampling)."""
    kwargs = {}
    if truncation_psi != 1.0:
        require_styles(G, "truncation")
        kwargs["truncation_psi"] = float(truncation_psi)
    device = next(G.parameters()).device
    z = torch.randn(n, G.z_dim, generator=seeded_generator(seed, 0))
    out = []
    for i in range(0, n, batch_size):
        zb = z[i : i + batch_size].to(device)
        lb = None if labels is None else labels[i : i + batch_size].to(device)
        # progan/stylegan2 have linear outputs (as in their papers): clamp to the image range here
        out.append(G(zb, lb, **kwargs).float().clamp_(-1.0, 1.0).cpu())
    return torch.cat(out) if out else torch.empty(0)


def seed_latents(G: torch.nn.Module, seeds: list[int]) -> torch.Tensor:
    """One z per seed, the z that `sample(G, 1, seed=s)` uses, so a seed names the same image everywhere."""
    return torch.cat([torch.randn(1, G.z_dim, generator=seeded_generator(s, 0)) for s in seeds])
