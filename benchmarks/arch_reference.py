"""ganforge's stylegan2 and progan training steps vs. NVlabs' stylegan2-ada-pytorch, on CPU, same sizes.

The official code is imported at run time from a checkout (`--reference DIR`, or $STYLEGAN2_ADA_DIR) and
never copied here: its licence (NVIDIA Source Code License) does not allow that. On CPU its custom ops
(bias_act, upfirdn2d) run their reference implementations (plain PyTorch); this script makes sure of it
by replacing the plugin builder with a function that fails, so nothing is ever compiled.

StyleGAN2, at the `fashion_mnist32_stylegan2` preset's sizes (32x32x1, z = w = 128, 4 mapping layers,
16-64 channels: the official channel_base = nf * resolution, channel_max = nf_max give the same channels
at every resolution; mbstd group 4, batch 32, Adam(0.0025, (0, 0.99)), R1 gamma 0.1 every 16 D steps,
style mixing 0.9, no path length (the preset's pl_weight is 0), fp32, no clamping, G_ema every step).
Parameter counts are printed for both; they are equal. Contenders:
- ganforge: the real `Trainer.train_step` (uint8 batch assembly, channels-last, EMA included); and the same
  with `train.channels_last=false`, since the official code uses channels-last only with fp16.
- official loop: the official networks driven by the official `training/loss.py` StyleGAN2Loss phases as
  `training/training_loop.py` runs them (Gboth, Dmain, Dreg every 16 with gain 16), Adam, G_ema. It runs G
  twice per step (for the G phase, and again without a graph for the D phase); ganforge's trainer runs it
  once and reuses the fake for both updates.
- official nets, ganforge order: the official networks (style mixing through the official `run_G`) in
  ganforge's order of passes: one G forward, D on real and fake, lazy R1, D update, then the G update
  through D on the same fake. The same passes as ganforge, so this isolates the networks and their ops.
Not reproduced (none changes what is compared): the data loader (ganforge's step assembles its batch, the
official loop gets it from worker processes; here both assemble it in the step), `nan_to_num` of the
gradients and the optimizer tweak for lazy regularization (lr and betas ** (16/17)) of training_loop.py,
and the (empty) Greg phase it would run every 4 steps with pl_weight 0.

ProGAN: there is no official PyTorch ProGAN, and the official stylegan2-ada networks have no mapping-free
mode (`architecture='orig'` still modulates every conv by a style), so the comparison is of the building
blocks: ganforge's progan at its final 32x32 stage (equalized convs, pixel norm, nearest 2x up, 2x2
average-pool down, minibatch stddev; `fashion_mnist32_progan`: 16-64 channels, batch 16, WGAN-GP with
drift, EMA; also without channels-last) vs. the same network built from the official layers:
`Conv2dLayer`, `FullyConnectedLayer`, `normalize_2nd_moment`, `DiscriminatorEpilogue(architecture='orig')`
(mbstd, conv, fc, out: ProGAN's last D block), and `upfirdn2d.upsample2d` / `downsample2d` with the [1, 1]
box filter for the nearest up and the average-pool down, loaded with ganforge's initial weights. Its
outputs are checked against ganforge's (the "max abs diff" note), so both compute the same function, and it
is trained by the loop ganforge's trainer runs (one G forward, D on real, fake and the GP interpolates, D
update, G update, EMA). ganforge's progan has 163 + 320 more parameters: the toRGB/fromRGB layers of the
lower resolutions, kept for growing and unused at the final stage.

Timing: each round is a fresh process per model (2 threads) that builds all of its contenders, warms each
up (`--warmup` steps), then times `--steps` steps of each, one step of one contender after the other in a
rotating order: on a shared machine the load changes within seconds, and step-by-step turns expose every
contender to the same load (whole runs in turn did not: the same run varied several-fold from one minute
to the next). Default 16 steps: each side does exactly one lazy R1 step among them. img/s: the median over
rounds of each step's time, summed over the steps; "per round": the range of ganforge / this per round.

    python benchmarks/arch_reference.py --reference ~/src/stylegan2-ada-pytorch [--steps 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

THREADS = 2
PRESETS = {
    "stylegan2": ("fashion_mnist32_stylegan2", []),
    "progan": ("fashion_mnist32_progan", ["grow.stable_images=1", "grow.fade_images=1"]),
}
# ganforge as shipped, and without channels-last (the official code uses it only with fp16), to show how much
# of the difference that is
GANFORGE = {"ganforge": [], "ganforge, channels_last=false": ["train.channels_last=false"]}
SIDES = {
    "stylegan2": [*GANFORGE, "official loop", "official nets, ganforge order"],
    "progan": [*GANFORGE, "official layers"],
}
SQRT2 = math.sqrt(2.0)


# --- the official code, imported from the checkout ------------------------------------------------
def load_reference(ref_dir: str) -> types.SimpleNamespace:
    """Import stylegan2-ada-pytorch's networks and loss from `ref_dir`, its custom ops forced to their
    plain-PyTorch reference implementations (a plugin build raises, and `_init` says "not available")."""
    sys.path.insert(0, ref_dir)
    # dnnlib/util.py imports `requests` (only to download files) and distutils' strtobool (gone in Python 3.12
    # without setuptools): stand-ins when missing, since neither runs here
    if importlib.util.find_spec("requests") is None:
        sys.modules["requests"] = types.ModuleType("requests")
    if importlib.util.find_spec("distutils") is None:
        util = types.ModuleType("distutils.util")
        vars(util)["strtobool"] = lambda v: int(str(v).lower() in ("y", "yes", "t", "true", "on", "1"))
        sys.modules["distutils"], sys.modules["distutils.util"] = types.ModuleType("distutils"), util
    from torch_utils import custom_ops  # noqa: PLC0415 (from the checkout, at run time)
    from torch_utils.ops import bias_act, conv2d_gradfix, upfirdn2d  # noqa: PLC0415

    def no_plugin(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("arch_reference: custom CUDA/C++ ops are disabled, use the reference implementations")

    custom_ops.get_plugin = no_plugin
    bias_act._init = lambda: False
    upfirdn2d._init = lambda: False
    conv2d_gradfix.enabled = False
    from training import loss, networks  # noqa: PLC0415

    return types.SimpleNamespace(networks=networks, loss=loss, bias_act=bias_act, upfirdn2d=upfirdn2d)


def reference_problem(ref_dir: str | None) -> str | None:
    """What is wrong with the --reference argument, or None."""
    if not ref_dir:
        return ("pass --reference DIR (a checkout of https://github.com/NVlabs/stylegan2-ada-pytorch) or set "
                "STYLEGAN2_ADA_DIR")
    missing = [p for p in ("training/networks.py", "training/loss.py", "torch_utils/ops/bias_act.py")
               if not (Path(ref_dir) / p).is_file()]
    return f"--reference {ref_dir}: not a stylegan2-ada-pytorch checkout (no {missing[0]})" if missing else None


# --- shared pieces of the reference loops -----------------------------------------------------------
class Batches:
    """Random uint8 batches -> float in [-1, 1], as the official loop converts them (per step, like ganforge)."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.batch = batch

    def next(self) -> torch.Tensor:
        idx = torch.randint(0, self.images.shape[0], (self.batch,))
        return self.images[idx].to(torch.float32) / 127.5 - 1


