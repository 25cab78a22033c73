"""Sample quality under a fixed CPU budget: each configuration trains for the same wall-clock time on this
machine (stopped by SIGINT, which saves a checkpoint), then its EMA generator is evaluated with
`fashion-mnist-cnn` features: FID and KID of 10,000 samples against all 60,000 Fashion-MNIST training
images (the reference for the 2,000-image runs too, as in the ADA paper's limited-data experiments).

    python benchmarks/quality_budget.py --minutes 5 --out runs/quality

Prints a markdown table and copies each run's last sample grid next to it (OUT/<name>.png).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

RUNS = {
    "dcgan": ["fashion_mnist_dcgan"],
    "progan": ["fashion_mnist32_progan"],
    "stylegan2": ["fashion_mnist32_stylegan2"],
    "stylegan2, 2k images": ["fashion_mnist32_stylegan2", "data.limit=2000"],
    "stylegan2 + ADA, 2k images": ["fashion_mnist32_stylegan2", "data.limit=2000", "augment.name=ada",
                                   "augment.ada_speed=20000"],
    # fewer images still, so that D overfits within a CPU budget and ADA has something to do
    "stylegan2, 300 images": ["fashion_mnist32_stylegan2", "data.limit=300"],
    "stylegan2 + ADA, 300 images": ["fashion_mnist32_stylegan2", "data.limit=300", "augment.name=ada",
                                    "augment.ada_speed=20000"],
}  # fmt: skip


def train_for(name: str, args: list[str], seconds: float, run_dir: Path) -> dict:
    cmd = [sys.executable, "-m", "ganforge", "train", *args, "train.steps=1000000", "train.sample_every=500",
           "train.checkpoint_every=1000", "--run-dir", str(run_dir), "--quiet"]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)  # the trainer saves a checkpoint and exits 0
        proc.wait()
    wall = time.perf_counter() - t
    rec = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"steps": rec[-1]["step"], "images_seen": rec[-1]["images_seen"], "train_s": wall, "rc": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--out", default="runs/quality")
    ap.add_argument("--only", help="'|'-separated run names to do (default all), e.g. 'stylegan2|progan'")
    a = ap.parse_args()
    from ganforge.metrics.evaluate import evaluate_run

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, args in RUNS.items():
        if a.only and name not in [x.strip() for x in a.only.split("|")]:
            continue
        slug = name.replace(" + ", "-").replace(", ", "-").replace(" ", "")
        run_dir = out / slug
        shutil.rmtree(run_dir, ignore_errors=True)
        info = train_for(name, args, a.minutes * 60, run_dir)
        m = evaluate_run(run_dir, metrics="fid,kid", n=10000, progress=False)
        grids = sorted((run_dir / "samples").glob("step-*.png"))
        shutil.copy(grids[-1], out / f"{slug}.png")
        rows.append((name, info, m))
        print(json.dumps({"run": name, **info, **m}), flush=True)
    print(f"\nbudget: {a.minutes:g} min of training per run on this machine, then 10k samples vs 60k train images")
    print("| model | steps | images seen | FID (fashion-mnist-cnn) | KID x 1000 |")
    print("|---|---|---|---|---|")
    for name, info, m in rows:
        print(f"| {name} | {m['step']} | {info['images_seen']} | {m['fid']:.2f} | {1000 * m['kid']:.2f} |")


if __name__ == "__main__":
    main()
