"""Datasets as uint8 NHWC arrays: built-in ones by name, or any folder or .zip of images.

    data = load_dataset("fashion-mnist", resolution=32, channels=1)
    data.images  # (60000, 32, 32, 1) uint8, memory-mapped from the decode cache
    data.labels, data.classes

Specs: "fashion-mnist", "mnist", "cifar10" (":train" default, or ":test"), "celeba" (":train",
":valid" (or ":val"), ":test", ":all"), a folder path, a .zip path.
Decoding (crop, antialiased resize, channel conversion) happens once; see cache.py.

    faces = load_dataset("celeba", 64, 3, attributes=["Male", "Smiling"], crop="140")
    faces.labels  # float32 (N, 2) multi-hot; faces.label_kind == "attributes"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ganforge.data.cache import cache_root, load_cached
from ganforge.data.sources import (
    SOURCES,
    DataWarning,
    SkippedFileWarning,
    dataset_names,
    make_source,
    parse_spec,
)
from ganforge.data.sources.base import LabelKind, infer_label_kind
from ganforge.errors import UserError

__all__ = [
    "SOURCES",
    "DataWarning",
    "ImageData",
    "LabelKind",
    "SkippedFileWarning",
    "cache_root",
    "dataset_info",
    "dataset_names",
    "load_dataset",
    "parse_spec",
]

MAX_RESOLUTION = 8192


@dataclass
class ImageData:
    """A decoded dataset. `images` may be a read-only np.memmap: index it, or np.array() it to own a copy.

    `label_kind` tells consumers how to use `labels` without guessing from shapes: "class" (int64 (N,)
    indices into `classes`), "attributes" (float32 (N, K) multi-hot in {0, 1}, `classes` naming the
    K columns, e.g. CelebA) or "none". Left out (None), it is inferred, so older callers keep working.
    """

    images: np.ndarray  # uint8 (N, H, W, C), C in {1, 3}, H = W = resolution
    labels: np.ndarray | None  # int64 (N,) class indices, or float32 (N, K) attributes
    classes: list[str] | None  # class names (index = label) or attribute names (index = column)
    spec: str  # normalized spec, e.g. "fashion-mnist:train"
    label_kind: LabelKind | None = None

    def __post_init__(self) -> None:
        if self.label_kind is None:
            self.label_kind = infer_label_kind(self.labels)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])

    @property
    def channels(self) -> int:
        return int(self.images.shape[3])


def _check(resolution: int, channels: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)):
        raise UserError(f"resolution must be an integer number of pixels, got {resolution!r}")
    if not 4 <= resolution <= MAX_RESOLUTION:
        raise UserError(f"resolution must be between 4 and {MAX_RESOLUTION} pixels, got {resolution}")
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")


def load_dataset(
    spec: str,
    resolution: int,
    channels: int,
    data_dir: str | None = None,
    strict: bool = False,
    cache: bool = True,
    **options: Any,
) -> ImageData:
    """Load `spec` as square `resolution` images with `channels` channels.

    IDX data at 28 px, 1 channel (and CIFAR-10 at 32 px, 3 channels) is the original bytes; other
    sizes go through an antialiased bicubic resize. With `cache`, the first call decodes into the
    cache and later calls memory-map it. `strict` turns unreadable files (skipped with a warning
    otherwise) into a UserError. `options` are one source's own keywords (an error for any other source;
    None = not set), e.g. CelebA's `attributes` (pick and order attribute columns) and `crop` ("178",
    "140" or "108"); see each source's `options`.
    """
    _check(resolution, channels)
    source = make_source(spec, data_dir, **options)
    if cache:
        images, labels, classes, meta = load_cached(source, int(resolution), channels, strict)
        kind = meta.get("label_kind")
    else:
        raw = source.load(int(resolution), channels, strict)
        images, labels, classes, kind = raw.images, raw.labels, raw.classes, raw.label_kind
    return ImageData(images, labels, classes, source.spec, kind)


def dataset_info(
    spec: str,
    data_dir: str | None = None,
    strict: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Count, native shape (H, W, C) or None if sizes differ, classes, class counts and the uint8 value
    range of `spec`, read from the files themselves (not the cache), for `ganforge data info`.
    CelebA reports counts per split and each attribute's positive rate instead of class counts."""
    return make_source(spec, data_dir, **options).info(strict)
