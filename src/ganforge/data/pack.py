"""`ganforge data pack`: any data source as a StyleGAN2-ADA / StyleGAN3 dataset zip, so data prepared here trains
there unchanged (and here too: the zip is a source, data/sources/stylegan.py).

The layout is NVlabs' `dataset_tool.py` output: `00000/img00000000.png, ...` (1000 images a folder, PNG, mode L or
RGB, all one size) and `dataset.json` = {"labels": [[name, class index or 0/1 attribute list], ...] or null}, plus
{"ganforge": {"label_kind", "names", ...}}, which their loader ignores, so names survive the round trip. Options
follow dataset_tool's: `--resolution R` (default: the images' own size, which must then be one square size),
`--crop center` (largest centred square, then resized) or `center-wide` (a centred 4:3 landscape crop resized to R
wide, on a black R x R canvas: their LSUN-cars recipe), and labels from the source (dataset.json, class folders,
a dataset's classes), from sub-folders (`from-folders`) or none. Resizing is ganforge's own (antialiased bicubic,
data/transforms.py), so a packed zip read back at R gives exactly the images ganforge reads from the source at R.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.data import transforms as T
from ganforge.data.sources import make_source
from ganforge.data.sources.base import prepare
from ganforge.data.sources.folder import ImageFilesSource, auto_labels
from ganforge.data.sources.stylegan import DATASET_JSON
from ganforge.errors import UserError
from ganforge.fileio import atomic_write_file
from ganforge.images import to_pil

CROPS = ("center", "center-wide")
LABELS = ("auto", "from-folders", "none")
WIDE = (4, 3)  # center-wide: width:height of the crop


def archive_name(i: int) -> str:
    """dataset_tool.py's member name of image i."""
    idx = f"{i:08d}"
    return f"{idx[:5]}/img{idx}.png"


