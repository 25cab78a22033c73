"""Evaluation speed: ganforge's feature extraction + FID vs. torchmetrics with the same network, and the
cost of a second evaluation against a cached reference, in one run.

(1) Throughput: N real Fashion-MNIST test images against N train images through the same feature
    network (ganforge's `fashion-mnist-cnn`), ganforge `extract` + `fid_from_features` vs. torchmetrics
    `FrechetInceptionDistance(feature=...)` update/compute; images/s over both sides, same threads.
(2) Cache: `evaluate_run` of a (DCGAN) run = reference features and statistics of the whole training
    set (60k) + 10k generated images embedded + FID. The second evaluation reads the reference (features,
    mean, covariance) from the stats cache; the table shows its time as a ratio of the first.

    python benchmarks/metrics_speed.py [--n 10000] [--network fashion-mnist-cnn]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ganforge.data import load_dataset
from ganforge.evaluation import evaluate_run
from ganforge.metrics.evaluate import dataset_batches
from ganforge.metrics.features import build_extractor, extract
from ganforge.metrics.fid import fid_from_features
from ganforge.training.launch import train as train_run


def ours(net, real: np.ndarray, fake: np.ndarray) -> float:
    fr = extract(net, dataset_batches(real, np.arange(len(real))), progress=False)["features"]
    ff = extract(net, dataset_batches(fake, np.arange(len(fake))), progress=False)["features"]
    return fid_from_features(fr, ff)


def theirs(net, real: np.ndarray, fake: np.ndarray) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            self.num_features = net.feature_dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)["features"]

    metric = FrechetInceptionDistance(feature=Wrapped())
    with torch.no_grad():
        for arr, is_real in ((real, True), (fake, False)):
            for b in dataset_batches(arr, np.arange(len(arr))):
                metric.update(b, real=is_real)
        return float(metric.compute())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--network", default="fashion-mnist-cnn")
    a = ap.parse_args()
    net = build_extractor(a.network)
    test = load_dataset("fashion-mnist:test", 28, 1).images[: a.n]
    train = load_dataset("fashion-mnist", 28, 1).images[: a.n]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, network {a.network}, N={a.n} per side")

    rows = []
    for name, fn in (("ganforge", ours), ("torchmetrics", theirs), ("ganforge", ours), ("torchmetrics", theirs)):
        t = time.perf_counter()
        fid = fn(net, test, train)
        rows.append((name, time.perf_counter() - t, fid))
    best = {n: min(r[1] for r in rows if r[0] == n) for n in ("ganforge", "torchmetrics")}
    fids = {r[0]: r[2] for r in rows}
    print("| implementation | images/s (2N images, best of 2) | FID |")
    print("|---|---|---|")
    for n in best:
        print(f"| {n} | {2 * a.n / best[n]:.0f} | {fids[n]:.4f} |")
    print(f"speed ratio ganforge/torchmetrics: {best['torchmetrics'] / best['ganforge']:.2f}")

    # (2) first vs second `evaluate_run` of a run (FID of 10k samples vs the whole training set). The run is
    # trained for one step first in the same (fresh) cache, as a real run would have decoded the data.
    os.environ["GANFORGE_CACHE"] = tempfile.mkdtemp(prefix="ganforge-bench-")
    run_dir = Path(tempfile.mkdtemp(prefix="ganforge-bench-run-")) / "run"
    train_run("fashion_mnist_dcgan", ["train.steps=1", "train.tensorboard=false"], run_dir=run_dir, quiet=True)
    times = []
    for _ in range(2):
        t = time.perf_counter()
        m = evaluate_run(run_dir, metrics="fid", n=a.n, network=a.network, progress=False, log=False)
        times.append((time.perf_counter() - t, m["ref_cached"], m["n_ref"]))
    print("| evaluation (`evaluate_run`, FID) | reference | seconds |")
    print("|---|---|---|")
    for i, (s, cached, nref) in enumerate(times):
        print(f"| {'first' if i == 0 else 'second'} | {nref} images, {'cached' if cached else 'computed'} | {s:.2f} |")
    print(f"second / first: {times[1][0] / times[0][0]:.3f}")


if __name__ == "__main__":
    main()
