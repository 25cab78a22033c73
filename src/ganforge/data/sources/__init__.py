"""Data sources: where images come from (built-in datasets by name, a folder, a .zip) and how a
spec string picks one. Adding a source is one module registering a `Source` subclass."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

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
from ganforge.data.sources.stylegan import StyleGanFolderSource, StyleGanZipSource, has_dataset_json
from ganforge.errors import UserError

# Sources register when imported, and messages list datasets in that order: the IDX ones first, then
# the block below (kept apart from the imports above so that import sorting cannot reorder them).
# isort: split
from ganforge.data.sources.celeba import CelebaSource
from ganforge.data.sources.cifar import Cifar10Source

__all__ = [
    "SOURCES",
    "ArraySink",
    "CelebaSource",
    "Cifar10Source",
    "DataWarning",
    "Decoded",
    "FashionMnistSource",
    "FolderSource",
    "MnistSource",
    "RawData",
    "Sink",
    "SkippedFileWarning",
    "Source",
    "StyleGanFolderSource",
    "StyleGanZipSource",
    "ZipSource",
    "dataset_names",
    "make_source",
    "parse_spec",
    "read_idx",
    "write_idx",
]


def dataset_names() -> list[str]:
    """Sources chosen by name (as opposed to by a folder or .zip path), in the order they were added."""
    order = {cls: i for i, cls in enumerate(Source._definition_order)}
    named = [n for n in SOURCES.names() if SOURCES.get(n).named]
    return sorted(named, key=lambda n: order.get(SOURCES.get(n), len(order)))


def _or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _names_help() -> str:
    """'fashion-mnist, mnist (optionally with :train or :test), celeba (optionally with ...)': datasets
    that take the same splits are listed together, so the message stays short as datasets are added."""
    groups: list[tuple[tuple[str, ...], list[str]]] = []
    for n in dataset_names():
        splits = SOURCES.get(n).splits
        if groups and groups[-1][0] == splits:
            groups[-1][1].append(n)
        else:
            groups.append((splits, [n]))
    return ", ".join(
        ", ".join(names) + (f" (optionally with {_or([':' + s for s in splits])})" if splits else "")
        for splits, names in groups
    )


def _looks_like_path(spec: str) -> bool:
    return "/" in spec or "\\" in spec or spec.startswith(("~", ".")) or spec.lower().endswith(".zip")


def parse_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'fashion-mnist:test' -> ('fashion-mnist', None, 'test'); a folder -> ('folder', path, None);
    a .zip -> ('zip', path, None); either with a dataset.json at its root -> 'stylegan-folder' / 'stylegan-zip'. Names win over same-named folders: write ./mnist for the folder."""
    s = spec.strip()
    names = dataset_names()
    name, _, split = s.partition(":")
    if name.lower() in names:
        return name.lower(), None, split.strip().lower() or "train"
    p = Path(s).expanduser()
    if p.is_dir():
        return ("stylegan-folder" if has_dataset_json(p) else "folder"), s, None
    if p.is_file():
        if p.suffix.lower() == ".zip" or zipfile.is_zipfile(p):
            return ("stylegan-zip" if has_dataset_json(p) else "zip"), s, None
        raise UserError(f"dataset {s} is a file but not a .zip; pass a folder of images or a .zip of images")
    if _looks_like_path(s):
        raise UserError(f"dataset path {s} does not exist; pass an existing folder or .zip of images")
    raise UserError(f"unknown dataset {s!r}; use one of {_names_help()}, or a folder or .zip of images")


def make_source(spec: str, data_dir: str | None = None, **options: Any) -> Source:
    """The source a spec string names, ready to identify and decode.

    `options` are load_dataset's source-specific keywords (attributes=, crop=); None means "not set".
    One set for a source that has no such option is an error rather than silently ignored.
    """
    kind, path, split = parse_spec(spec)
    cls = SOURCES.get(kind)
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if key not in cls.options:
            takers = [n for n in dataset_names() if key in SOURCES.get(n).options]
            raise UserError(
                f"the {key} option applies only to {_or(takers) if takers else 'no dataset'}, not to "
                f"{spec.strip()}; remove it"
            )
    return cls.from_spec(path, split, data_dir, **given)
