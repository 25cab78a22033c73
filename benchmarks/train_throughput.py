"""Training-step throughput: ganforge vs. a plain pytorch/examples-style DCGAN step, same run.

Both sides train the same DCGAN architecture (ganforge's `dcgan` family == the pytorch/examples
network at 64x64; 28/32 use fewer stages) at batch 64, fp32, with the same thread count. The
reference is the canonical loop: Sigmoid + BCELoss, D(real) and D(fake) each with its own backward,
then a G step through a D whose weight gradients are also computed. ganforge runs its real
`Trainer.train_step` (batch assembly from the uint8 dataset included; the reference gets a
ready float batch) with its defaults: EMA generator on, channels-last on CPU.

Rounds alternate A/B so that machine noise hits both; the table shows the median img/s.

The FLOP column is the reference's floating-point work per step over ganforge's, counted by
`torch.utils.flop_counter` on one real step of each: the most a float32 step that computes the same
algorithm can gain by doing less work (ganforge skips D's weight gradients during the G step; everything
else is the algorithm's minimum). Beyond it, speed can only come from faster kernels (channels-last) or
lower precision: `ganforge amp=bf16` is the same train_step with `train.amp=bf16` (autocast forward
passes, float32 losses and weights), which uses AMX/AVX512-BF16 where the CPU has them and is slower
than float32 where it has not.

    python benchmarks/train_throughput.py [--steps 10] [--rounds 3] [--sizes 28:32,32:64,64:64]
"""

from __future__ import annotations

import argparse
import statistics
import time
import types

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ganforge.config import load_config
from ganforge.models.dcgan import _stages, dcgan_init
from ganforge.training.trainer import Trainer


# --- the reference: written the way pytorch/examples/dcgan/main.py writes it ---------------------------
class RefGenerator(nn.Module):
    def __init__(self, nz: int, ngf: int, nc: int, res: int) -> None:
        super().__init__()
        base, n = _stages(res)
        c = ngf * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(nz, c, base, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class RefDiscriminator(nn.Module):
    def __init__(self, ndf: int, nc: int, res: int) -> None:
        super().__init__()
        base, n = _stages(res)
        layers: list[nn.Module] = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        c = ndf
        for _ in range(n - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, inplace=True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, base, 1, 0, bias=False), nn.Sigmoid()]
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class Reference:
    """`device`: as pytorch/examples does it, the nets and the batch moved there, labels and noise made there."""

    def __init__(self, res: int, nf: int, nz: int = 100, nc: int = 1, bs: int = 64, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.netG = RefGenerator(nz, nf, nc, res).to(self.device)
        self.netD = RefDiscriminator(nf, nc, res).to(self.device)
        self.netG.apply(dcgan_init)
        self.netD.apply(dcgan_init)
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
        self.real = (torch.rand(bs, nc, res, res) * 2 - 1).to(self.device)
        self.nz, self.bs = nz, bs

    def step(self) -> None:
        real_cpu, b, device = self.real, self.bs, self.device
        self.netD.zero_grad()
        label = torch.full((b,), 1.0, device=device)
        output = self.netD(real_cpu).view(-1)
        errD_real = self.criterion(output, label)
        errD_real.backward()
        noise = torch.randn(b, self.nz, 1, 1, device=device)
        fake = self.netG(noise)
        label.fill_(0.0)
        output = self.netD(fake.detach()).view(-1)
        errD_fake = self.criterion(output, label)
        errD_fake.backward()
        self.optimizerD.step()
        self.netG.zero_grad()
        label.fill_(1.0)
        output = self.netD(fake).view(-1)
        errG = self.criterion(output, label)
        errG.backward()
        self.optimizerG.step()


def make_ganforge(res: int, nf: int, bs: int, nc: int = 1, device: str = "cpu", **train: object) -> Trainer:
    cfg = load_config("fashion_mnist_dcgan", [f"data.resolution={res}", f"data.channels={nc}", f"model.nf={nf}",
                                              f"train.batch_size={bs}", f"device={device}"]
                      + [f"train.{k}={v}" for k, v in train.items()])
    imgs = (np.random.default_rng(0).random((bs * 8, res, res, nc)) * 255).astype(np.uint8)
    data = types.SimpleNamespace(images=imgs, labels=None, classes=None)
    return Trainer(cfg, run=None, data=data, quiet=True)


def time_steps(step, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - t


def step_flops(step) -> int:
    """Floating-point operations of one call of `step` (convolutions and matmuls, forward and backward)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="28:32,32:64,64:64", help="resolution:nf pairs")
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, fp32, "
          f"{a.rounds} rounds x {a.steps} steps, median img/s")
    rows = []
    for spec in a.sizes.split(","):
        res, nf = map(int, spec.split(":"))
        contenders = {
            "reference": Reference(res, nf, bs=a.batch).step,
            "ganforge": make_ganforge(res, nf, a.batch).train_step,
            "ganforge no-EMA": make_ganforge(res, nf, a.batch, ema=False).train_step,
            "ganforge amp=bf16": make_ganforge(res, nf, a.batch, amp="bf16").train_step,
        }
        speeds: dict[str, list[float]] = {k: [] for k in contenders}
        for step in contenders.values():
            time_steps(step, 3)  # warm-up: allocator, oneDNN primitive cache
        flop_ratio = step_flops(contenders["reference"]) / step_flops(contenders["ganforge"])
        for _ in range(a.rounds):
            for name, step in contenders.items():
                speeds[name].append(a.steps * a.batch / time_steps(step, a.steps))
        med = {k: statistics.median(v) for k, v in speeds.items()}
        rows.append((res, nf, med, flop_ratio))
    names = list(rows[0][2])
    others = [n for n in names if n != "reference"]
    head = (f"| size | nf | {' | '.join(n + ' img/s' for n in names)} | "
            f"{' | '.join(n + ' / ref' for n in others)} | ref FLOPs / ganforge FLOPs |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for res, nf, med, flop_ratio in rows:
        ref = med["reference"]
        cells = " | ".join(f"{med[n]:.0f}" for n in names)
        ratios = " | ".join(f"{med[n] / ref:.2f}" for n in others)
        print(f"| {res}x{res} | {nf} | {cells} | {ratios} | {flop_ratio:.3f} |")


if __name__ == "__main__":
    main()
