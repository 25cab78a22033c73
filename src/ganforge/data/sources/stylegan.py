"""StyleGAN2-ADA / StyleGAN3 datasets: a folder or .zip of images with a `dataset.json` at its root.

NVlabs' `dataset_tool.py` writes `00000/img00000000.png, ...` and `dataset.json` = {"labels": [[name, label], ...]}
(or {"labels": null}); their `ImageFolderDataset` reads images in sorted path order and looks each one's label up
by name. A label is a class index (int) or a vector (list of floats). Here a class index stays a class, a one-hot
vector becomes its class, a 0/1 vector becomes attributes; other vectors (continuous conditioning) have no
counterpart in ganforge and are refused. ganforge's own `data pack` adds {"ganforge": {"label_kind", "names"}},
which NVlabs' loader ignores, so class and attribute names survive the round trip.

A `dataset.json` that misses a label for an image, or labels a file that is not there, is a one-line error: a
dataset prepared for NVlabs' code would fail there too (KeyError), and a silent guess would train on wrong labels.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ganforge.data.sources.base import SOURCES
from ganforge.data.sources.folder import FolderSource, ImageFilesSource, ZipSource
from ganforge.errors import UserError

DATASET_JSON = "dataset.json"


def has_dataset_json(path: Path) -> bool:
    """A folder or zip with dataset.json at its root: a StyleGAN-format dataset."""
    if path.is_dir():
        return (path / DATASET_JSON).is_file()
    try:
        with zipfile.ZipFile(path) as zf:
            return DATASET_JSON in zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _first(items: list[str]) -> str:
    return f"{len(items)} (first: {items[0]})"


def parse_labels(raw: Any, names: list[str], where: str) -> tuple[np.ndarray | None, list[str] | None]:
    """dataset.json's content -> (labels in `names` order: int64 (N,) classes or float32 (N, K) attributes, names)."""
    if not isinstance(raw, dict) or "labels" not in raw:
        raise UserError(f"{where} is not a StyleGAN dataset.json (expected an object with a 'labels' list or null)")
    entries = raw["labels"]
    if entries is None:
        return None, None
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str)
                                                for e in entries):
        raise UserError(f"{where}: 'labels' must be a list of [file name, label] pairs (or null)")
    table = {name.replace("\\", "/"): label for name, label in entries}
    missing = [n for n in names if n not in table]
    if missing:
        raise UserError(f"{where} has no label for {_first(missing)} of the {len(names)} images; "
                        "label every image (or set \"labels\": null)")
    extra = sorted(set(table) - set(names))
    if extra:
        raise UserError(f"{where} labels {_first(extra)} files that are not images of the dataset; "
                        "remove those entries or add the files")
    values = [table[n] for n in names]
    own = raw.get("ganforge") if isinstance(raw.get("ganforge"), dict) else {}
    try:
        arr = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{where}: every label must be a class index or a list of numbers of one length") from None
    if arr.ndim == 1:
        if not np.all(arr == np.round(arr)) or arr.min() < 0:
            raise UserError(f"{where}: a single-number label must be a class index >= 0")
        labels, kind = arr.astype(np.int64), "class"
    elif arr.ndim == 2 and np.isin(arr, (0.0, 1.0)).all():
        if (arr.sum(1) == 1).all() and own.get("label_kind") != "attributes":
            labels, kind = arr.argmax(1).astype(np.int64), "class"  # one-hot rows: StyleGAN's class encoding
        else:
            labels, kind = arr.astype(np.float32), "attributes"
    else:
        raise UserError(f"{where}: labels are vectors of continuous values; ganforge conditions on class indices "
                        "or 0/1 attributes only")
    count = int(labels.max()) + 1 if kind == "class" else labels.shape[1]
    given = own.get("names")
    if isinstance(given, list) and len(given) >= count and own.get("label_kind", kind) == kind:
        return labels, [str(x) for x in given]
    return labels, [str(i) if kind == "class" else f"attr{i}" for i in range(count)]


class StyleGanFiles(ImageFilesSource):
    """Labels from dataset.json (by file name) instead of sub-folders; subclasses read a folder or a zip."""

    def dataset_json(self) -> bytes:
        raise NotImplementedError

    def file_labels(self, names: list[str]) -> tuple[np.ndarray | None, list[str] | None]:
        where = f"{self.path}/{DATASET_JSON}" if self.path.is_dir() else f"{self.path}:{DATASET_JSON}"
        try:
            raw = json.loads(self.dataset_json())
        except (ValueError, UnicodeDecodeError) as e:
            raise UserError(f"{where} is not valid JSON ({' '.join(str(e).split())[:100]})") from None
        return parse_labels(raw, names, where)


@SOURCES.register("stylegan-folder")
class StyleGanFolderSource(StyleGanFiles, FolderSource):
    """A folder in StyleGAN2-ADA/StyleGAN3 format (dataset_tool.py --dest=FOLDER, or images + dataset.json)."""

    kind = "stylegan-folder"

    def dataset_json(self) -> bytes:
        try:
            return (self.path / DATASET_JSON).read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {self.path / DATASET_JSON} ({e.strerror or e})") from None

    def cache_identity(self) -> str:
        return f"{super().cache_identity()}:{hashlib.sha256(self.dataset_json()).hexdigest()}"


@SOURCES.register("stylegan-zip")
class StyleGanZipSource(StyleGanFiles, ZipSource):
    """A .zip in StyleGAN2-ADA/StyleGAN3 format (dataset_tool.py --dest=FILE.zip)."""

    kind = "stylegan-zip"

    def dataset_json(self) -> bytes:
        with self._zip() as zf:
            return zf.read(DATASET_JSON)