def ema_update(g_ema: nn.Module, g: nn.Module, beta: float) -> None:
    """training_loop.py's G_ema update."""
    with torch.no_grad():
        for p_ema, p in zip(g_ema.parameters(), g.parameters(), strict=True):
            p_ema.copy_(p.lerp(p_ema, beta))
        for b_ema, b in zip(g_ema.buffers(), g.buffers(), strict=True):
            b_ema.copy_(b)


def adam(module: nn.Module, lr: float, t: dict[str, Any]) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(t["beta1"], t["beta2"]))


# --- stylegan2 --------------------------------------------------------------------------------------
def official_stylegan2(ref: types.SimpleNamespace, cfg: dict[str, Any]) -> tuple[nn.Module, nn.Module]:
    """The official G and D with the channels, mapping and mbstd of a ganforge stylegan2 config."""
    m, d = cfg["model"], cfg["data"]
    res, common = d["resolution"], {"num_fp16_res": 0, "conv_clamp": None}
    G = ref.networks.Generator(
        z_dim=m["z_dim"], c_dim=0, w_dim=m["w_dim"] or m["z_dim"], img_resolution=res, img_channels=d["channels"],
        mapping_kwargs={"num_layers": m["mapping_layers"], "lr_multiplier": m["mapping_lr_mult"],
                        "w_avg_beta": m["w_avg_beta"]},
        synthesis_kwargs={"channel_base": m["nf"] * res, "channel_max": m["nf_max"], **common},
    )
    D = ref.networks.Discriminator(
        c_dim=0, img_resolution=res, img_channels=d["channels"], channel_base=(m.get("d_nf") or m["nf"]) * res,
        channel_max=m["nf_max"], epilogue_kwargs={"mbstd_group_size": m["mbstd_group"]}, **common,
    )
    return G, D


