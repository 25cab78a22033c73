"""What mirroring a run to MLflow / W&B costs the training loop: steady-state images per second and wall-clock of a
small DCGAN run without a tracker (the baseline), with `log.mlflow=file:...` and with `log.wandb=offline`.

Each contender trains in a fresh process (so imports and wandb's service start are counted once, as for a user),
in interleaved rounds; img/s is the median of the run's own metrics.jsonl records after the first quarter (the
mirror thread starts, imports are done and the tracker's run is open by then). Wall-clock includes start-up and
the final send (checkpoint artefact). Run it on an otherwise idle machine: it prints the load average.

    python benchmarks/trackers_overhead.py [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import sys, time, numpy as np, types
sys.path.insert(0, {tests!r})
from conftest import synthetic_data
from ganforge.training.launch import train
t = time.perf_counter()
train("fashion_mnist_dcgan", {overrides!r}, run_dir={run!r}, data=synthetic_data(n=512), quiet=True)
print(time.perf_counter() - t)
"""


def one(kind: str, steps: int, root: Path) -> tuple[float, float]:
    run = root / f"{kind}-{time.monotonic_ns()}"
    overrides = [f"train.steps={steps}", "model.nf=32", "train.batch_size=64", "train.log_every=5",
                 "train.sample_every=50", "train.checkpoint_every=0", "train.tensorboard=false", "train.threads=2"]
    if kind == "mlflow":
        overrides.append(f"log.mlflow=file:{root / 'mlruns'}")
    elif kind == "wandb":
        overrides.append("log.wandb=offline")
    tests = str(Path(__file__).parents[1] / "tests")
    code = CHILD.format(tests=tests, overrides=overrides, run=str(run))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    wall = float(out.stdout.strip().splitlines()[-1])
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ips = statistics.median(r["img_per_s"] for r in recs[len(recs) // 4 :])
    return ips, wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    kinds = ["none", "mlflow", "wandb"]
    results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as t:
        for _ in range(a.rounds):
            for k in kinds:
                results[k].append(one(k, a.steps, Path(t)))
    print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores); {a.steps} steps, "
          f"{a.rounds} rounds, median of rounds")
    base_ips = statistics.median(r[0] for r in results["none"])
    base_wall = statistics.median(r[1] for r in results["none"])
    print(f"{'tracker':<22}{'img/s (steady)':>16}{'vs none':>10}{'wall s':>10}{'vs none':>10}")
    for k in kinds:
        ips = statistics.median(r[0] for r in results[k])
        wall = statistics.median(r[1] for r in results[k])
        name = {"none": "none (baseline)", "mlflow": "log.mlflow=file:", "wandb": "log.wandb=offline"}[k]
        print(f"{name:<22}{ips:>16.1f}{ips / base_ips:>10.2f}{wall:>10.1f}{wall / base_wall:>10.2f}")


if __name__ == "__main__":
    main()
