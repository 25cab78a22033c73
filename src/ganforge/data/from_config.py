"""The data of a run, as its config names it: the one bridge between the config's `data` section and
`load_dataset`, and the labels it fills into the config's `model` section."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ganforge.config import OWNERS, data_view, schema
from ganforge.data import ImageData, load_dataset
from ganforge.data.sources.base import infer_label_kind
from ganforge.errors import UserError


def source_options(cfg: dict[str, Any]) -> dict[str, Any]:
    """The data-section keys that data sources declared (config.extend_schema), as load_dataset keywords:
    only those set, so a source never sees another source's option."""
    schema()  # every fragment registered
    names = [dotted.split(".", 1)[1] for dotted in OWNERS if dotted.startswith("data.")]
    return {k: cfg["data"][k] for k in names if cfg["data"].get(k) is not None}


def load_data(cfg: dict[str, Any]) -> ImageData:
    """The training images of a config, with its source's own options (e.g. CelebA's attributes and crop)."""
    d = data_view(cfg)
    data = load_dataset(d.source, d.resolution, d.channels, d.data_dir, strict=d.strict, **source_options(cfg))
    return subset(data, d.limit)


def subset(data: ImageData, limit: int | None) -> ImageData:
    """A fixed random subset of `limit` images (the same for every run and seed, so limited-data runs of
    different models see the same images); the data itself when it has no more than `limit`."""
    if not limit or limit >= len(data.images):
        return data
    idx = np.sort(np.random.default_rng(0).permutation(len(data.images))[:limit])
    out = copy.copy(data)
    out.images = np.asarray(data.images[idx])
    out.labels = None if data.labels is None else np.asarray(data.labels)[idx]
    return out


def resolve_labels(cfg: dict[str, Any], data: ImageData) -> dict[str, Any]:
    """Fill model.num_labels / label_kind / label_names from the data, so config.yaml describes the
    conditional model completely (sampling by class name needs nothing but the run directory)."""
    m = cfg["model"]
    if not m["conditional"]:
        return cfg
    if data.labels is None or not data.classes:
        raise UserError(
            f"model.conditional=true but {cfg['data']['source']!r} has no labels; use a dataset with classes, "
            "class sub-folders, or CelebA attributes (data.attributes=...)"
        )
    kind = getattr(data, "label_kind", None) or infer_label_kind(np.asarray(data.labels))
    m.update(num_labels=len(data.classes), label_kind=kind, label_names=[str(c) for c in data.classes])
    return cfg