class OfficialLoop:
    """training_loop.py's step: the StyleGAN2Loss phases, each with its own requires_grad, zero_grad, step."""

    def __init__(self, ref: types.SimpleNamespace, cfg: dict[str, Any], images: np.ndarray) -> None:
        m, lc, t = cfg["model"], cfg["loss"], cfg["train"]
        self.G, self.D = (net.train().requires_grad_(False) for net in official_stylegan2(ref, cfg))
        self.G_ema = copy.deepcopy(self.G).eval()
        self.loss = ref.loss.StyleGAN2Loss(
            torch.device("cpu"), G_mapping=self.G.mapping, G_synthesis=self.G.synthesis, D=self.D,
            style_mixing_prob=m["style_mixing"], r1_gamma=lc["r1_gamma"], pl_weight=lc["pl_weight"],
            pl_decay=lc["pl_decay"],
        )
        opt_g, opt_d = adam(self.G, t["lr_g"], t), adam(self.D, t["lr_d"], t)
        g_phases = [("Gmain", 1), ("Greg", lc["pl_every"])] if lc["pl_weight"] else [("Gboth", 1)]
        d_phases = [("Dmain", 1), ("Dreg", lc["r1_every"])] if lc["r1_gamma"] else [("Dboth", 1)]
        self.phases = [(n, self.G, opt_g, k) for n, k in g_phases] + [(n, self.D, opt_d, k) for n, k in d_phases]
        self.batches, self.batch, self.z_dim = Batches(images, t["batch_size"]), t["batch_size"], m["z_dim"]
        self.beta, self.batch_idx = t["ema_decay"], 0

    def step(self) -> None:
        real = self.batches.next()
        c = torch.zeros(self.batch, 0)
        all_z = torch.randn(len(self.phases) * self.batch, self.z_dim).split(self.batch)
        for (name, module, opt, interval), z in zip(self.phases, all_z, strict=True):
            if self.batch_idx % interval:
                continue
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            self.loss.accumulate_gradients(name, real, c, z, c, sync=True, gain=interval)
            module.requires_grad_(False)
            opt.step()
        ema_update(self.G_ema, self.G, self.beta)
        self.batch_idx += 1


