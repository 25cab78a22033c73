"""TensorFlow vs torch training of the same GAN: speed (img/s) and sample quality (domain-network FID).

Both backends train the `fashion_mnist_dcgan` preset (DCGAN nf 32, batch 64, nsgan, EMA) on the real
Fashion-MNIST training set from the same initial weights (the TF trainer copies the torch family's init for
the seed) and the same data order; only the framework differs.

- Speed: `--speed-steps` real train steps after 5 warm-up steps, each measurement in a fresh process, rounds
  alternating between the backends; median img/s per thread count in `--threads` (each backend limited to
  that many threads: torch.set_num_threads, TF intra- and inter-op pools).
- Quality: for each seed, a run of `--steps` steps per backend (fresh process, `--fid-threads` threads), then
  FID of `--n` G_ema samples against the training set with the fashion-mnist-cnn features
  (`metrics.evaluate.evaluate_generator` on the checkpoint that `ganforge sample/eval` load).

    python benchmarks/tf_vs_torch.py [--steps 1500] [--seeds 0,1] [--n 5000] [--threads 1,2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PRESET = "fashion_mnist_dcgan"
BACKENDS = ("torch", "tensorflow")

SPEED_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from ganforge.config import load_config
backend, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cfg = load_config(sys.argv[4], [f"train.threads={threads}", "train.tensorboard=false", "train.eval_every=0"])
if backend == "tensorflow":
    from ganforge.tf.train.trainer import TFTrainer as Cls
else:
    from ganforge.training.trainer import Trainer as Cls
tr = Cls(cfg, None, quiet=True)
for _ in range(5):
    [v.item() for v in tr.train_step().values()]
t, seen = time.perf_counter(), tr.images_seen
for _ in range(steps):
    [v.item() for v in tr.train_step().values()]  # the loop syncs every step on CPU too
print(json.dumps({"img_s": (tr.images_seen - seen) / (time.perf_counter() - t)}))
"""

TRAIN_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from ganforge.config import load_config
backend, steps, seed, threads, n, run_dir, preset = sys.argv[1:8]
over = [f"train.steps={steps}", f"seed={seed}", f"train.threads={threads}", "train.eval_every=0",
        "train.sample_every=0", f"train.checkpoint_every={steps}", "train.tensorboard=false"]
cfg = load_config(preset, over + [f"backend={backend}"])
t0 = time.perf_counter()
from ganforge.training.launch import train
run, summary = train(cfg, [], run_dir=run_dir, quiet=True)
seconds = time.perf_counter() - t0
from ganforge.generate import load_generator
from ganforge.metrics.evaluate import evaluate_generator
G, rcfg = load_generator(run_dir)
rec = evaluate_generator(G, rcfg, metrics="fid", n=int(n), network="fashion-mnist-cnn", progress=False)
ips = [r["img_per_s"] for r in run.read_metrics()][1:]
print(json.dumps({"fid": rec["fid"], "train_s": seconds, "img_s": sorted(ips)[len(ips) // 2],
                  "loss_d": summary["loss_d"], "loss_g": summary["loss_g"]}))
"""


def _child(code: str, *args: object) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each FID run")
    ap.add_argument("--seeds", default="0,1", help="seeds of the FID runs (one run per seed and backend)")
    ap.add_argument("--n", type=int, default=5000, help="generated images per FID")
    ap.add_argument("--fid-threads", type=int, default=1)
    ap.add_argument("--threads", default="1,2", help="thread counts of the speed measurement")
    ap.add_argument("--speed-steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-fid", action="store_true")
    a = ap.parse_args()

    if not a.skip_speed:
        print(f"speed: {PRESET} (batch 64), {a.rounds} rounds x {a.speed_steps} steps, fresh process each")
        print("| threads | torch img/s | tensorflow img/s | tf / torch |")
        print("|---|---|---|---|")
        for threads in [int(t) for t in a.threads.split(",")]:
            res: dict[str, list[float]] = {b: [] for b in BACKENDS}
            for _ in range(a.rounds):
                for b in BACKENDS:
                    res[b].append(_child(SPEED_CHILD, b, a.speed_steps, threads, PRESET)["img_s"])
            med = {b: statistics.median(v) for b, v in res.items()}
            print(f"| {threads} | {med['torch']:.0f} | {med['tensorflow']:.0f} | "
                  f"{med['tensorflow'] / med['torch']:.2f}x |", flush=True)

    if not a.skip_fid:
        print(f"\nquality: {PRESET}, {a.steps} steps, FID (fashion-mnist-cnn) of {a.n} G_ema samples vs the "
              f"training set, {a.fid_threads} thread(s)")
        print("| seed | backend | FID | train s | img/s (median logged) | final loss_d | final loss_g |")
        print("|---|---|---|---|---|---|---|")
        fids: dict[str, list[float]] = {b: [] for b in BACKENDS}
        with tempfile.TemporaryDirectory(prefix="tf-vs-torch-") as tmp:
            for seed in [int(s) for s in a.seeds.split(",")]:
                for b in BACKENDS:
                    r = _child(TRAIN_CHILD, b, a.steps, seed, a.fid_threads, a.n, Path(tmp) / f"{b}-{seed}", PRESET)
                    fids[b].append(r["fid"])
                    print(f"| {seed} | {b} | {r['fid']:.2f} | {r['train_s']:.0f} | {r['img_s']:.0f} | "
                          f"{r['loss_d']:.3f} | {r['loss_g']:.3f} |", flush=True)
        mt, mf = statistics.mean(fids["torch"]), statistics.mean(fids["tensorflow"])
        print(f"\nmean FID: torch {mt:.2f}, tensorflow {mf:.2f}: tensorflow / torch = {mf / mt:.2f} "
              f"({'within' if mf <= 1.25 * mt else 'NOT within'} 25%)")


if __name__ == "__main__":
    main()
