"""Model registry: a family name -> (generator factory, discriminator factory).

Adding a model is one file that ends with `MODELS.register("name")(ModelFamily(G factory, D factory,
resolutions))` and one import line in `models/__init__.py`. Factories take the resolved config and return `nn.Module`s with the contract
`G(z, labels=None) -> images` (in [-1, 1] via tanh, or linear for progan/stylegan2 as in their papers;
sampling clamps) and `D(x, labels=None) -> logits of shape (N,)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ganforge.errors import UserError
from ganforge.registry import Registry


@dataclass(frozen=True)
class ModelFamily:
    generator: Callable[[dict[str, Any]], nn.Module]
    discriminator: Callable[[dict[str, Any]], nn.Module]
    resolutions: tuple[int, ...]
    description: str = ""
    styles: bool = False  # has a mapping network: truncation and style mixing apply


MODELS: Registry[ModelFamily] = Registry("model")


def num_labels(cfg: dict[str, Any]) -> int | None:
    """Size of the label vector of a conditional model (classes or attributes), None if unconditional."""
    m = cfg["model"]
    if not m.get("conditional"):
        return None
    if not m.get("num_labels"):
        raise UserError("model.conditional=true needs a labelled data source (class folders, a dataset with classes)")
    return int(m["num_labels"])


def _family(cfg: dict[str, Any]) -> ModelFamily:
    fam = MODELS.get(cfg["model"]["name"])
    res = cfg["data"]["resolution"]
    if res not in fam.resolutions:
        raise UserError(
            f"model {cfg['model']['name']!r} does not support data.resolution={res}; "
            f"use one of {', '.join(map(str, fam.resolutions))}"
        )
    return fam


def build_generator(cfg: dict[str, Any]) -> nn.Module:
    return _family(cfg).generator(cfg)


def build_discriminator(cfg: dict[str, Any]) -> nn.Module:
    return _family(cfg).discriminator(cfg)
