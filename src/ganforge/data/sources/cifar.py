"""CIFAR-10 from the official python archive (cifar-10-python.tar.gz), read without trusting its pickles.

The archive holds cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: Python 2 pickles
of dicts whose b"data" is a (10000, 3072) uint8 array, each row the 32x32 R plane, then G, then B
(row-major), and whose b"labels" are ints in 0..9; batches.meta names the classes.

A pickle can run any code when loaded, and these files come from the network or from whoever handed
them over, so they are read with an unpickler that only rebuilds the few types they contain (dicts,
lists, bytes, ints and numpy uint8 arrays) and refuses everything else, naming the file.

Files are looked for in --data-dir (the extracted folder, its parent, or a folder holding the
archive), then in <cache>/datasets/cifar10/, where the archive is downloaded (MD5-checked, resumable)
and extracted safely (see data/archive.py) if missing.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ganforge.data.archive import extract_tar
from ganforge.data.download import DownloadError, download, file_hash
from ganforge.data.paths import datasets_dir
from ganforge.data.sources.base import SOURCES, DataWarning, Decoded, Sink, Source, emit_resized, read_bytes
from ganforge.errors import UserError

try:  # numpy >= 2 moved the pickling helpers to numpy._core (numpy.core still works but warns)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_URL_ENV = "GANFORGE_CIFAR10_URL"  # a full .tar.gz URL, or a base URL (mirror folder) to append the name to
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
META = "batches.meta"
SPLIT_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
SIDE = 32
ROW_BYTES = 3 * SIDE * SIDE
_FIX = f"delete it and extract {ARCHIVE} again (or delete the archive too to download it again)"


def _one_line(x: object) -> str:
    return " ".join(str(x).split()) or type(x).__name__


# ----------------------------------------------------------------------------- restricted unpickling


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 pickles bytes with protocol 2 as `_codecs.encode(text, "latin1")`: a re-pickled copy of
    the batches needs this call, and only with that codec."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode called with {type(text).__name__}, {encoding!r}")
    return text.encode("latin1")


# (module, name) -> the object a CIFAR batch pickle may refer to. The official files (Python 2 cPickle)
# rebuild their numpy array with numpy.core.multiarray._reconstruct, numpy.ndarray and numpy.dtype;
# numpy 2 writes numpy._core.multiarray instead. Nothing else is ever needed: dicts, lists, ints and
# byte strings are native pickle opcodes that involve no lookup.
SAFE_GLOBALS: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Loads data-only pickles: every global a pickle names must be in SAFE_GLOBALS, or loading stops
    before anything is called. Python 2 strings come back as bytes (encoding="bytes"), as the files'
    authors intended; their arrays' raw data stays bytes as numpy expects."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.name} is not a CIFAR-10 data file: its pickle asks for {module}.{name}, which the "
                "official files never contain; refusing to load it (delete it and download the official archive)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UserError(f"{self.name} is not a CIFAR-10 data file (it uses persistent ids); delete it")


def load_pickle(path: str | Path) -> Any:
    """Unpickle a CIFAR file with RestrictedUnpickler; any failure is a one-line UserError naming it."""
    path = Path(path)
    data = read_bytes(path, _FIX)
    try:
        return RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UserError:
        raise
    except MemoryError:
        raise
    except Exception as e:  # corrupt pickles raise many types (UnpicklingError, EOFError, ValueError, ...)
        raise UserError(f"{path} is not a readable CIFAR-10 pickle ({_one_line(e)}); {_FIX}") from e


def _field(d: dict[Any, Any], key: str) -> Any:
    """d[b"key"] as in the official (Python 2) files, or d["key"] in a copy re-pickled by Python 3."""
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def read_meta(path: Path) -> list[str]:
    """Class names from batches.meta (b"label_names")."""
    meta = load_pickle(path)
    names = _field(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise UserError(f"{path} has no list of class names (label_names); {_FIX}")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (N, 32, 32, 3) uint8 NHWC view and int64 (N,) labels, validated."""
    batch = load_pickle(path)
    if not isinstance(batch, dict):
        raise UserError(f"{path} holds a {type(batch).__name__}, not a CIFAR-10 batch (a dict); {_FIX}")
    data = _field(batch, "data")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != ROW_BYTES:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path} is malformed: its data is {got}, expected uint8 (N, {ROW_BYTES}); {_FIX}")
    raw_labels = _field(batch, "labels")
    try:
        labels = np.asarray(raw_labels)
    except (TypeError, ValueError):
        labels = np.zeros((0,))
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise UserError(
            f"{path} is malformed: it has {len(data)} images but its labels are "
            f"{labels.dtype} {labels.shape}, expected {len(data)} integers; {_FIX}"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} has label {int(labels.max())} outside 0..{num_classes - 1}; {_FIX}")
    # each row: the R plane, then G, then B, each 32x32 row-major -> (N, C, H, W) -> NHWC
    images = data.reshape(len(data), 3, SIDE, SIDE).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


# ------------------------------------------------------------------------------------------- source


def archive_url() -> str:
    """$GANFORGE_CIFAR10_URL (a .tar.gz URL, or a mirror folder to append the file name to), else CIFAR10_URL."""
    url = os.environ.get(CIFAR10_URL_ENV) or CIFAR10_URL
    return url if url.endswith((".tar.gz", ".tgz")) else url.rstrip("/") + "/" + ARCHIVE