def center_wide(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 CHW -> the centred 4:3 crop resized to `resolution` wide, centred on a black square canvas."""
    _, h, w = x.shape
    if w * WIDE[1] > h * WIDE[0]:  # wider than 4:3: crop the sides
        cw = round(h * WIDE[0] / WIDE[1])
        x = x[:, :, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:  # taller: crop top and bottom
        ch = round(w * WIDE[1] / WIDE[0])
        x = x[:, (h - ch) // 2 : (h - ch) // 2 + ch]
    height = resolution * WIDE[1] // WIDE[0]
    y = T.resize(x.unsqueeze(0), (height, resolution))[0]
    canvas = torch.zeros((x.shape[0], resolution, resolution), dtype=torch.uint8)
    top = (resolution - height) // 2
    canvas[:, top : top + height] = y
    return canvas


def _check(out: Path, resolution: int | None, crop: str, labels: str, overwrite: bool) -> None:
    if out.suffix.lower() != ".zip":
        raise UserError(f"--out {out}: write a .zip (StyleGAN's dataset archive), e.g. --out data.zip")
    if out.exists() and (out.is_dir() or not overwrite):
        raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
    if crop not in CROPS:
        raise UserError(f"--crop must be one of {', '.join(CROPS)}, got {crop!r}")
    if labels not in LABELS:
        raise UserError(f"--labels must be one of {', '.join(LABELS)}, got {labels!r}")
    if resolution is not None and not 4 <= resolution <= 4096:
        raise UserError(f"--resolution must be 4 to 4096 pixels, got {resolution}")


class _Packed:
    """What a source yields for packing: images one by one (`images`), then labels of the kept ones and names."""

    labels: np.ndarray | None = None
    names: list[str] | None = None
    kind: str | None = None


def _file_images(src: ImageFilesSource, resolution: int | None, crop: str, channels: int | None, labels: str,
                 strict: bool, done: _Packed) -> Iterator[np.ndarray]:
    """Native images of a folder/zip, cropped and resized one by one (memory stays bounded); at the end `done`
    holds the labels of the images kept (unreadable files are skipped, or an error with `strict`)."""
    names = src._checked_names()
    if labels == "from-folders":
        found, classes = auto_labels(names)
        if found is None:
            raise UserError(f"--labels from-folders: {src.path} has no class sub-folders (put each class's images in "
                            "a folder of its own, at least two)")
        all_labels: np.ndarray | None = np.asarray(found, np.int64)
    elif labels == "none":
        all_labels, classes = None, None
    else:
        all_labels, classes = src.file_labels(names)
    kept = []
    size = resolution
    for i, arr in src._iter_arrays(names, strict, f"packing {src.slug}"):
        if size is None:
            if crop == "center" and arr.shape[0] != arr.shape[1]:
                raise UserError(f"{src.where(names[i])} is {arr.shape[1]}x{arr.shape[0]}, not square; pass "
                                "--resolution R to crop and resize every image to R x R")
            size = max(arr.shape[:2]) if crop == "center-wide" else arr.shape[0]
        channels = channels or arr.shape[2]
        x = torch.from_numpy(arr).permute(2, 0, 1)
        if resolution is None and crop == "center" and tuple(arr.shape[:2]) != (size, size):
            raise UserError(f"{src.where(names[i])} is {arr.shape[1]}x{arr.shape[0]} but the first image is "
                            f"{size}x{size}; pass --resolution R to resize every image to R x R")
        kept.append(i)
        if crop == "center-wide":
            yield center_wide(T.to_channels(x, channels), size).permute(1, 2, 0).numpy()
        else:
            yield prepare(x.unsqueeze(0), size, channels)[0]
    if all_labels is not None:
        done.labels, done.names = all_labels[np.asarray(kept, np.int64)], classes
        done.kind = "attributes" if done.labels.ndim == 2 else "class"


def pack(
    source: str, out: str | Path, *, resolution: int | None = None, crop: str = "center", labels: str = "auto",
    channels: int | None = None, data_dir: str | None = None, strict: bool = False, overwrite: bool = False,
) -> dict[str, Any]:
    """Write `source` (a dataset name, folder or zip) as a StyleGAN dataset zip at `out`. Everything is checked and
    decoded before the zip appears (written atomically). Returns what was written."""
    out = Path(out)
    _check(out, resolution, crop, labels, overwrite)
    if channels not in (None, 1, 3):
        raise UserError(f"--channels must be 1 or 3, got {channels}")
    src = make_source(source, data_dir)
    done = _Packed()
    if isinstance(src, ImageFilesSource):
        images: Iterable[np.ndarray] = _file_images(src, resolution, crop, channels, labels, strict, done)
    else:
        if crop != "center" or labels == "from-folders":
            raise UserError(f"--crop {crop} and --labels from-folders need a folder or zip of images; {source} is a "
                            "dataset of one size with its own labels")
        info = src.info(strict)
        shape = info.get("shape") or info.get("max_shape")
        res = resolution or (shape[0] if shape and shape[0] == shape[1] else None)
        if res is None:
            raise UserError(f"{source}'s images are not square; pass --resolution R")
        raw = src.load(int(res), channels or int(info.get("channels") or shape[2]), strict)
        images = iter(raw.images)
        if labels != "none" and raw.labels is not None:
            done.labels, done.names = raw.labels, raw.classes
            done.kind = raw.label_kind or ("attributes" if raw.labels.ndim == 2 else "class")
    count, shape = _write_zip(out, images, done, source)
    return {"path": str(out), "images": count, "resolution": shape[0], "channels": shape[2], "labels": done.kind,
            "classes": done.names}


def _write_zip(out: Path, images: Iterable[np.ndarray], done: _Packed, source: str) -> tuple[int, tuple]:
    """Stream the images into the zip (atomically: nothing appears on an error), dataset.json last."""
    written: dict[str, Any] = {"count": 0, "shape": None}

    def write(tmp: str) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, arr in enumerate(images):
                buf = io.BytesIO()
                to_pil(arr).save(buf, format="PNG", compress_level=0, optimize=False)
                zf.writestr(archive_name(i), buf.getvalue())
                written["count"], written["shape"] = i + 1, arr.shape
            if not written["count"]:
                raise UserError(f"{source} has no images to pack")
            entries = None
            if done.labels is not None:
                entries = [[archive_name(i), int(v) if done.kind == "class" else [float(a) for a in v]]
                           for i, v in enumerate(done.labels)]
            meta = {"labels": entries, "ganforge": {"label_kind": done.kind, "names": done.names, "source": source}}
            zf.writestr(DATASET_JSON, json.dumps(meta))

    atomic_write_file(out, write)
    return written["count"], written["shape"]