class OfficialNetsGanforgeOrder(OfficialLoop):
    """The official networks in the passes of ganforge's train_step (same work as ganforge, other code)."""

    def __init__(self, ref: types.SimpleNamespace, cfg: dict[str, Any], images: np.ndarray) -> None:
        super().__init__(ref, cfg, images)
        if cfg["loss"]["pl_weight"]:
            raise SystemExit("arch_reference: the ganforge-order loop has no path-length term; use pl_weight=0")
        self.G.requires_grad_(True)
        self.D.requires_grad_(True)
        self.opt_g, self.opt_d = self.phases[0][2], self.phases[-1][2]
        self.r1_gamma, self.r1_every = cfg["loss"]["r1_gamma"], cfg["loss"]["r1_every"]

    def step(self) -> None:
        real = self.batches.next()
        c = torch.zeros(self.batch, 0)
        z = torch.randn(self.batch, self.z_dim)
        fake, _ = self.loss.run_G(z, c, sync=True)  # the official style mixing and synthesis
        d_real, d_fake = self.D(real, c), self.D(fake.detach(), c)
        total = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        if self.r1_gamma and self.batch_idx % self.r1_every == 0:
            x = real.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.D(x, c).sum(), x, create_graph=True)
            total = total + grad.square().sum(dim=[1, 2, 3]).mean() * (self.r1_gamma / 2 * self.r1_every)
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        loss_g = F.softplus(-self.D(fake, c)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        ema_update(self.G_ema, self.G, self.beta)
        self.batch_idx += 1


# --- progan from the official layers -----------------------------------------------------------------
class LayersProGANG(nn.Module):
    """ProGAN's G (paper Table 2) from the official layers: dense 4x4, then per resolution nearest 2x up
    (upsample2d with the box filter), 2 x (3x3 Conv2dLayer lrelu, pixel norm); a linear 1x1 toRGB."""

    def __init__(self, ref: types.SimpleNamespace, z_dim: int, ch: list[int], channels: int) -> None:
        super().__init__()
        nets = ref.networks
        # the official functions (plain functions, so that deepcopy for G_ema copies them by reference)
        self.pn, self.bias_act, self.up = nets.normalize_2nd_moment, ref.bias_act.bias_act, ref.upfirdn2d.upsample2d
        self.dense = nets.FullyConnectedLayer(z_dim, ch[0] * 16, bias=False)
        self.dense.weight_gain = math.sqrt(2.0) / 4 / math.sqrt(z_dim)  # the official TF ProGAN's dense gain
        self.bias = nn.Parameter(torch.zeros(ch[0]))
        convs = [nets.Conv2dLayer(ch[0], ch[0], 3, activation="lrelu")]
        for k in range(1, len(ch)):
            convs += [nets.Conv2dLayer(ch[k - 1], ch[k], 3, activation="lrelu"),
                      nets.Conv2dLayer(ch[k], ch[k], 3, activation="lrelu")]
        self.convs = nn.ModuleList(convs)
        self.torgb = nets.Conv2dLayer(ch[-1], channels, 1)
        self.register_buffer("box", ref.upfirdn2d.setup_filter([1, 1]))
        self.c0 = ch[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        pn = self.pn
        x = self.dense(pn(z)).reshape(-1, self.c0, 4, 4)
        x = pn(self.bias_act(x, self.bias, act="lrelu"))
        x = pn(self.convs[0](x))
        for k in range(1, len(self.convs), 2):
            x = self.up(x, self.box)
            x = pn(self.convs[k + 1](pn(self.convs[k](x))))
        return self.torgb(x)


class LayersProGAND(nn.Module):
    """ProGAN's D from the official layers: fromRGB, per resolution 2 x (3x3 Conv2dLayer lrelu) and a 2x2
    average (downsample2d with the box filter), then DiscriminatorEpilogue('orig'): mbstd, conv, fc, out."""

    def __init__(self, ref: types.SimpleNamespace, ch: list[int], channels: int, mbstd: int) -> None:
        super().__init__()
        nets, self.down = ref.networks, ref.upfirdn2d.downsample2d
        self.fromrgb = nets.Conv2dLayer(channels, ch[-1], 1, activation="lrelu")
        self.blocks = nn.ModuleList(
            nn.ModuleList([nets.Conv2dLayer(ch[k], ch[k], 3, activation="lrelu"),
                           nets.Conv2dLayer(ch[k], ch[k - 1], 3, activation="lrelu")])
            for k in range(len(ch) - 1, 0, -1)
        )
        self.epilogue = nets.DiscriminatorEpilogue(ch[0], cmap_dim=0, resolution=4, img_channels=channels,
                                                   architecture="orig", mbstd_group_size=mbstd)
        self.register_buffer("box", ref.upfirdn2d.setup_filter([1, 1]))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.fromrgb(img)
        for conv0, conv1 in self.blocks:
            x = self.down(conv1(conv0(x)), self.box)
        return self.epilogue(x, None, None).squeeze(1)


@torch.no_grad()
def copy_progan_weights(ref_g: LayersProGANG, ref_d: LayersProGAND, G: nn.Module, D: nn.Module) -> None:
    """ganforge's weights into the official-layer nets. Conv2dLayer/FullyConnectedLayer put the lrelu's
    sqrt(2) after the activation, ganforge in the weight scale, so lrelu biases are divided by sqrt(2)."""

    def put(dst: nn.Module, src: nn.Module, lrelu: bool) -> None:
        dst.weight.copy_(src.weight)
        if src.bias is not None:
            dst.bias.copy_(src.bias / SQRT2 if lrelu else src.bias)

    ref_g.dense.weight.copy_(G.blocks[0].dense.weight)
    ref_g.bias.copy_(G.blocks[0].bias)  # the pixel norm right after makes the activation gain irrelevant
    srcs = [G.blocks[0].conv] + [c for b in G.blocks[1:] for c in (b.conv0, b.conv1)]
    for dst, src in zip(ref_g.convs, srcs, strict=True):
        put(dst, src, True)
    put(ref_g.torgb, G.to_rgb[-1], False)
    put(ref_d.fromrgb, D.from_rgb[-1], True)
    for (conv0, conv1), block in zip(ref_d.blocks, list(D.blocks[1:])[::-1], strict=True):
        put(conv0, block.conv0, True)
        put(conv1, block.conv1, True)
    put(ref_d.epilogue.conv, D.blocks[0].conv, True)
    put(ref_d.epilogue.fc, D.blocks[0].dense, True)
    put(ref_d.epilogue.out, D.head, False)


class LayersProGANLoop:
    """ganforge's train_step for WGAN-GP + drift, written out, on the official-layer ProGAN."""

    def __init__(self, ref: types.SimpleNamespace, cfg: dict[str, Any], images: np.ndarray) -> None:
        from ganforge.models.progan import level_channels  # noqa: PLC0415
        from ganforge.models.registry import build_discriminator, build_generator  # noqa: PLC0415

        m, d, lc, t = cfg["model"], cfg["data"], cfg["loss"], cfg["train"]
        ch = level_channels(d["resolution"], m["nf"], m["nf_max"])
        self.G = LayersProGANG(ref, m["z_dim"], ch, d["channels"])
        self.D = LayersProGAND(ref, ch, d["channels"], m["mbstd_group"])
        G, D = build_generator(cfg), build_discriminator(cfg)  # at the final stage unless set otherwise
        copy_progan_weights(self.G, self.D, G, D)
        z, x = torch.randn(8, m["z_dim"]), torch.randn(8, d["channels"], d["resolution"], d["resolution"])
        with torch.no_grad():
            self.max_diff = max((self.G(z) - G(z)).abs().max().item(), (self.D(x) - D(x)).abs().max().item())
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.opt_g, self.opt_d = adam(self.G, t["lr_g"], t), adam(self.D, t["lr_d"], t)
        self.batch = cfg["grow"]["batch_sizes"][-1]
        self.batches, self.z_dim = Batches(images, self.batch), m["z_dim"]
        self.gp, self.drift = lc["gp_weight"] if lc["gp_weight"] is not None else 10.0, lc["drift"]
        self.beta, self.step_idx = 0.5 ** (self.batch / (t["ema_kimg"] * 1000)), 0

    def step(self) -> None:
        real = self.batches.next()
        z = torch.randn(self.batch, self.z_dim)
        fake = self.G(z)
        d_real, d_fake = self.D(real), self.D(fake.detach())
        total = d_fake.mean() - d_real.mean()
        eps = torch.rand(self.batch, 1, 1, 1)
        x_hat = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
        (grad,) = torch.autograd.grad(self.D(x_hat).sum(), x_hat, create_graph=True)
        total = total + self.gp * ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()
        total = total + self.drift * d_real.square().mean()
        self.opt_d.zero_grad(set_to_none=True)
        total.backward()
        self.opt_d.step()
        self.D.requires_grad_(False)
        loss_g = -self.D(fake).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.D.requires_grad_(True)
        ema_update(self.G_ema, self.G, min(self.beta, (1 + self.step_idx) / (10 + self.step_idx)))
        self.step_idx += 1


# --- one measurement (a child process) ----------------------------------------------------------------
def model_config(model: str, over: list[str]) -> dict[str, Any]:
    from ganforge.config import load_config  # noqa: PLC0415

    preset, preset_over = PRESETS[model]
    return load_config(preset, preset_over + over + ["train.tensorboard=false", f"train.threads={THREADS}"])


def ganforge_trainer(model: str, over: list[str], images: np.ndarray) -> Any:
    from ganforge.training.trainer import Trainer  # noqa: PLC0415

    data = types.SimpleNamespace(images=images, labels=None, classes=None)
    tr = Trainer(model_config(model, over), None, data=data, quiet=True)
    if "grow" in tr.objective.parts:  # jump to the final stage: the schedule follows images_seen
        tr.images_seen = 10**9
    return tr


def measure(model: str, ref_dir: str, steps: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Build every contender of `model` in this process, warm each up, then time them one step at a time in
    turn (the order rotating), so that a change in the machine's load hits all of them alike."""
    torch.set_num_threads(THREADS)
    cfg = model_config(model, [])
    images = np.random.default_rng(0).integers(0, 256, (1024, 32, 32, 1), dtype=np.uint8)
    ref = load_reference(ref_dir)
    kinds = {"official loop": OfficialLoop, "official nets, ganforge order": OfficialNetsGanforgeOrder,
             "official layers": LayersProGANLoop}
    out: dict[str, dict[str, Any]] = {}
    runs: dict[str, Any] = {}
    for side in SIDES[model]:
        torch.manual_seed(0)
        mine = side in GANFORGE
        run = runs[side] = ganforge_trainer(model, GANFORGE[side], images) if mine else kinds[side](ref, cfg, images)
        step = run.train_step if mine else run.step
        out[side] = {"step": step, "secs": [], "g_params": sum(p.numel() for p in run.G.parameters()),
                     "d_params": sum(p.numel() for p in run.D.parameters())}
        if not mine:
            out[side]["batch"] = run.batch
            out[side]["ops"] = [ref.bias_act._plugin is None, ref.upfirdn2d._plugin is None]
            if isinstance(run, LayersProGANLoop):
                out[side]["max_diff"] = run.max_diff
        for _ in range(warmup):
            step()
    seen = {side: runs[side].images_seen for side in GANFORGE}
    sides = list(out)
    for i in range(steps):
        for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
            t = time.perf_counter()
            out[side]["step"]()
            out[side]["secs"].append(time.perf_counter() - t)
    for side in GANFORGE:  # the batch the steps really used
        out[side]["batch"] = (runs[side].images_seen - seen[side]) // steps
    for r in out.values():
        del r["step"]
    return out


def img_per_s(rounds: list[dict[str, dict[str, Any]]], side: str) -> float:
    """Images per second of the median step time at each step index, over rounds, summed: steps at the same
    index do the same work (the lazy R1 one included), and a load burst on one step in one round is dropped."""
    per_step = zip(*(r[side]["secs"] for r in rounds), strict=True)
    secs = sum(statistics.median(ts) for ts in per_step)
    return len(rounds[0][side]["secs"]) * rounds[0][side]["batch"] / secs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference", default=os.environ.get("STYLEGAN2_ADA_DIR"),
                    help="checkout of NVlabs/stylegan2-ada-pytorch (default: $STYLEGAN2_ADA_DIR)")
    ap.add_argument("--steps", type=int, default=16, help="timed steps per contender and round (16: one lazy R1)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--models", default="stylegan2,progan")
    ap.add_argument("--child", metavar="MODEL", help=argparse.SUPPRESS)
    a = ap.parse_args()
    problem = reference_problem(a.reference)
    if min(a.steps, a.rounds) < 1 or a.warmup < 0:
        problem = "--steps and --rounds must be at least 1, --warmup at least 0"
    if problem:
        ap.error(problem)
    ref_dir = str(Path(a.reference).resolve())
    if a.child:
        print(json.dumps(measure(a.child, ref_dir, a.steps, a.warmup)))
        return
    models = a.models.split(",")
    bad = [m for m in models if m not in SIDES]
    if bad:
        ap.error(f"--models: unknown {bad[0]!r}; choose from {', '.join(SIDES)}")
    res: dict[str, list[dict[str, dict[str, Any]]]] = {m: [] for m in models}
    load = [os.getloadavg()[0]]
    for r in range(a.rounds):
        for m in models if r % 2 == 0 else models[::-1]:
            cmd = [sys.executable, __file__, "--reference", ref_dir, "--steps", str(a.steps), "--warmup",
                   str(a.warmup), "--child", m]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                sys.exit(f"arch_reference: the {m} measurement failed:\n{proc.stderr[-4000:]}")
            res[m].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"torch {torch.__version__}, CPU fp32, {THREADS} threads; {a.rounds} rounds (a fresh process each) x "
          f"{a.steps} timed steps per contender, taken in turn, after {a.warmup} warm-up steps; "
          f"reference: {ref_dir}")
    load.append(os.getloadavg()[0])
    cores = os.cpu_count() or 1
    print(f"load average (1 min) before/after: {load[0]:.1f}/{load[1]:.1f} on {cores} cores")
    if load[0] > 1.5 * cores:
        # other processes' threads make the 2 threads of a step wait for each other: steps get several times
        # slower at random, and no timing order evens that out
        print("WARNING: the machine was busy before the run; the numbers are unreliable, rerun it when idle")
    for m in models:
        ips = {s: img_per_s(res[m], s) for s in SIDES[m]}
        print(f"\n{m} ({PRESETS[m][0]})\n")
        print("| implementation | batch | G params | D params | img/s | ganforge / this | per round | note |")
        print("|---|---|---|---|---|---|---|---|")
        for s in SIDES[m]:
            r0 = res[m][0][s]
            rounds = sorted(img_per_s([x], "ganforge") / img_per_s([x], s) for x in res[m])
            note = []
            if "ops" in r0:
                note.append("official ops: reference impl" if all(r0["ops"]) else "official ops: PLUGIN LOADED")
            if "max_diff" in r0:
                note.append(f"max abs diff of G, D outputs vs ganforge's {r0['max_diff']:.1e}")
            ratio = f"{ips['ganforge'] / ips[s]:.2f} | {rounds[0]:.2f}-{rounds[-1]:.2f}"
            print(f"| {s} | {r0['batch']} | {r0['g_params']:,} | {r0['d_params']:,} | {ips[s]:.1f} | {ratio} | "
                  f"{'; '.join(note)} |")


if __name__ == "__main__":
    main()
