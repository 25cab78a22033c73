"""The protocol every data source follows, and the registry that maps spec names to sources.

A source streams decoded, already resized uint8 NHWC batches into a sink: the cache's sink writes
them straight into a .npy on disk, so a folder far larger than RAM can still be decoded once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import torch

from ganforge.data import transforms as T
from ganforge.registry import Registry


class DataWarning(UserWarning):
    """Something about the data looks wrong but loading can go on (strict=True turns it into an error)."""


class SkippedFileWarning(DataWarning):
    """A file that is not a readable image was left out (strict=False)."""


@dataclass
class RawData:
    """Decoded images of one size. `images` is always a uint8 (N, H, W, C) array here: sources that
    read many files (folders, zips) decode lazily into a sink instead of holding undecoded files."""

    images: np.ndarray
    labels: np.ndarray | None  # int64 (N,)
    classes: list[str] | None  # class names, index = label
    skipped: list[str] = field(default_factory=list)  # "name: reason" of each file left out


@dataclass
class Decoded:
    """What `Source.decode_into` reports besides the images it appended to the sink."""

    labels: np.ndarray | None
    classes: list[str] | None
    skipped: list[str] = field(default_factory=list)
    total: int = 0  # candidate files (or records) looked at, skipped ones included


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
    spec: str  # normalized spec, e.g. "fashion-mnist:train" or the folder path as given

    @classmethod
    @abstractmethod
    def from_spec(cls, path: str | None, split: str | None, data_dir: str | None) -> Source:
        """Build from the parts of `parse_spec` plus the user's --data-dir."""

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

    def load(self, resolution: int, channels: int, strict: bool = False) -> RawData:
        """Decode everything into memory (no cache)."""
        sink = ArraySink()
        d = self.decode_into(sink, resolution, channels, strict)
        return RawData(sink.array(resolution, channels), d.labels, d.classes, d.skipped)


SOURCES: Registry[type[Source]] = Registry("data source")
