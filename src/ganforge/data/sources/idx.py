"""MNIST and Fashion-MNIST from IDX files (LeCun's format: big-endian header, then raw array bytes).

Files are looked for in --data-dir, then in the Debian package's folder, then in ganforge's cache,
where they are downloaded (MD5-checked) if missing. Any copy found on disk is also checked against the
MD5 of the official *uncompressed* content, because repackaged .gz files (Debian's strip the stored
file name) have other .gz checksums yet identical data.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ganforge.data.download import DownloadError, download
from ganforge.data.paths import datasets_dir
from ganforge.data.sources.base import SOURCES, DataWarning, Decoded, Sink, Source, emit_resized, read_bytes
from ganforge.errors import UserError

# IDX type codes -> dtypes (always big-endian on disk)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_FIX = "delete it and download it again"


def read_idx_bytes(path: str | Path) -> bytes:
    """The uncompressed bytes of an IDX file, gzipped or not (detected by content, not by name)."""
    path = Path(path)
    data = read_bytes(path)
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise UserError(f"{path} is a corrupt or truncated gzip file ({e}); {_FIX}") from e
    return data


def parse_idx(data: bytes, name: str) -> np.ndarray:
    """Validate an IDX buffer (magic, type code, dimensions, exact size) and return a native-endian array."""
    if len(data) < 4:
        raise UserError(f"{name} is not an IDX file (only {len(data)} bytes); {_FIX}")
    code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or code not in IDX_DTYPES or ndim == 0:
        magic = int.from_bytes(data[:4], "big")
        raise UserError(
            f"{name} is not an IDX file (magic number 0x{magic:08x}, expected 0x000008NN); "
            f"check that it is the right file or {_FIX}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{name} is truncated inside its header; {_FIX}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = IDX_DTYPES[code]
    count = math.prod(dims)
    expected, got = count * dtype.itemsize, len(data) - header
    if got < expected:
        raise UserError(
            f"{name} is truncated: its header promises shape {dims} ({expected} bytes), found {got}; {_FIX}"
        )
    if got > expected:
        raise UserError(f"{name} has {got - expected} bytes more than its header {dims} describes; {_FIX}")
    arr = np.frombuffer(data, dtype, count=count, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("=")) if dtype.itemsize > 1 else arr


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or .gz); malformed or truncated files raise UserError naming the file."""
    return parse_idx(read_idx_bytes(path), str(path))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write `array` as IDX (gzipped when the name ends in .gz); for tests and for exporting data."""
    path = Path(path)
    arr = np.asarray(array)
    kind = (arr.dtype.kind, arr.dtype.itemsize)
    match = [(c, dt) for c, dt in IDX_DTYPES.items() if (dt.kind, dt.itemsize) == kind]
    if not match or arr.ndim == 0 or arr.ndim > 255:
        raise ValueError(f"IDX cannot store dtype {arr.dtype} with {arr.ndim} dimensions")
    code, big = match[0]
    data = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data += np.ascontiguousarray(arr, dtype=big).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


# ----------------------------------------------------------------------------------------- datasets

FASHION_MNIST_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"

# name -> file -> (md5 of the official .gz, md5 of its uncompressed content). None skips a check.
CHECKSUMS: dict[str, dict[str, tuple[str | None, str | None]]] = {
    "fashion-mnist": {
        "train-images-idx3-ubyte": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        "train-labels-idx1-ubyte": ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
        "t10k-images-idx3-ubyte": ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
        "t10k-labels-idx1-ubyte": ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
    },
    "mnist": {
        "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    },
}

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class IdxDataset:
    name: str
    title: str
    classes: tuple[str, ...]
    mirror: str  # default base URL; the env var below overrides it
    mirror_env: str
    system_dir: str  # where a distribution package installs it
    package_hint: str = ""


FASHION_MNIST = IdxDataset(
    "fashion-mnist",
    "Fashion-MNIST",
    ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    FASHION_MNIST_MIRROR,
    "GANFORGE_FASHION_MNIST_MIRROR",
    "/usr/share/datasets/fashion-mnist",
    " or `apt install dataset-fashion-mnist`",
)
MNIST = IdxDataset(
    "mnist",
    "MNIST",
    tuple(str(i) for i in range(10)),
    MNIST_MIRROR,
    "GANFORGE_MNIST_MIRROR",
    "/usr/share/datasets/mnist",
)


def _candidates(stem: str) -> list[str]:
    """Accepted names for one file, uncompressed first (faster): also the 'train-images.idx3-ubyte' form."""
    dotted = stem.replace("-idx", ".idx")
    return [stem, f"{stem}.gz", dotted, f"{dotted}.gz"]


def find_files(folder: Path, stems: tuple[str, ...]) -> list[Path] | None:
    """Paths of every file in `stems` inside `folder`, or None unless all are there."""
    found = []
    for stem in stems:
        hit = next((folder / n for n in _candidates(stem) if (folder / n).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found


class IdxSource(Source):
    """One split of an IDX dataset; subclasses set `dataset`."""

    named = True
    splits = tuple(SPLIT_FILES)
    dataset: ClassVar[IdxDataset]

    def __init__(self, split: str = "train", data_dir: str | None = None) -> None:
        if split not in SPLIT_FILES:
            name = self.dataset.name
            raise UserError(f"{name} has no split {split!r}; use {name}:train or {name}:test")
        self.split = split
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.spec = f"{self.dataset.name}:{split}"
        self._paths: list[Path] | None = None

    @classmethod
    def from_spec(cls, path: str | None, split: str | None, data_dir: str | None) -> IdxSource:
        return cls(split or "train", data_dir)

    @property
    def slug(self) -> str:
        return f"{self.dataset.name}-{self.split}"

    @property
    def stems(self) -> tuple[str, ...]:
        return SPLIT_FILES[self.split]

    @property
    def download_dir(self) -> Path:
        return datasets_dir() / self.dataset.name

    def search_dirs(self) -> list[Path]:
        dirs = [self.data_dir] if self.data_dir else []
        return [*dirs, Path(self.dataset.system_dir), self.download_dir]

    def paths(self) -> list[Path]:
        """[images, labels] files of this split: found on disk, else downloaded into the cache."""
        if self._paths is None:
            for folder in self.search_dirs():
                found = find_files(folder, self.stems)
                if found:
                    self._paths = found
                    break
                if folder == self.data_dir:  # the user pointed here: say that we look elsewhere
                    warnings.warn(
                        f"{self.dataset.title} ({self.split}) files are not in {folder}; looking in "
                        f"{self.dataset.system_dir} and {self.download_dir}",
                        DataWarning,
                        stacklevel=2,
                    )
            else:
                self._paths = self._download()
        return self._paths

    def _download(self) -> list[Path]:
        ds = self.dataset
        base = os.environ.get(ds.mirror_env) or ds.mirror
        base = base if base.endswith("/") else base + "/"
        out = []
        for stem in self.stems:
            name = f"{stem}.gz"
            try:
                out.append(
                    download(
                        base + name,
                        self.download_dir / name,
                        md5=CHECKSUMS.get(ds.name, {}).get(stem, (None, None))[0],
                        desc=f"{ds.title} {name}",
                    )
                )
            except DownloadError as e:
                wanted = " and ".join(f"{s}.gz" for s in self.stems)
                raise UserError(
                    f"{ds.title} ({self.split}) not found: put {wanted} in {self.data_dir or self.download_dir}"
                    f"{'' if self.data_dir else ' or pass --data-dir DIR'}{ds.package_hint} "
                    f"(download of {e.url} failed: {e.reason})"
                ) from e
        return out

    def cache_identity(self) -> str:
        parts = [f"idx:{self.spec}"]
        for p in self.paths():
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)

    def _read(self, path: Path, stem: str, strict: bool) -> np.ndarray:
        data = read_idx_bytes(path)
        expected = CHECKSUMS.get(self.dataset.name, {}).get(stem, (None, None))[1]
        if expected:
            actual = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if actual != expected:
                msg = (
                    f"{path} is not the official {self.dataset.title} file "
                    f"(md5 of its content {actual}, expected {expected})"
                )
                if strict:
                    raise UserError(f"{msg}; replace it with the official file")
                warnings.warn(f"{msg}; using it anyway", DataWarning, stacklevel=3)
        return parse_idx(data, str(path))

    def read(self, strict: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Native (N, 28, 28) uint8 images and int64 labels, validated against each other."""
        img_path, lbl_path = self.paths()
        images = self._read(img_path, self.stems[0], strict)
        labels = self._read(lbl_path, self.stems[1], strict)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise UserError(f"{img_path} holds {images.dtype} data of shape {images.shape}, not uint8 images")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise UserError(f"{lbl_path} holds {labels.dtype} data of shape {labels.shape}, not uint8 labels")
        if len(images) != len(labels):
            raise UserError(
                f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
                "use files of the same split"
            )
        if len(labels) and int(labels.max()) >= len(self.dataset.classes):
            raise UserError(f"{lbl_path} has label {int(labels.max())}; {self.dataset.title} has 10 classes")
        if len(images) == 0:
            raise UserError(f"{img_path} holds no images; {_FIX}")
        return images, labels.astype(np.int64)

    def decode_into(self, sink: Sink, resolution: int, channels: int, strict: bool) -> Decoded:
        images, labels = self.read(strict)
        emit_resized(images[..., None], sink, resolution, channels)
        return Decoded(labels, list(self.dataset.classes), [], total=len(images))

    def info(self, strict: bool = False) -> dict[str, Any]:
        images, labels = self.read(strict)
        counts = np.bincount(labels, minlength=len(self.dataset.classes))
        return {
            "spec": self.spec,
            "kind": self.dataset.name,
            "count": int(len(images)),
            "shape": (int(images.shape[1]), int(images.shape[2]), 1),
            "classes": list(self.dataset.classes),
            "class_counts": [int(c) for c in counts],
            "value_range": (int(images.min()), int(images.max())),
            "files": [str(p) for p in self.paths()],
            "skipped": 0,
        }


@SOURCES.register("fashion-mnist")
class FashionMnistSource(IdxSource):
    dataset = FASHION_MNIST


@SOURCES.register("mnist")
class MnistSource(IdxSource):
    dataset = MNIST
