"""Shared file I/O at the bottom of the package: atomic writes (fsync + rename) and hashing.

Every file ganforge writes that a reader may see half-made (checkpoints, config.yaml, metrics, PNGs,
reports, exports) goes through `atomic_write_bytes`: readers see the old file or the new one, never a
mixture, even when the process is killed mid-write.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: not every file system allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode() -> int:
    """rw-r--r-- under the usual umask: mkstemp's private 0600 is wrong for files meant to be shared."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write_file(
    path: Path, write: Callable[[str], None], before_rename: Callable[[str], None] | None = None,
    tmp_prefix: str | None = None,
) -> None:
    """`write(tmp_path)` fills a temp file beside `path`; it is fsynced and renamed over `path`.
    For writers that want a file name (safetensors, matplotlib, numpy) rather than bytes. `before_rename(tmp)`
    runs on the complete, fsynced file (e.g. to hash it) before it appears under its real name. The temp file
    is `.<name>.<random>.tmp` (or `<tmp_prefix><random>.tmp`), hidden, and recognisable as a leftover."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=tmp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        if before_rename is not None:
            before_rename(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file beside it, fsync, rename, fsync of the folder)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    atomic_write_file(path, write)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def replace_dir(new: Path, dst: Path) -> None:
    """Put the finished folder `new` at `dst` (same filesystem), replacing a folder there: the old one is moved
    aside first, put back if the swap fails, and removed only once `dst` is the new one."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    try:
        os.replace(new, dst)
    except BaseException:
        if old is not None:
            os.replace(old, dst)
        raise
    fsync_dir(dst.parent)
    if old is not None:
        import shutil

        shutil.rmtree(old, ignore_errors=True)


def jsonl_records(lines: Iterable[str | bytes]) -> list[dict]:
    """The JSON objects of JSON-lines text; a line cut by a crash (or still being written) is skipped."""
    out = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out
