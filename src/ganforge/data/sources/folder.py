"""Images from a folder (searched recursively) or from a .zip, with optional labels from sub-folders.

Decoding rules, chosen so that any image people actually have loads the same way everywhere:
- Files are taken in sorted path order (deterministic across machines); hidden files and folders
  (".*", e.g. macOS "._x.png" or ".ipynb_checkpoints") are ignored.
- EXIF orientation is applied, so phone photos are upright.
- Transparency is composited onto white (what viewers show; the colour under alpha=0 is often junk).
- 16-bit gray (I;16) is scaled 65535 -> 255 rather than clipped, as Pillow's convert("L") would.
- Palette, CMYK, YCbCr images become RGB; 1-bit becomes gray.
- Then centre crop to a square and an antialiased torch resize (data/transforms.py).
A file that cannot be decoded (corrupt, truncated, empty, not a regular file, too large: Pillow's
decompression-bomb limit) is skipped with a warning naming it, and so is a sub-folder that cannot be
listed; strict=True makes it an error instead. Symlinks are followed, loops cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import sys
import warnings
import zipfile
from abc import abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from ganforge.data.sources.base import SOURCES, Decoded, Sink, SkippedFileWarning, Source, prepare
from ganforge.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
MAX_ZIP_MEMBER_BYTES = 1 << 30  # a zip member claiming more than this is skipped (zip bomb guard)
MAX_WARNINGS = 10  # skipped files named one by one; the rest only counted in the summary
BATCH = 256  # images handed to the sink at once


class BadImage(Exception):
    """Why one file could not be decoded."""


def _one_line(e: object) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _composite_on_white(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.uint32)
    out = (color.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def image_to_array(img: Image.Image) -> np.ndarray:
    """A Pillow image of any mode -> uint8 (H, W, 1) for gray modes or (H, W, 3) for colour."""
    mode = img.mode
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"))[..., None]
    if mode.startswith("I") or mode == "F":  # I;16*, I (32-bit int), F (32-bit float): deep gray
        a = np.nan_to_num(np.asarray(img).astype(np.float64))
        peak = float(a.max()) if a.size else 0.0
        if mode.startswith("I;16") or (mode == "I" and peak > 255):
            a = a * (255.0 / 65535.0)
        elif mode == "F" and peak <= 1.0:
            a = a * 255.0
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)[..., None]
    if mode in ("LA", "La"):
        la = np.asarray(img.convert("LA"))
        return _composite_on_white(la[..., :1], la[..., 1:])
    if mode in ("RGBA", "RGBa", "PA") or "transparency" in img.info:
        rgba = np.asarray(img.convert("RGBA"))
        return _composite_on_white(rgba[..., :3], rgba[..., 3:])
    return np.asarray(img.convert("RGB"))


def decode_image(fp: IO[bytes]) -> np.ndarray:
    """Decode one image file object to uint8 HWC; any failure becomes BadImage with a short reason."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(fp) as img:
                img.load()
                img = ImageOps.exif_transpose(img) or img
                arr = image_to_array(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise BadImage(f"too many pixels, possibly a decompression bomb ({_one_line(e)})") from e
        except UnidentifiedImageError as e:
            raise BadImage("not an image Pillow can read") from e
        except MemoryError:
            raise
        except Exception as e:  # Pillow raises many types for corrupt data (OSError, SyntaxError, ...)
            raise BadImage(_one_line(e)) from e
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise BadImage(f"unexpected decoded shape {arr.shape}")
    # np.asarray(img) is read-only; torch.from_numpy wants writable memory
    return arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr, order="C")


