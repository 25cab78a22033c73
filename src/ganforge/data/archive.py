"""Safe extraction of dataset archives (.tar.gz), so a downloaded file can never write outside its folder.

An archive from the network is untrusted input: a member named "/etc/x" or "../x", a symlink that a
later member writes through, or a device file must not be extracted. Every member is checked before
anything is written (and Python's own "data" filter is applied too where it exists), the archive is
unpacked into a hidden temporary folder next to the destination, and only the finished folder is
renamed into place: a killed process or a corrupt archive never leaves a half-extracted dataset that
a later run would take for a complete one.
"""

from __future__ import annotations

import os
import posixpath
import secrets
import shutil
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ganforge.data.locking import file_lock
from ganforge.errors import UserError


def _one_line(x: object) -> str:
    return " ".join(str(x).split()) or type(x).__name__


def check_member(archive: Path, member: tarfile.TarInfo) -> None:
    """Refuse a member that could write outside the extraction folder or create anything but files and folders."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    why = None
    if name.startswith(("/", "\\")) or posixpath.isabs(name) or (len(name) > 1 and name[1] == ":"):
        why = "is an absolute path"
    elif ".." in parts:
        why = "has a '..' component"
    elif member.issym() or member.islnk():
        why = "is a link"
    elif not (member.isfile() or member.isdir()):
        why = "is a device, pipe or other special file"
    if why:
        raise UserError(
            f"{archive} is unsafe: member {name!r} {why}; refusing to extract it "
            "(download the archive again from the official site)"
        )


def extract_tar(archive: Path, dest: Path, root: str, is_complete: Callable[[Path], bool] | None = None) -> Path:
    """Extract the folder `root` of the tar archive `archive` as the folder `dest`.

    An existing `dest` is kept when `is_complete(dest)` says so (any existing `dest` without it) and
    replaced otherwise. A per-destination lock keeps concurrent processes (one per GPU) from
    extracting the same archive at once; the second one finds the first one's result.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = file_lock(dest.parent / f".{dest.name}.extract.lock")
        lock.__enter__()
    except OSError as e:
        raise UserError(
            f"cannot write to {dest.parent} ({_one_line(e)}); set GANFORGE_CACHE to a writable folder"
        ) from e
    try:
        if dest.is_dir() and (is_complete is None or is_complete(dest)):  # e.g. done while we waited
            return dest
        for stale in dest.parent.glob(f".tmp-{dest.name}-*"):  # left by killed runs; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            tmp.mkdir()
            _extract_checked(archive, tmp, root)
            src = tmp / root
            if not src.is_dir():
                raise UserError(f"{archive} has no {root}/ folder; it is not the expected archive, download it again")
            if dest.exists():  # incomplete (files deleted by hand, say): replaced by the fresh copy
                shutil.rmtree(dest)
            os.rename(src, dest)
        except OSError as e:
            raise UserError(
                f"cannot extract {archive} into {dest.parent} ({_one_line(e)}); free some space or set "
                "GANFORGE_CACHE to another folder"
            ) from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return dest
    finally:
        lock.__exit__(None, None, None)


def _strip_dot(name: str) -> str:
    """'./a/b' -> 'a/b': some tools write members relative to '.'."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _extract_checked(archive: Path, into: Path, root: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()  # reads the whole archive: a truncated file fails here, before writing
            for m in members:
                check_member(archive, m)
            wanted = [m for m in members if _strip_dot(m.name).split("/")[0] == root]
            if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: a second, independent guard
                tf.extractall(into, members=wanted, filter="data")
            else:  # pragma: no cover - older Pythons rely on check_member alone
                tf.extractall(into, members=wanted)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(
            f"{archive} is a corrupt or truncated archive ({_one_line(e)}); delete it and download it again"
        ) from e
