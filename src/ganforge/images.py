"""Turning batches of [-1, 1] tensors into PNG files and grids (Pillow + NumPy, no torchvision)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ganforge.errors import UserError
from ganforge.fileio import atomic_write_bytes


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """NCHW float in [-1, 1] -> NHWC uint8, rounding to nearest like the inverse of x/127.5 - 1."""
    x = x.detach().float().cpu()
    x = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float [-1, 1] images rounded to the 256 levels a PNG can hold, still float [-1, 1]: exactly the values
    `to_uint8` then `u8 / 127.5 - 1` give, so metrics of generated images equal those of their saved PNGs."""
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).div(127.5).sub(1.0)


def make_grid(x: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 0) -> np.ndarray:
    """Tile N images into one HWC uint8 array, `nrow` images per row (default: square-ish)."""
    imgs = to_uint8(x)
    n, h, w, c = imgs.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    grid = np.full((ncol * (h + padding) + padding, nrow * (w + padding) + padding, c), pad_value, np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        y0, x0 = padding + r * (h + padding), padding + q * (w + padding)
        grid[y0 : y0 + h, x0 : x0 + w] = imgs[i]
    return grid


def check_new_file(path: Path, overwrite: bool = False, own_dir: Path | None = None) -> Path:
    """Refuse to replace a user's file: a target that exists is only rewritten inside `own_dir` (the run
    directory's own outputs) or with `overwrite`."""
    path = Path(path)
    if path.exists() and not overwrite:
        # only a PNG that sits directly in the run directory is the run's own (re-creatable) picture;
        # config.yaml, metrics, checkpoints are records and never replaced by an image
        inside = own_dir is not None and path.resolve().parent == Path(own_dir).resolve() and path.suffix == ".png"
        if not inside:
            raise UserError(f"{path} already exists; choose another path or pass --overwrite")
    if own_dir is not None and path.resolve().parent == Path(own_dir).resolve() and path.suffix != ".png":
        raise UserError(f"{path} would sit among the run's own records; give a .png path")
    if path.exists() and path.is_dir():
        raise UserError(f"{path} is a folder; give a .png file path")
    return path


def to_pil(arr: np.ndarray, upscale: int = 1) -> Image.Image:
    """An HWC uint8 array as a Pillow image ("L" for one channel, "RGB" for three), nearest-neighbour upscaled."""
    if upscale > 1:
        arr = arr.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, "L" if arr.shape[-1] == 1 else "RGB")


def png_bytes(arr: np.ndarray) -> bytes:
    """An HWC uint8 array encoded as PNG."""
    buf = io.BytesIO()
    to_pil(arr).save(buf, format="PNG")
    return buf.getvalue()


def save_png(arr: np.ndarray, path: Path) -> Path:
    """Save an HWC uint8 array atomically (temp file + rename)."""
    atomic_write_bytes(Path(path), png_bytes(arr))
    return Path(path)


def save_grid(x: torch.Tensor, path: Path, nrow: int | None = None, upscale: int = 1) -> Path:
    grid = make_grid(x, nrow)
    if upscale > 1:
        grid = grid.repeat(upscale, axis=0).repeat(upscale, axis=1)
    return save_png(grid, path)


def save_images(
    x: torch.Tensor, out_dir: Path, start: int = 0, prefix: str = "", overwrite: bool = False
) -> list[Path]:
    """One PNG per image: out_dir/{prefix}{index:06d}.png. Existing files are never replaced unless
    `overwrite`: the check runs before anything is written."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder")
    paths = [out_dir / f"{prefix}{start + i:06d}.png" for i in range(len(x))]
    clash = [p for p in paths if p.exists()]
    if clash and not overwrite:
        raise UserError(f"{clash[0]} already exists ({len(clash)} of the files would be replaced); "
                        "choose an empty --out folder or pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    for p, arr in zip(paths, to_uint8(x), strict=True):
        to_pil(arr).save(p)
    return paths