def auto_labels(names: list[str]) -> tuple[list[int] | None, list[str] | None]:
    """Labels from first-level folders when every image lies in one and there are at least two.

    Leading folders shared by all names are skipped first, so "data/cats/x.png" + "data/dogs/y.png"
    (a zip of a folder, say) give the classes cats and dogs.
    """
    parts = [n.split("/") for n in names]
    while parts and all(len(p) > 2 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    if not parts or any(len(p) < 2 for p in parts):
        return None, None
    classes = sorted({p[0] for p in parts})
    if len(classes) < 2:
        return None, None
    index = {c: i for i, c in enumerate(classes)}
    return [index[p[0]] for p in parts], classes


def _is_image_name(name: str) -> bool:
    """An image extension, and no hidden file or folder anywhere in the (posix) relative name."""
    parts = name.split("/")
    return not any(p.startswith(".") for p in parts) and os.path.splitext(parts[-1])[1].lower() in IMAGE_EXTENSIONS


class ImageFilesSource(Source):
    """Shared decoding loop for folders and zips; subclasses list names and open them."""

    named = False
    kind = "images"

    def __init__(self, path: str | Path, labels: str = "auto") -> None:
        if labels not in ("auto", "none"):
            raise ValueError(f"labels must be 'auto' or 'none', not {labels!r}")
        self.path = Path(path).expanduser()
        self.spec = str(path)
        self.labels_mode = labels

    @classmethod
    def from_spec(cls, path: str | None, split: str | None, data_dir: str | None) -> ImageFilesSource:
        if not path:
            raise UserError(f"a {cls.kind} dataset needs a path")
        return cls(path)

    @property
    def slug(self) -> str:
        stem = self.path.resolve().stem or "root"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:40]

    @abstractmethod
    def names(self) -> list[str]:
        """Sorted relative names (posix separators) of candidate image files."""

    @abstractmethod
    def opener(self) -> contextlib.AbstractContextManager[Callable[[str], IO[bytes]]]:
        """A context giving a function name -> readable binary file (raises BadImage when unreadable)."""

    @abstractmethod
    def where(self, name: str) -> str:
        """How to name a file in messages."""

    def unlisted(self) -> list[tuple[str, str]]:
        """(folder, reason) of sub-folders that could not be listed: their images are missing."""
        return []

    def _no_images(self) -> UserError:
        exts = ", ".join(IMAGE_EXTENSIONS)
        unreadable = "".join(f"; cannot list {where} ({reason})" for where, reason in self.unlisted()[:3])
        return UserError(f"no images found in {self.path} (looked for {exts}, in sub-folders too){unreadable}")

    def _checked_names(self) -> list[str]:
        names = self.names()
        if not names:
            raise self._no_images()
        return names

    def _iter_arrays(self, names: list[str], strict: bool, desc: str) -> Iterator[tuple[int, np.ndarray]]:
        """(index, native uint8 HWC) for every decodable file; the others are warned about and skipped."""
        skipped: list[str] = []
        self._skipped = skipped
        for where, reason in self.unlisted():  # images in there are missing: say which folder, and why
            if strict:
                raise UserError(
                    f"cannot list folder {where}: {reason}; fix its permissions or remove it "
                    "(without strict mode it is skipped)"
                )
            skipped.append(f"{where}: cannot list folder ({reason})")
            warnings.warn(f"skipping folder {where}: cannot list it ({reason})", SkippedFileWarning, stacklevel=2)
        unlisted = len(skipped)
        with (
            self.opener() as open_name,
            tqdm(names, desc=desc, unit="img", disable=None, file=sys.stderr, leave=False, mininterval=1) as it,
        ):
            for i, name in enumerate(it):
                try:
                    with open_name(name) as fp:
                        arr = decode_image(fp)
                except BadImage as e:
                    if strict:
                        raise UserError(
                            f"cannot read image {self.where(name)}: {e}; fix or remove the file "
                            "(without strict mode bad files are skipped)"
                        ) from e
                    skipped.append(f"{self.where(name)}: {e}")
                    if len(skipped) - unlisted <= MAX_WARNINGS:
                        warnings.warn(f"skipping {self.where(name)}: {e}", SkippedFileWarning, stacklevel=2)
                    continue
                yield i, arr
        bad = len(skipped) - unlisted
        if bad:
            more = f" ({bad - MAX_WARNINGS} not named above)" if bad > MAX_WARNINGS else ""
            warnings.warn(
                f"skipped {bad} of {len(names)} files in {self.path} that are not readable images{more}",
                SkippedFileWarning,
                stacklevel=2,
            )
        if bad == len(names):
            raise UserError(
                f"no readable images in {self.path}: all {len(names)} image files failed to decode "
                f"(first: {skipped[unlisted]})"
            )

    def file_labels(self, names: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
        """The label of every name (int64 classes or float32 attribute rows) and the class/attribute names:
        here from first-level folders (see `auto_labels`); StyleGAN datasets read dataset.json instead."""
        labels, classes = auto_labels(names) if self.labels_mode == "auto" else (None, None)
        return (None if labels is None else np.asarray(labels, np.int64)), classes

    def decode_into(self, sink: Sink, resolution: int, channels: int, strict: bool) -> Decoded:
        names = self._checked_names()
        all_labels, classes = self.file_labels(names)
        kept: list[int] = []
        batch: list[np.ndarray] = []
        for i, arr in self._iter_arrays(names, strict, f"decoding {self.slug}"):
            x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
            batch.append(prepare(x, resolution, channels))
            kept.append(i)
            if len(batch) == BATCH:
                sink.append(np.concatenate(batch))
                batch = []
        if batch:
            sink.append(np.concatenate(batch))
        labels = None if all_labels is None else all_labels[np.asarray(kept, np.int64)]
        return Decoded(labels, classes, list(self._skipped), total=len(names) + len(self.unlisted()))

    def info(self, strict: bool = False) -> dict[str, Any]:
        """Decodes every file at its native size: exact, but as slow as a first load."""
        names = self._checked_names()
        all_labels, classes = self.file_labels(names)
        if all_labels is not None and all_labels.ndim != 1:  # attribute rows: no class counts
            all_labels = None
        shapes: dict[tuple[int, int, int], int] = {}
        lo, hi, count = 255, 0, 0
        class_counts = [0] * len(classes or [])
        for i, arr in self._iter_arrays(names, strict, f"reading {self.slug}"):
            shapes[arr.shape] = shapes.get(arr.shape, 0) + 1
            lo, hi = min(lo, int(arr.min())), max(hi, int(arr.max()))
            count += 1
            if all_labels is not None:
                class_counts[all_labels[i]] += 1
        sizes = sorted(shapes)
        return {
            "spec": self.spec,
            "kind": self.kind,
            "path": str(self.path),
            "count": count,
            "shape": sizes[0] if len(sizes) == 1 else None,  # None: sizes differ, see min/max
            "min_shape": min(sizes, key=lambda s: s[0] * s[1]),
            "max_shape": max(sizes, key=lambda s: s[0] * s[1]),
            "channels": 3 if any(s[2] == 3 for s in sizes) else 1,
            "classes": classes,
            "class_counts": class_counts if classes else None,
            "value_range": (lo, hi),
            "skipped": len(self._skipped),
        }


@SOURCES.register("folder")
class FolderSource(ImageFilesSource):
    """A folder of images, searched recursively (symlinks followed, loops cut)."""

    kind = "folder"

    def __init__(self, path: str | Path, labels: str = "auto") -> None:
        super().__init__(path, labels)
        self._listing: list[tuple[str, int, int]] | None = None
        self._unlisted: list[tuple[str, str]] = []

    def _list(self) -> list[tuple[str, int, int]]:
        """(relative name, size, mtime_ns) of candidate files, sorted by name."""
        if self._listing is None:
            if not self.path.is_dir():
                raise UserError(f"dataset folder {self.path} does not exist; check the path")
            root = self.path.resolve()
            seen: set[str] = set()
            out: list[tuple[str, int, int]] = []
            unlisted: list[tuple[str, str]] = []

            def cannot_list(e: OSError) -> None:  # os.walk would silently leave the folder out
                where = Path(e.filename) if e.filename else root
                if where == root:
                    raise UserError(f"cannot list dataset folder {self.path} ({e.strerror or _one_line(e)})")
                shown = self.path / where.relative_to(root) if where.is_relative_to(root) else where
                unlisted.append((str(shown), e.strerror or _one_line(e)))

            for dirpath, dirnames, filenames in os.walk(root, onerror=cannot_list, followlinks=True):
                real = os.path.realpath(dirpath)
                if real in seen:  # a symlink loop or a second link to the same folder
                    dirnames[:] = []
                    continue
                seen.add(real)
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel_dir = Path(dirpath).relative_to(root).as_posix()
                for f in filenames:
                    name = f if rel_dir == "." else f"{rel_dir}/{f}"
                    if not _is_image_name(name):
                        continue
                    try:
                        st = os.stat(os.path.join(dirpath, f))
                        out.append((name, st.st_size, st.st_mtime_ns))
                    except OSError:  # a dangling symlink: listed, and skipped with a reason when decoded
                        out.append((name, -1, 0))
            out.sort()
            self._unlisted = sorted(unlisted)
            self._listing = out
        return self._listing

    def unlisted(self) -> list[tuple[str, str]]:
        self._list()
        return self._unlisted

    def names(self) -> list[str]:
        return [n for n, _, _ in self._list()]

    def where(self, name: str) -> str:
        return str(self.path / name)

    @contextlib.contextmanager
    def opener(self) -> Iterator[Callable[[str], IO[bytes]]]:
        root = self.path.resolve()

        def open_name(name: str) -> IO[bytes]:
            p = root / name
            try:
                st = p.stat()
                if not stat.S_ISREG(st.st_mode):  # a FIFO would block open(), a device never ends
                    raise BadImage("not a regular file")
                if st.st_size == 0:
                    raise BadImage("empty file (0 bytes)")
                return open(p, "rb")
            except OSError as e:
                raise BadImage(f"cannot open ({e.strerror or _one_line(e)})") from e

        yield open_name

    def cache_identity(self) -> str:
        h = hashlib.sha256()
        for name, size, mtime in self._list():
            h.update(f"{name}\0{size}\0{mtime}\n".encode())
        return f"folder:{self.path.resolve()}:labels={self.labels_mode}:{h.hexdigest()}"


@SOURCES.register("zip")
class ZipSource(ImageFilesSource):
    """Images inside a .zip (read member by member, never extracted to disk)."""

    kind = "zip"

    def _zip(self) -> zipfile.ZipFile:
        if not self.path.is_file():
            raise UserError(f"dataset file {self.path} does not exist; check the path")
        try:
            return zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as e:
            raise UserError(
                f"{self.path} is not a readable .zip ({_one_line(e)}); re-create it, or unzip it and pass the folder"
            ) from e

    def names(self) -> list[str]:
        with self._zip() as zf:
            return sorted(
                i.filename
                for i in zf.infolist()
                if not i.is_dir() and not i.filename.startswith("__MACOSX/") and _is_image_name(i.filename)
            )

    def where(self, name: str) -> str:
        return f"{self.path}:{name}"

    @contextlib.contextmanager
    def opener(self) -> Iterator[Callable[[str], IO[bytes]]]:
        with self._zip() as zf:

            def open_name(name: str) -> IO[bytes]:
                info = zf.getinfo(name)
                if info.file_size == 0:
                    raise BadImage("empty file (0 bytes)")
                if info.file_size > MAX_ZIP_MEMBER_BYTES:
                    raise BadImage(f"member of {info.file_size} bytes is larger than the limit")
                try:
                    return io.BytesIO(zf.read(info))
                except (zipfile.BadZipFile, RuntimeError, OSError, EOFError, ValueError) as e:
                    raise BadImage(f"corrupt zip member ({_one_line(e)})") from e

            yield open_name

    def cache_identity(self) -> str:
        st = self._zip_stat()
        return f"zip:{self.path.resolve()}:{st.st_size}:{st.st_mtime_ns}:labels={self.labels_mode}"

    def _zip_stat(self) -> os.stat_result:
        try:
            return self.path.stat()
        except OSError as e:
            raise UserError(f"dataset file {self.path} does not exist; check the path") from e
