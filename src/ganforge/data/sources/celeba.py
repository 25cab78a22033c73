"""CelebA (aligned and cropped faces, 178x218) with its 40 binary attributes and official splits.

Files, from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (hosted on Google Drive, which cannot be
downloaded from a script, so they are found on disk, never fetched):
- img_align_celeba/ (000001.jpg ... 202599.jpg) or the official img_align_celeba.zip holding that folder;
- list_attr_celeba.txt: the image count, the 40 attribute names, then "000001.jpg -1  1 ..." rows;
- list_eval_partition.txt: "000001.jpg 0" rows, 0 = train, 1 = valid, 2 = test.
They may lie directly in --data-dir (or <cache>/datasets/celeba/) or in the Drive folder's own layout
(Img/, Anno/, Eval/ sub-folders).

Crops, boxes as (top, left, size) in the 178 x 218 (width x height) aligned image:
- "178" (default): (20, 0, 178), the largest centred square, what torchvision's CenterCrop(178) gives;
  the whole face plus hair and background.
- "140": (39, 19, 140), the centred 140 x 140 box that tensorpack's DCGAN-CelebA (--crop-size 140,
  imgaug.CenterCrop: int((218 - 140) / 2) = 39, int((178 - 140) / 2) = 19) and torchvision
  CenterCrop(140) pipelines (e.g. NCSN, many GAN repositories) use: the face fills the frame.
- "108": (55, 35, 108), DCGAN-tensorflow's center_crop(108) (round((218 - 108) / 2) = 55,
  round((178 - 108) / 2) = 35), also used by BEGAN-style code: tighter still.
The crop is followed by the shared antialiased resize (data/transforms.py) to the requested size.
Images of another size (a resized copy of the set) get the same box scaled to their size.

Labels are the attributes as multi-hot float32 (N, 40) in {0, 1}, the order of the attribute file
(or of `attributes=`, which picks and orders a subset after the cache, so choosing other attributes
never decodes the images again).
"""

from __future__ import annotations

import contextlib
import posixpath
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.config import Key, extend_schema
from ganforge.data.paths import datasets_dir
from ganforge.data.sources.base import SOURCES, DataWarning, Decoded, Sink, SkippedFileWarning, Source, prepare
from ganforge.data.sources.folder import (
    BATCH,
    MAX_WARNINGS,
    BadImage,
    FolderSource,
    ImageFilesSource,
    ZipSource,
    decode_image,
)
from ganforge.errors import UserError

# CelebA's options (load_dataset keywords of the same names), declared here with the code that reads them
extend_schema("data", {
    "attributes": Key(None, str, "CelebA: comma list of attributes to condition on, e.g. Male,Smiling", nullable=True),
    "crop": Key(None, str, "CelebA face crop before resizing: 178 (center, default), 140 or 108",
                choices=("178", "140", "108"), nullable=True),
}, owner="celeba")

CELEBA_PAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
IMG_FOLDER = "img_align_celeba"
IMG_ZIP = "img_align_celeba.zip"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
# the sub-folder of the official Google Drive folder that holds each file
OFFICIAL_SUBFOLDER = {IMG_FOLDER: "Img", IMG_ZIP: "Img", ATTR_FILE: "Anno", PARTITION_FILE: "Eval"}

SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
SPLIT_ALIASES = {"val": "valid", "validation": "valid"}
ALIGNED_HW = (218, 178)  # height, width of every image in img_align_celeba
CROPS: dict[str, tuple[int, int, int]] = {"178": (20, 0, 178), "140": (39, 19, 140), "108": (55, 35, 108)}
DEFAULT_CROP = "178"


def _one_line(x: object) -> str:
    return " ".join(str(x).split()) or type(x).__name__


# ------------------------------------------------------------------------------------ annotations


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from e
    return text.splitlines()


