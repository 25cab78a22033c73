"""Training speed and memory of the advanced architectures next to DCGAN, at 32x32 on CPU.

Each measurement runs in a fresh process: build the preset's Trainer on Fashion-MNIST, then time
`--steps` real `train_step`s (after 2 warm-up steps) and record the memory the steps add: the peak RSS
during them (VmHWM, reset first) minus the RSS before the first step (activations, gradients, optimizer
state). ProGAN is measured at its final 32x32 stage. Rounds alternate between models so machine noise
hits all of them; the table shows medians and the ratio to DCGAN's img/s from the same run.

    python benchmarks/arch_throughput.py [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

MODELS = {
    "dcgan": ("fashion_mnist_dcgan", []),
    "progan (32x32 stage)": ("fashion_mnist32_progan", ["grow.stable_images=1", "grow.fade_images=1"]),
    "stylegan2": ("fashion_mnist32_stylegan2", []),
    "stylegan2 + ADA": ("fashion_mnist32_stylegan2", ["augment.name=ada", "augment.ada_p=0.5"]),
}

CHILD = r"""
import json, sys, time
from ganforge.config import load_config
from ganforge.training.trainer import Trainer
preset, steps, over = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cfg = load_config(preset, over + ["train.tensorboard=false"])
tr = Trainer(cfg, None, quiet=True)
if "grow" in tr.objective.parts:  # jump to the final stage: the schedule follows images_seen
    tr.images_seen = 10**9
def status_kb(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))
with open("/proc/self/clear_refs", "w") as f:  # reset the peak (VmHWM) so data loading does not count
    f.write("5")
base = status_kb("VmRSS")
for _ in range(2):
    tr.train_step()
t, seen = time.perf_counter(), tr.images_seen
for _ in range(steps):
    tr.train_step()
dt = time.perf_counter() - t
bs = (tr.images_seen - seen) // steps
peak = status_kb("VmHWM")
print(json.dumps({"img_s": steps * bs / dt, "peak_mb": (peak - base) / 1024, "batch": bs,
                  "g_params": sum(p.numel() for p in tr.G.parameters()),
                  "d_params": sum(p.numel() for p in tr.D.parameters())}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    res: dict[str, list[dict]] = {m: [] for m in MODELS}
    for _ in range(a.rounds):
        for name, (preset, over) in MODELS.items():
            out = subprocess.run([sys.executable, "-c", CHILD, preset, str(a.steps), *over], check=True,
                                 capture_output=True, text=True).stdout
            res[name].append(json.loads(out.strip().splitlines()[-1]))
    base = statistics.median(r["img_s"] for r in res["dcgan"])
    print(f"{a.rounds} rounds x {a.steps} steps, presets as shipped, 32x32 Fashion-MNIST, CPU fp32")
    print("| model | batch | G params | D params | img/s (median) | vs dcgan | peak training memory (MB) |")
    print("|---|---|---|---|---|---|---|")
    for name, rs in res.items():
        ips = statistics.median(r["img_s"] for r in rs)
        mem = statistics.median(r["peak_mb"] for r in rs)
        r0 = rs[0]
        print(
            f"| {name} | {r0['batch']} | {r0['g_params']:,} | {r0['d_params']:,} | {ips:.0f} | {ips / base:.2f}x | "
            f"{mem:.0f} |"
        )


if __name__ == "__main__":
    main()
