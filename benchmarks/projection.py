"""Projection on real images: how close `ganforge project` gets to held-out Fashion-MNIST test images, against the
baseline of the nearest of many random samples of the same generator, and how long it takes on the CPU.

Rows: projection (batched), the nearest of --pool random samples (by pixel MSE), and the generator's own samples
projected back (PSNR only: they are reachable exactly, so this measures the optimiser, not the generator). Columns:
pixel MSE in [-1, 1] units, PSNR (peak-to-peak 2), the feature distance of the projection loss (the run's domain CNN,
LPIPS-style), seconds per image: wall clock, and the process's CPU time (all threads; what a shared machine's load
does not inflate). Timing: all --n targets in one batch vs --serial targets one call each.

    python benchmarks/projection.py runs/demo [--n 100] [--pool 10000] [--serial 10] [--figure docs/img/x.png]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from ganforge.data import load_dataset
from ganforge.data import transforms as T
from ganforge.generate import load_generator
from ganforge.images import save_grid
from ganforge.latent.perceptual import ProjectionLoss, build_network, default_network_name
from ganforge.latent.project import DEFAULT_RESTARTS, DEFAULT_STEPS, project
from ganforge.models.sampling import sample


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return 10.0 * torch.log10(4.0 / mse.clamp_min(1e-12))


def mse_of(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(1)


@torch.no_grad()
def nearest(targets: torch.Tensor, pool: torch.Tensor, chunk: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target, the pool image with the lowest pixel MSE and that MSE."""
    best, idx = torch.full((len(targets),), math.inf), torch.zeros(len(targets), dtype=torch.long)
    t = targets.flatten(1)
    for i in range(0, len(pool), chunk):
        p = pool[i : i + chunk].flatten(1)
        d = (t.square().sum(1, keepdim=True) - 2 * t @ p.T + p.square().sum(1)) / t.shape[1]
        m, j = d.min(1)
        better = m < best
        best[better], idx[better] = m[better], j[better] + i
    return pool[idx], mse_of(targets, pool[idx])


@torch.no_grad()
def feature_distance(loss: ProjectionLoss, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return loss(a, b, loss.target_features(b))["feature"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=100, help="held-out test images (and own samples)")
    ap.add_argument("--pool", type=int, default=10000, help="random samples for the nearest-sample baseline")
    ap.add_argument("--serial", type=int, default=10, help="targets timed one call each")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--restarts", type=int, default=DEFAULT_RESTARTS)
    ap.add_argument("--feature-weight", type=float, default=ProjectionLoss.feature_weight)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target: 2 cores)")
    ap.add_argument("--figure", help="targets | reconstructions | nearest random sample, 10 columns")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    G, cfg = load_generator(a.run_dir)
    res, ch = int(cfg["data"]["resolution"]), int(cfg["data"]["channels"])
    test = load_dataset("fashion-mnist:test", res, ch)  # never seen in training (the run trains on :train)
    pick = np.linspace(0, len(test.images) - 1, a.n).astype(int)
    targets = T.to_unit_range(torch.from_numpy(np.ascontiguousarray(test.images[pick])).permute(0, 3, 1, 2))
    network = default_network_name(cfg)
    loss = ProjectionLoss(build_network(network), feature_weight=a.feature_weight)
    kw = {"steps": a.steps, "restarts": a.restarts, "loss": loss}

    t0, c0 = time.perf_counter(), time.process_time()
    p = project(G, targets, **kw)
    batched = ((time.perf_counter() - t0) / a.n, (time.process_time() - c0) / a.n)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(a.serial):
        project(G, targets[i : i + 1], **kw)
    serial = ((time.perf_counter() - t0) / max(1, a.serial), (time.process_time() - c0) / max(1, a.serial))

    pool = sample(G, a.pool, seed=1)
    near, near_mse = nearest(targets, pool)
    proj_mse = mse_of(p.images, targets)
    own = sample(G, a.n, seed=7)
    own_p = project(G, own, **kw)
    own_mse = mse_of(own_p.images, own)

    rows = [
        ("projection", proj_mse, feature_distance(loss, p.images, targets), f"{batched[0]:.2f} batched, "
         f"{serial[0]:.2f} one at a time (CPU time: {batched[1]:.2f}, {serial[1]:.2f})"),
        (f"nearest of {a.pool:,} random samples", near_mse, feature_distance(loss, near, targets), ""),
        ("own samples, projected back", own_mse, feature_distance(loss, own_p.images, own), ""),
    ]
    print(f"run {a.run_dir} ({cfg['model']['name']}, {res}px), {a.n} Fashion-MNIST test images, steps {a.steps}, "
          f"restarts {a.restarts}, loss: pixel MSE + {a.feature_weight:g} x {network}, {a.threads} CPU threads")
    print("| | pixel MSE | PSNR (dB) | feature distance | s / image (CPU) |")
    print("|---|---|---|---|---|")
    for name, m, f, s in rows:
        print(f"| {name} | {m.mean():.4f} | {psnr(m).mean():.1f} | {f.mean():.3f} | {s} |")
    print(f"projection closer than the nearest random sample (pixel MSE) on {int((proj_mse < near_mse).sum())} of "
          f"{a.n} test images")
    if a.figure:
        k = min(10, a.n)
        grid = torch.cat([targets[:k], p.images[:k], near[:k]])
        Path(a.figure).parent.mkdir(parents=True, exist_ok=True)
        print(f"figure: {save_grid(grid, Path(a.figure), nrow=k, upscale=3)}")


if __name__ == "__main__":
    main()