def read_attribute_names(path: Path) -> list[str]:
    """The attribute names (line 2) without reading the 200k rows: enough to check `attributes=` early."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            f.readline()
            names = f.readline().split()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror or e})") from e
    if not names:
        raise UserError(f"{path} has no attribute names on line 2; use the official {ATTR_FILE}")
    return names


def read_attributes(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """(attribute names, image names, int8 (N, K) values in {-1, 1}) from list_attr_celeba.txt.

    Rows are split on any run of spaces (the official file aligns columns with several). A row with
    the wrong number of values, a value other than -1/1, or a count that disagrees with line 1 is an
    error naming the file and line: a truncated or edited file must not silently shift labels.
    """
    lines = _lines(path)
    if len(lines) < 2:
        raise UserError(f"{path} is too short: expected the image count, then the attribute names")
    try:
        declared = int(lines[0].strip())
    except ValueError:
        raise UserError(f"{path} line 1 should be the image count, found {lines[0].strip()[:40]!r}") from None
    names = lines[1].split()
    k = len(names)
    if not k:
        raise UserError(f"{path} has no attribute names on line 2; use the official {ATTR_FILE}")
    images: list[str] = []
    flat: list[str] = []
    allowed = {"1", "-1"}
    for i, line in enumerate(lines[2:], start=3):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != k + 1 or not allowed.issuperset(tok[1:]):
            raise UserError(
                f"{path} line {i} is malformed: expected an image name and {k} values of -1 or 1, "
                f"found {line.strip()[:60]!r}"
            )
        images.append(tok[0])
        flat.extend(tok[1:])
    if declared != len(images):
        raise UserError(
            f"{path} says {declared} images on line 1 but has {len(images)} rows; it is truncated or edited, "
            "use the official file"
        )
    values = np.array(flat, dtype=np.int8).reshape(len(images), k) if images else np.zeros((0, k), np.int8)
    return names, images, values


def read_partition(path: Path) -> tuple[list[str], np.ndarray]:
    """(image names, int8 split codes 0/1/2) from list_eval_partition.txt, in file order."""
    names: list[str] = []
    codes: list[int] = []
    for i, line in enumerate(_lines(path), start=1):
        tok = line.split()
        if not tok:
            continue
        if len(tok) != 2 or tok[1] not in ("0", "1", "2"):
            raise UserError(
                f"{path} line {i} is malformed: expected an image name and 0, 1 or 2, found {line.strip()[:60]!r}"
            )
        names.append(tok[0])
        codes.append(int(tok[1]))
    if not names:
        raise UserError(f"{path} lists no images; use the official {PARTITION_FILE}")
    return names, np.asarray(codes, np.int8)


# ------------------------------------------------------------------------------------------ crops


def crop_box(h: int, w: int, crop: str) -> tuple[int, int, int]:
    """(top, left, size) of `crop` in an h x w image: the box as defined on 218 x 178, scaled if needed."""
    top, left, size = CROPS[crop]
    if (h, w) == ALIGNED_HW:
        return top, left, size
    sy, sx = h / ALIGNED_HW[0], w / ALIGNED_HW[1]
    s = max(1, min(round(size * min(sy, sx)), h, w))
    return min(max(0, round(top * sy)), h - s), min(max(0, round(left * sx)), w - s), s


def normalize_crop(crop: str | int | None) -> str:
    key = DEFAULT_CROP if crop is None else str(crop).strip().lower()
    if key not in CROPS:
        raise UserError(f"unknown CelebA crop {crop!r}; use one of {', '.join(CROPS)} (default {DEFAULT_CROP})")
    return key


# ----------------------------------------------------------------------------------------- source


@dataclass(frozen=True)
class CelebaFiles:
    images: Path  # the img_align_celeba folder or img_align_celeba.zip
    attributes: Path
    partition: Path


def _find(folder: Path, name: str, want_dir: bool = False) -> Path | None:
    for p in (folder / name, folder / OFFICIAL_SUBFOLDER[name] / name):
        if p.is_dir() if want_dir else p.is_file():
            return p
    return None


def find_files(folder: Path) -> tuple[CelebaFiles | None, list[str]]:
    """The CelebA files in `folder` (or its Img/, Anno/, Eval/ sub-folders), or None and what is missing."""
    images = _find(folder, IMG_FOLDER, want_dir=True) or _find(folder, IMG_ZIP)
    attributes = _find(folder, ATTR_FILE)
    partition = _find(folder, PARTITION_FILE)
    missing: list[str] = []
    if images is None:
        missing.append(f"{IMG_FOLDER}/ (or {IMG_ZIP})")
    if attributes is None:
        missing.append(ATTR_FILE)
    if partition is None:
        missing.append(PARTITION_FILE)
    if images is None or attributes is None or partition is None:
        return None, missing
    return CelebaFiles(images, attributes, partition), []


@SOURCES.register("celeba")
class CelebaSource(Source):
    """One split of CelebA (train 162770, valid 19867, test 19962 images, or all 202599)."""

    named = True
    splits = ("train", "valid", "test", "all")
    options = ("attributes", "crop")

    def __init__(
        self,
        split: str = "train",
        data_dir: str | None = None,
        attributes: Sequence[str] | None = None,
        crop: str | int | None = None,
    ) -> None:
        split = SPLIT_ALIASES.get(split, split)
        if split not in self.splits:
            raise UserError(f"celeba has no split {split!r}; use celeba:train, celeba:valid, celeba:test or celeba:all")
        if isinstance(attributes, str):  # "Male,Smiling" from a command line or a config file
            attributes = [a.strip() for a in attributes.split(",") if a.strip()]
        if attributes is not None:
            attributes = list(attributes)
            if not attributes:
                raise UserError("attributes is empty; name at least one CelebA attribute, or leave it unset for all 40")
            dup = sorted({a for a in attributes if attributes.count(a) > 1})
            if dup:
                raise UserError(f"attribute {dup[0]} is listed twice in attributes; list each attribute once")
        self.split = split
        self.crop = normalize_crop(crop)
        self.attributes: list[str] | None = attributes
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.spec = f"celeba:{split}"
        self._files: CelebaFiles | None = None
        self._reader: ImageFilesSource | None = None

    @classmethod
    def from_spec(
        cls,
        path: str | None,
        split: str | None,
        data_dir: str | None,
        attributes: Sequence[str] | None = None,
        crop: str | int | None = None,
    ) -> CelebaSource:
        return cls(split or "train", data_dir, attributes=attributes, crop=crop)

    @property
    def slug(self) -> str:
        return f"celeba-{self.split}-crop{self.crop}"

    @property
    def download_dir(self) -> Path:
        return datasets_dir() / "celeba"

    # ------------------------------------------------------------------------------------- files

    def files(self) -> CelebaFiles:
        """The files, from --data-dir or the cache folder; one UserError listing all that is missing."""
        if self._files is None:
            self._files = self._locate()
            self._check_attributes(read_attribute_names(self._files.attributes))
        return self._files

    def _locate(self) -> CelebaFiles:
        found, missing = find_files(self.data_dir) if self.data_dir else (None, [])
        if found:
            return found
        cached, cache_missing = find_files(self.download_dir)
        if cached:
            if self.data_dir:
                warnings.warn(
                    f"CelebA is incomplete in {self.data_dir} (missing {', '.join(missing)}); using the copy in "
                    f"{self.download_dir}",
                    DataWarning,
                    stacklevel=3,
                )
            return cached
        where = self.data_dir or self.download_dir
        what = missing if self.data_dir else cache_missing
        raise UserError(
            f"CelebA files missing in {where}: {', '.join(what)}; download them from {CELEBA_PAGE} "
            f"(Align&Cropped Images, Anno/{ATTR_FILE}, Eval/{PARTITION_FILE}) and put them in {where}"
            f"{'' if self.data_dir else ' or pass --data-dir DIR'}"
        )

    def _check_attributes(self, names: list[str]) -> None:
        if self.attributes is None:
            return
        unknown = [a for a in self.attributes if a not in names]
        if unknown:
            raise UserError(
                f"unknown CelebA attribute{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"choose from {', '.join(names)}"
            )

    def reader(self) -> ImageFilesSource:
        """The folder or zip source that opens and decodes the image files (shared skip-and-warn rules)."""
        if self._reader is None:
            images = self.files().images
            self._reader = FolderSource(images, labels="none") if images.is_dir() else ZipSource(images, labels="none")
        return self._reader

    def _available(self) -> dict[str, str]:
        """Image file name ("000001.jpg") -> its name inside the folder or zip (the zip adds a prefix)."""
        out: dict[str, str] = {}
        for name in self.reader().names():
            out.setdefault(posixpath.basename(name), name)
        return out

    def _selection(self) -> tuple[list[str], list[str], np.ndarray]:
        """(image names of this split in file order, attribute names, their int8 (N, K) values)."""
        files = self.files()
        names, codes = read_partition(files.partition)
        chosen = (
            names
            if self.split == "all"
            else [n for n, c in zip(names, codes, strict=True) if c == SPLIT_CODES[self.split]]
        )
        attr_names, attr_images, values = read_attributes(files.attributes)
        row = {n: i for i, n in enumerate(attr_images)}
        absent = [n for n in chosen if n not in row]
        if absent:
            raise UserError(
                f"{files.attributes} has no row for {absent[0]} ({len(absent)} images of {files.partition} lack "
                "one); use the attribute and partition files of the same CelebA release"
            )
        return chosen, attr_names, values[[row[n] for n in chosen]]

    def cache_identity(self) -> str:
        files = self.files()
        parts = [f"celeba:{self.split}:crop={self.crop}"]
        for p in (files.attributes, files.partition):
            st = p.stat()
            parts.append(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}")
        parts.append(self.reader().cache_identity())
        return "|".join(parts)

    # ------------------------------------------------------------------------------------ decode

    def _present(self, chosen: list[str], strict: bool) -> tuple[list[int], list[str], list[str]]:
        """(indices into `chosen` with a file, their names in the folder/zip, "where: reason" of the rest)."""
        available = self._available()
        idx = [i for i, n in enumerate(chosen) if n in available]
        missing = [n for n in chosen if n not in available]
        where = self.files().images
        if missing:
            partition = self.files().partition
            if strict:
                raise UserError(
                    f"{missing[0]} (listed in {partition}) is not in {where}; {len(missing)} images are missing, "
                    "restore them (without strict mode missing images are skipped)"
                )
            warnings.warn(
                f"{len(missing)} of {len(chosen)} images listed in {partition} are not in {where} "
                f"(first: {missing[0]}); they are left out",
                SkippedFileWarning,
                stacklevel=3,
            )
        if not idx:
            raise UserError(f"none of the {len(chosen)} images of {self.spec} is in {where}; check the folder or zip")
        return idx, [available[chosen[i]] for i in idx], [f"{where}/{n}: not found" for n in missing]

    def _crop(self, arr: np.ndarray) -> np.ndarray:
        top, left, size = crop_box(arr.shape[0], arr.shape[1], self.crop)
        return arr[top : top + size, left : left + size]

    def decode_into(self, sink: Sink, resolution: int, channels: int, strict: bool) -> Decoded:
        chosen, attr_names, values = self._selection()
        idx, rel, skipped = self._present(chosen, strict)
        reader = self.reader()
        kept: list[int] = []
        batch: list[np.ndarray] = []

        def flush() -> None:
            if batch:
                x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
                sink.append(prepare(x, resolution, channels))
                batch.clear()

        for j, arr in reader._iter_arrays(rel, strict, f"decoding {self.slug}"):
            crop = np.ascontiguousarray(self._crop(arr))
            if batch and (crop.shape != batch[0].shape or len(batch) == BATCH):  # same-size crops resize together
                flush()
            batch.append(crop)
            kept.append(idx[j])
        flush()
        labels = (values[kept] > 0).astype(np.float32)
        return Decoded(labels, attr_names, skipped + list(reader._skipped), total=len(chosen), label_kind="attributes")

    def select_labels(
        self, labels: np.ndarray | None, classes: list[str] | None
    ) -> tuple[np.ndarray | None, list[str] | None]:
        if self.attributes is None or labels is None or classes is None:
            return labels, classes
        self._check_attributes(classes)
        cols = [classes.index(a) for a in self.attributes]
        return np.ascontiguousarray(np.asarray(labels)[:, cols]), list(self.attributes)

    # -------------------------------------------------------------------------------------- info

    def _first_shape(self, rel: list[str]) -> tuple[int, int, int] | None:
        """Native (H, W, C) of the first readable image; decoding all 200k to check sizes would take minutes."""
        reader = self.reader()
        with reader.opener() as open_name:
            for name in rel[:MAX_WARNINGS]:
                with contextlib.suppress(BadImage), open_name(name) as fp:
                    return tuple(decode_image(fp).shape)  # type: ignore[return-value]
        return None

    def info(self, strict: bool = False) -> dict[str, Any]:
        """Counts per split, native shape, crop, attribute names and positive rates (files are not decoded)."""
        files = self.files()
        _, codes = read_partition(files.partition)
        chosen, attr_names, values = self._selection()
        with warnings.catch_warnings():  # count missing files here instead of warning about them
            warnings.simplefilter("ignore", SkippedFileWarning)
            _, rel, skipped = self._present(chosen, strict)
        labels, names = self.select_labels((values > 0).astype(np.float32), attr_names)
        assert labels is not None and names is not None
        rates = labels.mean(axis=0) if len(labels) else np.zeros(len(names))
        top, left, size = CROPS[self.crop]
        return {
            "spec": self.spec,
            "kind": "celeba",
            "count": len(chosen),
            "split_counts": {s: int((codes == c).sum()) for s, c in SPLIT_CODES.items()},
            "shape": self._first_shape(rel),
            "crop": f"{size}x{size} at top {top}, left {left} of 178x218 (crop={self.crop})",
            "classes": names,
            "label_kind": "attributes",
            "attribute_positive_rates": {n: round(float(r), 4) for n, r in zip(names, rates, strict=True)},
            "files": [str(files.images), str(files.attributes), str(files.partition)],
            "skipped": len(skipped),  # images listed in the partition file but not found
        }
