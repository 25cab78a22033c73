"""GPU fast paths, each against the same training step without it: channels-last, `train.amp` (bf16; fp16 on
CUDA), `train.compile`, and all of them together, on whatever device is present.

Every variant is ganforge's real `Trainer.train_step` (batch assembly, EMA and the objective's parts included)
on the same synthetic uint8 data and config; only the fast-path keys differ. The plain variant is float32,
contiguous memory, eager. Rounds alternate the variants so that machine noise hits all of them; the table
shows the median img/s and the ratio to plain (> 1 = faster). Compiling happens in the warm-up steps.

    python benchmarks/fast_paths.py [--presets fashion_mnist_dcgan,fashion_mnist32_stylegan2] [--steps 10]
                                    [--warmup 3] [--rounds 3] [--batch 64] [--device auto] [--skip compile]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import types

import numpy as np
import torch

from ganforge.config import load_config
from ganforge.device import resolve_device
from ganforge.training.trainer import Trainer

PLAIN = ["train.channels_last=false", "train.amp=off", "train.compile=false"]


def variants(device: torch.device) -> dict[str, list[str]]:
    half = "fp16" if device.type == "cuda" else "bf16"
    out = {
        "plain": [],
        "channels-last": ["train.channels_last=true"],
        "bf16": ["train.amp=bf16"],
        "compile": ["train.compile=true"],
        f"all ({half})": ["train.channels_last=true", f"train.amp={half}", "train.compile=true"],
    }
    if device.type == "cuda":
        out["fp16"] = ["train.amp=fp16"]
    return out


def synthetic(cfg: dict, n: int = 1024) -> types.SimpleNamespace:
    d = cfg["data"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, d["resolution"], d["resolution"], d["channels"]), dtype=np.uint8)
    return types.SimpleNamespace(images=images, labels=None, classes=None)


def measure(trainer: Trainer, steps: int) -> float:
    """img/s of `steps` train steps (real images D saw)."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start, seen = time.perf_counter(), trainer.images_seen
    for _ in range(steps):
        trainer.train_step()
    sync()
    return (trainer.images_seen - seen) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default="fashion_mnist_dcgan,fashion_mnist32_stylegan2")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip", default="", help="comma list of variants to leave out, e.g. compile")
    a = ap.parse_args()
    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)  # graph-break notes (stylegan2's mixing coin)
    device = resolve_device(a.device)
    skip = {s.strip() for s in a.skip.split(",") if s.strip()}
    names = [v for v in variants(device) if not any(v.startswith(s) for s in skip)]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, batch {a.batch}, {a.steps} timed steps x {a.rounds} rounds "
          f"after {a.warmup} warm-up steps\n")
    print("| preset | " + " | ".join(f"{n} img/s" for n in names) + " | " + " | ".join(f"{n} / plain" for n in names[1:])
          + " |")
    print("|" + "---|" * (1 + 2 * len(names) - 1))
    for preset in a.presets.split(","):
        trainers = {}
        for name in names:
            cfg = load_config(preset, [f"device={device.type}", f"train.batch_size={a.batch}", "train.ema=true",
                                       *PLAIN, *variants(device)[name]])
            t = Trainer(cfg, data=synthetic(cfg), quiet=True)
            for _ in range(a.warmup):
                t.train_step()
            trainers[name] = t
        rates: dict[str, list[float]] = {n: [] for n in names}
        for _ in range(a.rounds):
            for name in names:
                rates[name].append(measure(trainers[name], a.steps))
        med = {n: statistics.median(r) for n, r in rates.items()}
        cells = " | ".join(f"{med[n]:.0f}" for n in names)
        ratios = " | ".join(f"{med[n] / med['plain']:.2f}" for n in names[1:])
        print(f"| {preset} | {cells} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
