"""Standing statistics: does recomputing G_ema's BatchNorm statistics from its own forward passes lower FID?

For each family (dcgan, mlp: the presets with BatchNorm generators) and seed, one run of `--steps` steps on the real
Fashion-MNIST training set (EMA on, as in the presets), then FID of `--n` G_ema samples against the whole training
set (fashion-mnist-cnn features, the default protocol: uint8, legacy resize) twice from the same checkpoint: with
BatchNorm statistics as copied from G (the old behaviour) and with standing statistics (models/standing.py). The
table gives the mean ± std over seeds of both and of the change; the default was chosen from it.

    nice python benchmarks/standing_stats.py [--steps 1500] [--seeds 0,1,2] [--n 10000] [--families dcgan,mlp]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {"dcgan": "fashion_mnist_dcgan", "mlp": "fashion_mnist_mlp"}


def copied_stats(G: torch.nn.Module, run: Path) -> torch.nn.Module:
    """A copy of G_ema with the BatchNorm statistics copied from G, as G_ema had them before standing statistics."""
    from ganforge.runs.rundir import RunDir

    old = copy.deepcopy(G)
    tensors = RunDir.open(run).latest().tensors
    old.load_state_dict({k: tensors["G." + k] if ("running_" in k or "num_batches" in k) else v
                         for k, v in G.state_dict().items()})
    return old


def fid_pair(run: Path, n: int) -> tuple[float, float]:
    """FID of the run's G_ema with BatchNorm statistics copied from G (the old behaviour) and with the standing ones
    its checkpoint stores (same samples, same cached reference, same protocol otherwise)."""
    from ganforge.generate import load_generator
    from ganforge.metrics.evaluate import evaluate_generator

    G, cfg = load_generator(run)  # standing statistics, as stored by training
    old = copied_stats(G, run)
    kw = {"metrics": "fid", "n": n, "network": "fashion-mnist-cnn", "progress": False, "ema": True}
    return (evaluate_generator(old, cfg, standing_stats=False, **kw)["fid"],
            evaluate_generator(G, cfg, standing_stats=True, **kw)["fid"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--families", default="dcgan,mlp")
    a = ap.parse_args()
    from ganforge.training.launch import train

    seeds = [int(s) for s in a.seeds.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fam in a.families.split(","):
            before, after = [], []
            for seed in seeds:
                t0 = time.perf_counter()
                run = Path(tmp) / f"{fam}-{seed}"
                over = [f"train.steps={a.steps}", f"seed={seed}", "train.eval_every=0", "train.sample_every=0",
                        f"train.checkpoint_every={a.steps}", "train.tensorboard=false"]
                train(PRESETS[fam], over, run_dir=run, quiet=True)
                b, s = fid_pair(run, a.n)
                before.append(b)
                after.append(s)
                print(f"{fam} seed {seed}: FID {b:.3f} -> {s:.3f} with standing statistics "
                      f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
            diff = [s - b for b, s in zip(before, after, strict=True)]
            rows.append((fam, before, after, diff))
    sd = statistics.stdev if len(seeds) > 1 else (lambda v: 0.0)
    print(f"\nFID of G_ema, {a.steps} steps, n={a.n:,}, fashion-mnist-cnn, seeds {a.seeds} (mean ± std)")
    print("| family | BN stats copied from G (old) | standing statistics | change |")
    print("|---|---|---|---|")
    for fam, b, s, d in rows:
        print(f"| {fam} | {statistics.mean(b):.3f} ± {sd(b):.3f} | {statistics.mean(s):.3f} ± {sd(s):.3f} "
              f"| {statistics.mean(d):+.3f} ± {sd(d):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
