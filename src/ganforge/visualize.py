"""Looking, not only numbers: real-vs-generated grids and nearest training neighbours of samples.

A low FID can hide a generator that memorised its training set; the nearest-neighbour figure shows
each sample next to the training images closest to it in feature space, with the distances.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ganforge.data import load_dataset
from ganforge.generate import load_generator, sample
from ganforge.images import check_new_file, make_grid, save_png


def _label(arr: np.ndarray, text: str, height: int = 14) -> np.ndarray:
    """Put a caption strip above an HWC uint8 image (Pillow's built-in font: no font files needed)."""
    h, w, c = arr.shape
    strip = Image.new("L" if c == 1 else "RGB", (w, height), 255 if c == 1 else (255, 255, 255))
    ImageDraw.Draw(strip).text((3, 1), text, fill=0 if c == 1 else (0, 0, 0))
    s = np.asarray(strip)
    s = s[..., None] if c == 1 else s
    return np.concatenate([s, arr], axis=0)


def _real_batch(cfg: dict[str, Any], n: int, seed: int, source: str | None = None) -> tuple[torch.Tensor, Any]:
    d = cfg["data"]
    data = load_dataset(source or d["source"], d["resolution"], d["channels"], data_dir=d["data_dir"])
    idx = np.sort(np.random.default_rng(seed).choice(len(data.images), min(n, len(data.images)), replace=False))
    x = torch.from_numpy(np.asarray(data.images[idx])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, data


def compare_grid(run_dir: str | Path, out: str | Path | None = None, *, n: int = 64, seed: int = 0,
                 ema: bool = True, device: str = "cpu", upscale: int = 2, overwrite: bool = False) -> Path:
    """One PNG: n real training images (left) beside n generated images (right)."""
    out = check_new_file(Path(out) if out else Path(run_dir) / "compare-grid.png", overwrite, own_dir=Path(run_dir))
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    real, _ = _real_batch(cfg, n, seed)
    fake = sample(G, len(real), seed=seed)
    left, right = make_grid(real), make_grid(fake)
    if upscale > 1:
        left = left.repeat(upscale, 0).repeat(upscale, 1)
        right = right.repeat(upscale, 0).repeat(upscale, 1)
    left, right = _label(left, "real (training data)"), _label(right, "generated")
    gap = np.full((left.shape[0], 12, left.shape[2]), 255, np.uint8)
    return save_png(np.concatenate([left, gap, right], axis=1), out)


def nearest_neighbours(run_dir: str | Path, out: str | Path | None = None, *, n: int = 8, k: int = 5,
                       network: str | None = None, seed: int = 0, ema: bool = True, device: str = "cpu",
                       max_train: int | None = None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """For n samples, their k nearest training images in the feature space of `network`.

    Writes a PNG (each row: the sample, then its neighbours, nearest first) and returns the distances
    and, for scale, the median distance between a training image and its own nearest neighbour.
    """
    from ganforge.metrics.evaluate import build_network, default_network, reference_features, subset_indices
    from ganforge.metrics.features import extract

    out = check_new_file(Path(out) if out else Path(run_dir) / "nearest.png", overwrite, own_dir=Path(run_dir))
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    d = cfg["data"]
    net_name = network or default_network(d["source"])
    net = build_network(net_name)
    train, _ = reference_features(d["source"], net, resolution=d["resolution"], channels=d["channels"], n=max_train,
                                  data_dir=d["data_dir"], seed=0, device=device, progress=progress)
    data = load_dataset(d["source"], d["resolution"], d["channels"], data_dir=d["data_dir"])
    idx_all = subset_indices(len(data.images), len(data.images) if max_train is None else max_train, 0)
    fakes = sample(G, n, seed=seed)
    ff = extract(net, [fakes], device=device, progress=False)["features"]
    tf = torch.from_numpy(train["features"]).float()
    dist = torch.cdist(torch.from_numpy(ff).float(), tf)  # (n, N)
    dk, ik = dist.topk(k, largest=False)
    # scale: how close training images are to each other (a random 500 of them, excluding self)
    probe = torch.from_numpy(np.random.default_rng(seed).choice(len(tf), min(500, len(tf)), replace=False))
    self_d = torch.cdist(tf[probe], tf)
    self_d[torch.arange(len(probe)), probe] = float("inf")
    typical = float(self_d.min(dim=1).values.median())
    rows = []
    for i in range(n):
        neigh = (
            torch.from_numpy(np.asarray(data.images[idx_all[ik[i].numpy()]])).permute(0, 3, 1, 2).float() / 127.5 - 1
        )
        rows.append(torch.cat([fakes[i : i + 1], neigh]))
    grid = make_grid(torch.cat(rows), nrow=k + 1)
    grid = grid.repeat(2, 0).repeat(2, 1)
    grid = _label(grid, f"sample | {k} nearest training images ({net_name} features), nearest first")
    save_png(grid, out)
    return {"png": str(out), "network": net_name, "distances": dk.numpy().round(4).tolist(),
            "train_nn_median_distance": round(typical, 4)}
