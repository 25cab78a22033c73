"""Resumable, checksummed downloads with urllib only (datasets must work without extra dependencies).

A download goes to `<dest>.part`, resumes that file with an HTTP Range request after an interruption,
is verified, and only then renamed onto `dest`: whatever happens, `dest` is either absent or complete.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ganforge.data.locking import file_lock
from ganforge.errors import UserError

CHUNK = 1 << 20
ATTEMPTS = 3  # a connection dropped mid-file is retried (resuming) this many times in total
RETRY_WAIT_S = 1.0


class DownloadError(UserError):
    """A download failed; `url` and `reason` let callers phrase their own one-line advice."""

    def __init__(self, message: str, url: str, reason: str) -> None:
        super().__init__(message)
        self.url, self.reason = url, reason


class _Retry(Exception):
    """The transfer broke off mid-file: the .part is kept and the next attempt resumes it."""


def file_hash(path: str | Path, algo: str = "sha256") -> str:
    """Hex digest of a file, read in chunks so multi-GB files do not need to fit in memory."""
    h = hashlib.new(algo, usedforsecurity=False)  # md5 identifies files here; FIPS builds must allow it
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _first_mismatch(path: Path, md5: str | None, sha256: str | None) -> tuple[str, str, str] | None:
    for algo, expected in (("md5", md5), ("sha256", sha256)):
        if expected:
            actual = file_hash(path, algo)
            if actual != expected.lower():
                return algo, expected.lower(), actual
    return None


def verify_file(path: str | Path, md5: str | None = None, sha256: str | None = None) -> bool:
    """True when `path` is a file matching every checksum given (any existing file if none is given)."""
    path = Path(path)
    return path.is_file() and _first_mismatch(path, md5, sha256) is None


def _one_line(x: object) -> str:
    return " ".join(str(x).split()) or type(x).__name__


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) from 'bytes START-END/TOTAL' or 'bytes */TOTAL'; None where absent."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _fetch(url: str, part: Path, desc: str, timeout: float) -> None:
    """Bring `part` to the full remote length, appending from its current size when the server allows."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "ganforge", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            _, total = _content_range(e.headers.get("Content-Range"))
            e.close()
            if total == offset:
                return  # the .part already holds the whole file; the checksum has the last word
            part.unlink()  # longer than the remote file, or unknown: start over
            return _fetch(url, part, desc, timeout)
        if e.code >= 500:
            raise _Retry(f"HTTP {e.code} {e.reason}") from e
        raise
    with resp:
        status = getattr(resp, "status", None) or 200
        mode = "ab"
        if offset and status == 206:
            start, _ = _content_range(resp.headers.get("Content-Range"))
            if start != offset:  # a server that answers another range than asked: do not splice
                part.unlink()
                raise _Retry(f"server answered range start {start} for a request at {offset}")
        elif offset:  # 200: the server ignores Range and sends the whole file
            mode, offset = "wb", 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        try:
            with (
                open(part, mode) as f,
                tqdm(
                    total=total,
                    initial=offset,
                    desc=desc,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    disable=None,
                    file=sys.stderr,
                    leave=False,
                ) as bar,
            ):
                while block := resp.read(CHUNK):
                    f.write(block)
                    bar.update(len(block))
                f.flush()
                os.fsync(f.fileno())
        except (http.client.HTTPException, TimeoutError, ConnectionError) as e:
            raise _Retry(_one_line(e)) from e
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Retry(f"connection closed after {size} of {total} bytes")


def download(
    url: str,
    dest: Path,
    md5: str | None = None,
    sha256: str | None = None,
    desc: str | None = None,
    timeout: float = 30,
) -> Path:
    """Download `url` to `dest` (resuming a previous `.part`), verify it, and return `dest`.

    An existing `dest` that matches the checksums (or any existing `dest` when none is given) is
    returned without touching the network. Every failure is a one-line UserError.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        lock = file_lock(dest.with_name(dest.name + ".lock"))
        lock.__enter__()
    except OSError as e:
        raise UserError(f"cannot write to {dest.parent} ({_one_line(e)}); choose a writable folder") from e
    try:
        return _download_locked(url, dest, md5, sha256, desc or dest.name, timeout)
    finally:
        lock.__exit__(None, None, None)


def _download_locked(url: str, dest: Path, md5: str | None, sha256: str | None, desc: str, timeout: float) -> Path:
    part = dest.with_name(dest.name + ".part")
    how_to_fix = f"put the file at {dest} by hand"
    if dest.is_file() and _first_mismatch(dest, md5, sha256) is None:
        return dest
    fresh_retry_left = part.exists()  # a resumed file that fails its checksum gets one clean retry
    attempt = 0

    def fail(reason: str) -> DownloadError:
        return DownloadError(f"could not download {url} ({reason}); {how_to_fix}", url, reason)

    while True:
        try:
            _fetch(url, part, desc, timeout)
        except _Retry as e:
            attempt += 1
            if attempt >= ATTEMPTS:
                raise fail(f"{e}; partial file kept at {part}, run again to resume") from e
            time.sleep(RETRY_WAIT_S)
            continue
        except urllib.error.HTTPError as e:
            raise fail(f"HTTP {e.code} {e.reason}") from e
        except urllib.error.URLError as e:
            raise fail(_one_line(e.reason)) from e
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise fail(_one_line(e)) from e
        bad = _first_mismatch(part, md5, sha256)
        if bad is None:
            break
        part.unlink()
        if fresh_retry_left:
            fresh_retry_left = False
            continue
        algo, expected, actual = bad
        reason = f"checksum mismatch for {dest.name}: expected {algo} {expected}, got {actual}"
        raise DownloadError(f"{reason} (downloaded from {url}); run again later or {how_to_fix}", url, reason)
    os.replace(part, dest)
    return dest