@SOURCES.register("cifar10")
class Cifar10Source(Source):
    """One split of CIFAR-10: 50000 (train) or 10000 (test) 32x32 RGB images in 10 classes."""

    named = True
    splits = tuple(SPLIT_FILES)

    def __init__(self, split: str = "train", data_dir: str | None = None) -> None:
        if split not in SPLIT_FILES:
            raise UserError(f"cifar10 has no split {split!r}; use cifar10:train or cifar10:test")
        self.split = split
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.spec = f"cifar10:{split}"
        self._dir: Path | None = None

    @classmethod
    def from_spec(cls, path: str | None, split: str | None, data_dir: str | None) -> Cifar10Source:
        return cls(split or "train", data_dir)

    @property
    def slug(self) -> str:
        return f"cifar10-{self.split}"

    @property
    def download_dir(self) -> Path:
        return datasets_dir() / "cifar10"

    @property
    def needed(self) -> tuple[str, ...]:
        return (META, *SPLIT_FILES[self.split])

    def _complete(self, folder: Path) -> bool:
        return all((folder / n).is_file() for n in self.needed)

    def batches_dir(self) -> Path:
        """The folder holding this split's batch files: found, extracted, or downloaded and extracted."""
        if self._dir is None:
            self._dir = self._locate()
        return self._dir

    def _locate(self) -> Path:
        if self.data_dir:
            for folder in (self.data_dir, self.data_dir / FOLDER):
                if self._complete(folder):
                    return folder
            archive = self.data_dir / ARCHIVE
            if archive.is_file():
                return self._extract(archive, check_md5=True)
            warnings.warn(
                f"CIFAR-10 ({self.split}) files are not in {self.data_dir}; looking in {self.download_dir}",
                DataWarning,
                stacklevel=3,
            )
        cached = self.download_dir / FOLDER
        if self._complete(cached):
            return cached
        return self._extract(self._download(), check_md5=False)

    def _extract_dir(self, archive: Path) -> Path:
        """Where an archive is extracted in the cache (a --data-dir may be read-only). A user's archive gets a
        folder of its own, keyed by its path, size and mtime: an intact copy extracted earlier from another
        archive (or the download) must never stand in for the archive the user pointed at."""
        if archive.resolve() == (self.download_dir / ARCHIVE).resolve():
            return self.download_dir / FOLDER
        st = archive.stat()
        key = hashlib.sha256(f"{archive.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        return self.download_dir / "from-data-dir" / key / FOLDER

    def _extract(self, archive: Path, check_md5: bool) -> Path:
        """Extract into the cache, replacing an incomplete earlier extraction of the same archive."""
        dest = self._extract_dir(archive)
        if self._complete(dest):
            return dest
        # download() checks what it fetches; a hand-placed copy is checked here, once, when extracted.
        # Only a warning: every batch is validated when read, and a re-packed archive may differ in md5.
        if check_md5 and CIFAR10_MD5:
            actual = file_hash(archive, "md5")
            if actual != CIFAR10_MD5:
                warnings.warn(
                    f"{archive} is not the official CIFAR-10 archive (md5 {actual}, expected {CIFAR10_MD5}); "
                    "using it anyway",
                    DataWarning,
                    stacklevel=4,
                )
        extract_tar(archive, dest, FOLDER, is_complete=self._complete)
        missing = [n for n in self.needed if not (dest / n).is_file()]
        if missing:
            raise UserError(
                f"{archive} lacks {FOLDER}/{missing[0]}; it is not the complete CIFAR-10 archive, "
                f"delete it and download {CIFAR10_URL} again"
            )
        return dest

    def _download(self) -> Path:
        dest = self.download_dir / ARCHIVE
        try:
            return download(archive_url(), dest, md5=CIFAR10_MD5 or None, desc=f"CIFAR-10 {ARCHIVE}")
        except DownloadError as e:
            where = self.data_dir or self.download_dir
            raise UserError(
                f"CIFAR-10 ({self.split}) not found: put {ARCHIVE} (or its extracted {FOLDER}/ folder) in {where}"
                f"{'' if self.data_dir else ' or pass --data-dir DIR'} (download of {e.url} failed: {e.reason})"
            ) from e

    def files(self) -> list[Path]:
        folder = self.batches_dir()
        return [folder / n for n in self.needed]

    def cache_identity(self) -> str:
        parts = [f"cifar10:{self.spec}"]
        for p in self.files():
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)

    def classes(self) -> list[str]:
        classes = read_meta(self.batches_dir() / META)
        if len(classes) != 10:
            raise UserError(f"{self.batches_dir() / META} names {len(classes)} classes, CIFAR-10 has 10; {_FIX}")
        return classes

    def batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every batch of the split as (NHWC uint8, int64 labels), one 30 MB file in memory at a time."""
        classes = self.classes()
        folder = self.batches_dir()
        for name in SPLIT_FILES[self.split]:
            yield read_batch(folder / name, len(classes))

    def decode_into(self, sink: Sink, resolution: int, channels: int, strict: bool) -> Decoded:
        labels = []
        for images, lab in self.batches():
            emit_resized(images, sink, resolution, channels)
            labels.append(lab)
        all_labels = np.concatenate(labels)
        return Decoded(all_labels, self.classes(), [], total=len(all_labels), label_kind="class")

    def info(self, strict: bool = False) -> dict[str, Any]:
        classes = self.classes()
        lo, hi, count = 255, 0, 0
        counts = np.zeros(len(classes), np.int64)
        for images, labels in self.batches():
            count += len(images)
            if len(images):
                lo, hi = min(lo, int(images.min())), max(hi, int(images.max()))
            counts += np.bincount(labels, minlength=len(classes))
        return {
            "spec": self.spec,
            "kind": "cifar10",
            "count": count,
            "shape": (SIDE, SIDE, 3),
            "classes": classes,
            "class_counts": [int(c) for c in counts],
            "label_kind": "class",
            "value_range": (lo, hi),
            "files": [str(p) for p in self.files()],
            "skipped": 0,
        }
