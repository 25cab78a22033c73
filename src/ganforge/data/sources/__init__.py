"""Data sources: where images come from (built-in datasets by name, a folder, a .zip) and how a
spec string picks one. Adding a source is one module registering a `Source` subclass."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ganforge.data.sources.base import (
    SOURCES,
    ArraySink,
    DataWarning,
    Decoded,
    RawData,
    Sink,
    SkippedFileWarning,
    Source,
)
from ganforge.data.sources.folder import FolderSource, ZipSource
from ganforge.data.sources.idx import FashionMnistSource, MnistSource, read_idx, write_idx
from ganforge.errors import UserError

__all__ = [
    "SOURCES",
    "ArraySink",
    "DataWarning",
    "Decoded",
    "FashionMnistSource",
    "FolderSource",
    "MnistSource",
    "RawData",
    "Sink",
    "SkippedFileWarning",
    "Source",
    "ZipSource",
    "dataset_names",
    "make_source",
    "parse_spec",
    "read_idx",
    "write_idx",
]


def dataset_names() -> list[str]:
    """Sources chosen by name (as opposed to by a folder or .zip path)."""
    return [n for n in SOURCES.names() if SOURCES.get(n).named]


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith(("~", ".")) or spec.lower().endswith(".zip")


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'fashion-mnist:test' -> ('fashion-mnist', None, 'test'); a folder -> ('folder', path, None);
    a .zip -> ('zip', path, None). Names win over same-named folders: write ./mnist for the folder."""
    s = spec.strip()
    names = dataset_names()
    name, _, split = s.partition(":")
    if name.lower() in names:
        return name.lower(), None, split.strip().lower() or "train"
    p = Path(s).expanduser()
    if p.is_dir():
        return "folder", s, None
    if p.is_file():
        if p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
            return "zip", s, None
        raise UserError(f"dataset {s} is a file but not a .zip; pass a folder of images or a .zip of images")
    if _looks_like_path(s):
        raise UserError(f"dataset path {s} does not exist; pass an existing folder or .zip of images")
    raise UserError(
        f"unknown dataset {s!r}; use one of {', '.join(names)} (optionally with :train or :test), "
        "or a folder or .zip of images"
    )


def make_source(spec: str, data_dir: str | None = None) -> Source:
    """The source a spec string names, ready to identify and decode."""
    kind, path, split = parse_spec(spec)
    return SOURCES.get(kind).from_spec(path, split, data_dir)
