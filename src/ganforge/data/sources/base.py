"""The protocol every data source follows, and the registry that maps spec names to sources.

A source streams decoded, already resized uint8 NHWC batches into a sink: the cache's sink writes
them straight into a .npy on disk, so a folder far larger than RAM can still be decoded once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch

from ganforge.data import transforms as T
from ganforge.errors import UserError
from ganforge.registry import Registry

LabelKind = Literal["class", "attributes", "none"]
"""What `labels` hold: int64 (N,) class indices, float32 (N, K) multi-hot attributes in {0, 1}, or nothing."""


def read_bytes(path: Path, missing_hint: str = "") -> bytes:
    """A data file's bytes; a missing or unreadable file is a one-line UserError naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist" + (f"; {missing_hint}" if missing_hint else "")) from None
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from e


def infer_label_kind(labels: np.ndarray | None) -> LabelKind:
    """The kind of labels an array holds, for data that did not say (caches written before label kinds)."""
    if labels is None:
        return "none"
    return "attributes" if np.ndim(labels) == 2 else "class"


class DataWarning(UserWarning):
    """Something about the data looks wrong but loading can go on (strict=True turns it into an error)."""


class SkippedFileWarning(DataWarning):
    """A file that is not a readable image was left out (strict=False)."""


@dataclass
class RawData:
    """Decoded images of one size. `images` is always a uint8 (N, H, W, C) array here: sources that
    read many files (folders, zips) decode lazily into a sink instead of holding undecoded files."""

    images: np.ndarray
    labels: np.ndarray | None  # int64 (N,) class indices, or float32 (N, K) attributes (see label_kind)
    classes: list[str] | None  # class names (index = label) or attribute names (index = column)
    skipped: list[str] = field(default_factory=list)  # "name: reason" of each file left out
    label_kind: LabelKind | None = None  # None: inferred from `labels`


@dataclass
class Decoded:
    """What `Source.decode_into` reports besides the images it appended to the sink."""

    labels: np.ndarray | None
    classes: list[str] | None
    skipped: list[str] = field(default_factory=list)
    total: int = 0  # candidate files (or records) looked at, skipped ones included
    label_kind: LabelKind | None = None  # None: inferred from `labels`


class Sink(Protocol):
    def append(self, batch: np.ndarray) -> None:
        """Take a uint8 (B, H, W, C) batch; batches arrive in dataset order."""


class ArraySink:
    """Collects batches in memory (the cache=False path)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def append(self, batch: np.ndarray) -> None:
        self.chunks.append(np.ascontiguousarray(batch, dtype=np.uint8))

    def array(self, resolution: int, channels: int) -> np.ndarray:
        if not self.chunks:
            return np.zeros((0, resolution, resolution, channels), np.uint8)
        if len(self.chunks) == 1:  # a view of a read-only buffer (np.frombuffer) gets copied once
            only = self.chunks[0]
            return only if only.flags.writeable else only.copy()
        return np.concatenate(self.chunks)


def prepare(x: torch.Tensor, resolution: int, channels: int) -> np.ndarray:
    """uint8 NCHW of any size -> uint8 NHWC, square `resolution`, `channels`: the path every source uses."""
    if x.shape[1] > channels:  # drop colour before resizing, add it after: fewer pixels to filter
        x = T.to_channels(x, channels)
    x = T.resize(T.center_crop_square(x), resolution)
    x = T.to_channels(x, channels)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def emit_resized(images: np.ndarray, sink: Sink, resolution: int, channels: int, chunk: int = 2048) -> None:
    """Feed a native uint8 NHWC array through `prepare` in chunks (bounded memory at any resolution);
    an array that already has the wanted shape is passed through byte for byte."""
    n, h, w, c = images.shape
    if h == w == resolution and c == channels:
        sink.append(images)
        return
    for i in range(0, n, chunk):
        # np.array copies: the input may be read-only (np.frombuffer, memmap) and torch wants writable memory
        x = torch.from_numpy(np.array(images[i : i + chunk])).permute(0, 3, 1, 2)
        sink.append(prepare(x, resolution, channels))


class Source(ABC):
    """One dataset on disk. Subclasses register with `@SOURCES.register(kind)`."""

    named: ClassVar[bool] = False  # True: chosen by name ("mnist"); False: chosen by a path
    splits: ClassVar[tuple[str, ...]] = ()  # of a named source, default first: listed in spec errors
    # keyword options of load_dataset that from_spec accepts (e.g. "attributes"); others are refused
    options: ClassVar[tuple[str, ...]] = ()
    spec: str  # normalized spec, e.g. "fashion-mnist:train" or the folder path as given
    _definition_order: ClassVar[list[type[Source]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Registration follows definition, so this is the order datasets were added in: error messages
        # list them that way, keeping the long-standing ones first (the registry itself sorts by name).
        super().__init_subclass__(**kwargs)
        Source._definition_order.append(cls)

    @classmethod
    @abstractmethod
    def from_spec(cls, path: str | None, split: str | None, data_dir: str | None) -> Source:
        """Build from the parts of `parse_spec` plus the user's --data-dir (and, for sources that list
        them in `options`, those keyword options: only the ones the user set are passed)."""

    @property
    @abstractmethod
    def slug(self) -> str:
        """A short, filesystem-safe name for cache folders, so people can tell them apart."""

    @abstractmethod
    def cache_identity(self) -> str:
        """A string that changes whenever the decoded data would (files, sizes, mtimes, options)."""

    @abstractmethod
    def decode_into(self, sink: Sink, resolution: int, channels: int, strict: bool) -> Decoded:
        """Append every image, in a deterministic order, resized to `resolution` x `resolution`."""

    @abstractmethod
    def info(self, strict: bool = False) -> dict[str, Any]:
        """Facts about the native data: count, shape, classes, value range (for `ganforge data info`)."""

    def select_labels(
        self, labels: np.ndarray | None, classes: list[str] | None
    ) -> tuple[np.ndarray | None, list[str] | None]:
        """Labels as the user asked for them, from the labels `decode_into` gave (cached or fresh).

        Choices that do not change the images (which attribute columns, say) are applied here, after
        the cache, so that they never force a second decode of the same images.
        """
        return labels, classes

    def load(self, resolution: int, channels: int, strict: bool = False) -> RawData:
        """Decode everything into memory (no cache)."""
        sink = ArraySink()
        d = self.decode_into(sink, resolution, channels, strict)
        kind = d.label_kind or infer_label_kind(d.labels)
        labels, classes = self.select_labels(d.labels, d.classes)
        return RawData(sink.array(resolution, channels), labels, classes, d.skipped, kind)


SOURCES: Registry[type[Source]] = Registry("data source")
