"""Target images for projection, converted exactly as the run's training data was.

A photo of another size or mode must reach the generator's pixel space the way its training images did, or the
projection fits a differently filtered picture: so decoding is the data folder source's (`decode_image`: EXIF
orientation, alpha onto white, 16-bit gray scaled) and resizing its `prepare` (centre square crop, antialiased
bicubic, BT.601 luma), then uint8 -> [-1, 1] as the data pipeline maps it. Bad input is refused before any work.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ganforge.data import transforms as T
from ganforge.data.sources.base import prepare, read_bytes
from ganforge.data.sources.folder import BadImage, decode_image
from ganforge.errors import UserError

MAX_TARGET_PIXELS = 40_000_000  # a 40-megapixel photo still decodes in about a second; more is refused unread
MAX_TARGET_BYTES = 64 << 20


def _name(source: str | Path | bytes, i: int) -> str:
    return f"upload #{i + 1}" if isinstance(source, bytes) else str(source)


def _decode(data: bytes, name: str) -> torch.Tensor:
    """uint8 (1, C, H, W) of one image file's bytes; the pixel count is checked from the header before decoding."""
    if not data:
        raise UserError(f"target {name} is empty (0 bytes); give a PNG, JPEG, WebP or BMP image")
    if len(data) > MAX_TARGET_BYTES:
        raise UserError(f"target {name} is {len(data) >> 20} MiB; at most {MAX_TARGET_BYTES >> 20} MiB per image")
    try:
        with Image.open(io.BytesIO(data)) as img:
            w, h = img.size
    except Image.DecompressionBombError:
        w = h = MAX_TARGET_PIXELS  # Pillow's own limit tripped on the header: too many pixels either way
    except Exception:
        w = h = 0  # decode_image below says what is wrong
    if w * h > MAX_TARGET_PIXELS:
        raise UserError(f"target {name}: too many pixels ({w}x{h}), possibly a decompression bomb; at most "
                        f"{MAX_TARGET_PIXELS:,} pixels")
    try:
        arr = decode_image(io.BytesIO(data))
    except BadImage as e:
        raise UserError(f"target {name} is not a readable image ({e}); give a PNG, JPEG, WebP or BMP image") from None
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)


def convert_target(x: torch.Tensor, resolution: int, channels: int) -> tuple[torch.Tensor, str | None]:
    """uint8 (1, C, H, W) -> float (1, channels, resolution, resolution) in [-1, 1] through the data sources'
    `prepare`, and a note saying what changed (None when the image already had the run's size and mode)."""
    c, h, w = x.shape[1:]
    out = torch.from_numpy(prepare(x, resolution, channels)).permute(0, 3, 1, 2)
    steps = []
    if h != w:
        steps.append(f"cropped {w}x{h} to the centre square {min(h, w)}x{min(h, w)}")
    if min(h, w) != resolution:
        steps.append(f"resized {min(h, w)}x{min(h, w)} -> {resolution}x{resolution}")
    if c != channels:
        mode = {1: "L", 3: "RGB"}
        steps.append(f"converted {mode.get(c, c)} -> {mode.get(channels, channels)}")
    return T.to_unit_range(out), (", ".join(steps) if steps else None)


def load_targets(sources: Sequence[str | Path | bytes], cfg: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """(N, C, H, W) targets in [-1, 1] at the run's resolution and channels, and one note per converted image
    ("a.jpg: resized 64x64 -> 32x32, converted RGB -> L"). Every source is checked before the first is used, so a
    bad one fails the whole call with a one-line UserError (not an image, empty, too many pixels)."""
    if not sources:
        raise UserError("give at least one target image (--target IMG)")
    resolution, channels = int(cfg["data"]["resolution"]), int(cfg["data"]["channels"])
    images, notes = [], []
    for i, src in enumerate(sources):
        name = _name(src, i)
        if isinstance(src, bytes):
            data = src
        else:
            path = Path(src)
            if path.is_dir():
                raise UserError(f"target {path} is a folder; give image files")
            if path.is_file() and path.stat().st_size > MAX_TARGET_BYTES:
                raise UserError(f"target {path} is over {MAX_TARGET_BYTES >> 20} MiB; give a smaller image")
            data = read_bytes(path, "give an existing image file")
        x, note = convert_target(_decode(data, name), resolution, channels)
        images.append(x)
        if note:
            notes.append(f"{name}: {note}")
    return torch.cat(images), notes
