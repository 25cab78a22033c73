"""Decode a dataset once, then memory-map it: every later run starts in milliseconds.

Layout: <cache_root>/datasets/<slug>-<res>px-<c>c-<key>/{images.npy, labels.npy, meta.json}, where
key hashes the source's identity (files, sizes, mtimes), the resolution, the channels and
CACHE_FORMAT. A cache is built in a hidden temporary folder and renamed into place only when complete,
so a killed process never leaves a half cache that a later run would load; a per-key lock keeps
several processes (one per GPU) from decoding the same data at once.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import secrets
import shutil
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ganforge import __version__
from ganforge.data.locking import file_lock
from ganforge.data.paths import cache_root, datasets_dir
from ganforge.data.sources.base import SkippedFileWarning, Source, infer_label_kind
from ganforge.errors import UserError

__all__ = ["CACHE_FORMAT", "NpyWriter", "cache_dir_for", "cache_key", "cache_root", "load_cached"]

CACHE_FORMAT = 1  # bump when the decoding rules change, so old caches are not reused
_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_MAX_ROWS = 10**15  # header room reserved for any row count


def _npy_header(shape: tuple[int, ...], total: int | None = None) -> bytes:
    """A version 1.0 .npy header for uint8 data, padded to `total` bytes (default: the 64-byte multiple)."""
    body = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {tuple(shape)!r}, }}".encode("latin1")
    fixed = len(_NPY_MAGIC) + 2
    if total is None:
        total = -(-(fixed + len(body) + 1) // 64) * 64
    pad = total - fixed - len(body) - 1
    if pad < 0:
        raise ValueError(f"npy header for {shape} does not fit in {total} bytes")
    header = body + b" " * pad + b"\n"
    return _NPY_MAGIC + struct.pack("<H", len(header)) + header


def _disk_error(path: Path, e: OSError) -> UserError:
    return UserError(
        f"cannot write the dataset cache at {path} ({e.strerror or e}); free some space, "
        "set GANFORGE_CACHE to another folder, or load without the cache"
    )


class NpyWriter:
    """Streams uint8 (B, H, W, C) batches into a .npy whose row count is written at `close`, so a
    dataset larger than RAM is decoded straight to disk."""

    def __init__(self, path: Path, hwc: tuple[int, int, int]) -> None:
        self.path, self.hwc, self.n = Path(path), tuple(hwc), 0
        self._header_len = len(_npy_header((_MAX_ROWS, *self.hwc)))
        try:
            self._f = open(self.path, "wb")
            self._f.write(b"\0" * self._header_len)
        except OSError as e:
            raise _disk_error(self.path, e) from e

    def append(self, batch: np.ndarray) -> None:
        if batch.dtype != np.uint8 or tuple(batch.shape[1:]) != self.hwc:
            raise ValueError(f"expected uint8 (B, {self.hwc}) batches, got {batch.dtype} {batch.shape}")
        try:
            self._f.write(np.ascontiguousarray(batch).data)
        except OSError as e:
            raise _disk_error(self.path, e) from e
        self.n += len(batch)

    def close(self) -> int:
        if self._f.closed:
            return self.n
        try:
            self._f.seek(0)
            self._f.write(_npy_header((self.n, *self.hwc), self._header_len))
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise _disk_error(self.path, e) from e
        finally:
            self._f.close()
        return self.n


def cache_key(identity: str, resolution: int, channels: int) -> str:
    blob = json.dumps(
        {"identity": identity, "resolution": resolution, "channels": channels, "format": CACHE_FORMAT},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_dir_for(source: Source, resolution: int, channels: int) -> Path:
    key = cache_key(source.cache_identity(), resolution, channels)
    return datasets_dir() / f"{source.slug}-{resolution}px-{channels}c-{key}"


def _open(folder: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
    """The cached arrays, or None when absent, from another format, or damaged (then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return None
        images = np.load(folder / "images.npy", mmap_mode="r")
        if images.dtype != np.uint8 or list(images.shape) != meta["shape"]:
            return None
        labels = np.load(folder / "labels.npy") if meta["has_labels"] else None
        if labels is not None and (labels.ndim not in (1, 2) or len(labels) != len(images)):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return images, labels, meta


def _write_json(path: Path, obj: Any) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _build(source: Source, final: Path, resolution: int, channels: int, strict: bool) -> None:
    root = final.parent
    for stale in root.glob(f".tmp-{final.name}-*"):  # we hold the key's lock: these are from killed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        writer = NpyWriter(tmp / "images.npy", (resolution, resolution, channels))
        try:
            decoded = source.decode_into(writer, resolution, channels, strict)
        finally:
            writer.close()
        kind = decoded.label_kind or infer_label_kind(decoded.labels)
        try:
            if decoded.labels is not None:
                # class indices as int64, multi-hot attributes as float32 (N, K): what training consumes
                dtype = np.float32 if kind == "attributes" else np.int64
                with open(tmp / "labels.npy", "wb") as f:
                    np.save(f, np.asarray(decoded.labels, dtype))
                    f.flush()
                    os.fsync(f.fileno())
            _write_json(
                tmp / "meta.json",
                {
                    "format": CACHE_FORMAT,
                    "spec": source.spec,
                    "identity": source.cache_identity(),
                    "resolution": resolution,
                    "channels": channels,
                    "count": writer.n,
                    "shape": [writer.n, resolution, resolution, channels],
                    "has_labels": decoded.labels is not None,
                    "label_kind": kind,
                    "classes": decoded.classes,
                    "total_files": decoded.total,
                    "skipped_count": len(decoded.skipped),
                    "skipped": decoded.skipped[:100],
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "ganforge_version": __version__,
                },
            )
        except OSError as e:
            raise _disk_error(tmp, e) from e
        if final.exists():  # a damaged or outdated cache under the same key
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_cached(
    source: Source, resolution: int, channels: int, strict: bool = False
) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, dict[str, Any]]:
    """(images memmap, labels, classes, meta) from the cache, decoding the source first on a miss.

    `images` is a read-only np.memmap; copy it (np.array) to get a writable in-RAM array. Labels and
    classes have gone through `source.select_labels` (e.g. a subset of attributes); meta["label_kind"]
    says what they are.
    """
    final = cache_dir_for(source, resolution, channels)
    hit = _open(final)
    built = False
    if hit is None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            lock = file_lock(final.parent / f".{final.name}.lock")
            lock.__enter__()
        except OSError as e:
            raise _disk_error(final.parent, e) from e
        try:
            hit = _open(final)  # another process may have built it while we waited
            if hit is None:
                _build(source, final, resolution, channels, strict)
                built = True
                hit = _open(final)
                if hit is None:
                    raise RuntimeError(f"the dataset cache just written to {final} cannot be read back")
        finally:
            lock.__exit__(None, None, None)
    images, labels, meta = hit
    if meta.get("skipped_count") and not built:  # the build warned; a reuse says it again, briefly
        first = meta["skipped"][0]
        if strict:
            raise UserError(
                f"cannot read image {first}; fix or remove the file (without strict mode bad files are skipped)"
            )
        warnings.warn(
            f"{meta['skipped_count']} of {meta['total_files']} files in {meta['spec']} were skipped as "
            f"unreadable (first: {first}; list in {final / 'meta.json'})",
            SkippedFileWarning,
            stacklevel=3,
        )
    meta.setdefault("label_kind", infer_label_kind(labels))  # caches written before label kinds
    labels, classes = source.select_labels(labels, meta.get("classes"))
    return images, labels, classes, meta
