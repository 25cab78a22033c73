"""The torch backend of the training loop. `Trainer.train_step` is the whole GAN update and fits on a screen;
the rest is what a checkpoint holds (models, optimizers, every RNG stream, the data position, the objective's
parts) and how it comes back. The loop around it -- logs, grids, checkpoints' cadence, signals, time budget, NaN
stop, evaluation, events -- is training/loop.py, shared with the TensorFlow backend.

The same step runs as one process or as one of several (see training/distributed.py for the conventions): then
every process takes its slice of the global batch, gradients are averaged before each optimizer step, and rank 0
alone writes the run directory.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import random
from typing import Any

import numpy as np
import torch

from ganforge.config import data_view, model_view, train_view
from ganforge.data import ImageData
from ganforge.data.from_config import load_data
from ganforge.data.pipeline import BatchStream, seeded_generator
from ganforge.device import resolve_device
from ganforge.errors import UserError
from ganforge.losses import DStep, GStep, Part
from ganforge.models import build_discriminator, build_generator
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.rundir import RunDir
from ganforge.training import distributed as dist_
from ganforge.training.distributed import SINGLE, Dist
from ganforge.training.ema import EMA
from ganforge.training.loop import BackendBase, Counters
from ganforge.training.objective import Objective


# --- RNG state <-> JSON: resume restores every random stream the step consumes ----------------------
def rng_state() -> dict[str, Any]:
    def b64(t: torch.Tensor) -> str:
        return base64.b64encode(t.numpy().tobytes()).decode()

    np_state = np.random.get_state()
    return {
        "torch": b64(torch.get_rng_state()),
        "cuda": [b64(s) for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    def unb64(s: str) -> torch.Tensor:
        return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)

    torch.set_rng_state(unb64(state["torch"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([unb64(s) for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def fixed_labels(cfg: dict[str, Any], data: ImageData, n: int, device: torch.device) -> torch.Tensor:
    """Labels of the fixed sample grid: one class per grid column, or the attributes of n real images
    (repeated when the data holds fewer than n)."""
    m = model_view(cfg)
    if m.label_kind == "attributes":
        idx = np.arange(n) % len(data.labels)
        return torch.as_tensor(np.asarray(data.labels[idx]), dtype=torch.float32, device=device)
    return torch.arange(n, device=device) % m.num_labels



class Precision:
    """`train.amp`: the G and D forward passes under autocast (bf16, or fp16 with one loss scaler per
    optimizer). Losses and the parts' terms (penalties through a double backward, augmentation) are
    computed in float32 outside it. `off` adds no context and no cast: float32 results do not change."""

    def __init__(self, mode: str | bool, device: torch.device) -> None:
        self.mode = mode or "off"
        self.device_type = device.type
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.mode)
        self.scalers = {k: torch.amp.GradScaler(device.type) for k in ("G", "D")} if self.mode == "fp16" else {}

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def fp32(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() if self.dtype else x

    def backward(self, loss: torch.Tensor, who: str) -> None:
        scaler = self.scalers.get(who)
        (scaler.scale(loss) if scaler is not None else loss).backward()

    def step(self, opt: torch.optim.Optimizer, who: str) -> None:
        scaler = self.scalers.get(who)
        if scaler is None:
            opt.step()
            return
        scaler.step(opt)  # skipped (and the scale lowered) when the averaged gradients hold inf/NaN
        scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {k: s.state_dict() for k, s in self.scalers.items()}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        for k, s in self.scalers.items():
            if state and state.get(k):
                s.load_state_dict(state[k])


class Trainer(BackendBase):
    def __init__(self, cfg: dict[str, Any], run: RunDir | None = None, data: ImageData | None = None, quiet: bool = False,
                 dist: Dist = SINGLE):
        self.cfg, self.run, self.quiet, self.dist = cfg, run, quiet, dist
        t = self.t = train_view(cfg)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(cfg["device"])
        dist_.check_world(cfg, dist.world, self.device)
        if dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", dist.local_rank)
        self.seed = cfg["seed"]
        torch.manual_seed(self.seed)  # weight init (the same on every process), dropout
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)

        if data is None:
            data = load_data(cfg)
        self.data = data
        self.conditional = model_view(cfg).conditional
        self.G = build_generator(cfg).to(self.device)
        self.D = build_discriminator(cfg).to(self.device)
        if t.sync_bn and dist.enabled:
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        # conv models of any kind (nn.Conv2d, equalized, spectral-norm parametrized) have 4-D weights
        self.channels_last = t.channels_last and any(p.dim() == 4 for p in self.D.parameters())
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        dist_.broadcast_modules((self.G, self.D), dist)
        # the loss and every part the config turns on (regularizers, augmentation, growing schedule)
        self.objective = Objective.from_config(cfg, self.G, self.D)
        self.d_steps = t.d_steps
        self.counters = Counters()  # advanced here, checkpointed and restored by the loop's rules
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=t.lr_g, betas=(t.beta1, t.beta2))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=t.lr_d, betas=(t.beta1, t.beta2))
        self.ema = EMA(self.G, t.ema_decay, t.ema_start, t.ema_kimg) if t.ema else None
        self.stream = BatchStream(
            data.images, data.labels, t.batch_size // dist.world, self.seed, self.device,
            hflip=data_view(cfg).hflip, channels_last=self.channels_last, rank=dist.rank, world_size=dist.world,
        )
        self.precision = Precision(t.amp, self.device)
        self._G_fwd, self._D_fwd = self._forward_modules(t.compile)
        # several processes: a part that adapts to what D saw (ADA's p) sees the global batch, so it takes
        # the same decision on every process, at the speed (in images) of one process with the global batch
        self._global_after_d = dist.enabled and any(
            type(p).after_d_step is not Part.after_d_step for p in self.objective.parts.values()
        )
        self.z_dim = model_view(cfg).z_dim
        n = t.n_samples
        self.fixed_z = torch.randn(n, self.z_dim, generator=seeded_generator(self.seed, -1)).to(self.device)
        self.fixed_labels = fixed_labels(cfg, data, n, self.device) if self.conditional else None
        self._prepare_batch()
        if dist.enabled:  # from here on each process has its own dropout / noise streams
            dist_.seed_process_rngs(self.seed, dist.rank)

    # ---------------------------------------------------------------------------------------------
    def _models(self) -> tuple[torch.nn.Module, ...]:
        return (self.G, self.D) + ((self.ema.model,) if self.ema is not None else ())

    def _forward_modules(self, compile_: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
        """What the adversarial forward passes call: G and D, or their torch.compile'd wrappers. The parts
        (double backward, which compiled graphs do not support), checkpoints and G_ema keep the modules."""
        if not compile_:
            return self.G, self.D
        if "grow" in self.objective.parts:
            self._warn("train.compile is ignored with progressive growing: the fade-in changes the models every "
                       "step, which would recompile them every step")
            return self.G, self.D
        return torch.compile(self.G), torch.compile(self.D)  # type: ignore[return-value]

    def _prepare_batch(self) -> int:
        """Let the parts set the models up for `images_seen` (growing); the size of the next (global) batch."""
        size = self.objective.prepare_batch(self.counters.images_seen, self._models())
        return self.t.batch_size if size is None else size

    def _latents(self, rng: torch.Generator, b: int) -> torch.Tensor:
        """z of this process's b rows: drawn for the global batch and sliced, so W processes use exactly
        the latents one process with the global batch would."""
        w, r = self.dist.world, self.dist.rank
        z = torch.randn(b * w, self.z_dim, device=self.device, generator=rng)
        return z if w == 1 else z[r * b : (r + 1) * b]

    def _global_step(self, s: DStep) -> DStep:
        """The D step as one process with the global batch would have seen it (for after_d_step)."""
        g = functools.partial(dist_.all_gather_cat, d=self.dist)
        return dataclasses.replace(s, real=g(s.real.detach()), fake=g(s.fake.detach()), d_real=g(s.d_real.detach()),
                                   labels=None if s.labels is None else g(s.labels))

    def train_step(self) -> dict[str, torch.Tensor]:
        """`d_steps` D updates, then one G update. Every random draw comes from a generator seeded by
        (seed, counter) -- and, with several processes, the rank -- so the step is a pure function of the
        checkpointed state."""
        G, D, obj, amp, c = self.G, self.D, self.objective, self.precision, self.counters
        world = self.dist.world
        logged: dict[str, torch.Tensor] = {}
        for _ in range(self.d_steps):
            real, labels = self.stream.next(c.d_iter, self._prepare_batch() // world)
            real = obj.reals(real, D)
            labels = labels if self.conditional else None
            rng = seeded_generator(self.seed + 2, c.d_iter, self.device)
            z = self._latents(rng, real.shape[0])
            if self.dist.enabled:  # this process's own stream for the parts (augmentation, GP, PL noise)
                rng = dist_.rank_generator(self.seed + 2, c.d_iter, self.dist.rank, self.device)

            # (1) D: tell real from fake, plus the terms of the objective's parts
            with amp.autocast():
                fake = self._G_fwd(z, labels)
            fake = amp.fp32(fake)
            real_a, fake_a = obj.augment(real, rng), obj.augment(fake.detach(), rng)
            with amp.autocast():
                d_real = self._D_fwd(real_a, labels)
                d_fake = self._D_fwd(fake_a, labels)
            d_real = amp.fp32(d_real)
            loss_d = obj.loss.d_loss(d_real, amp.fp32(d_fake))
            s = DStep(G, D, real_a, fake_a, d_real, labels, rng, c.d_iter)
            total = obj.d_total(loss_d, s, logged)
            self.opt_D.zero_grad(set_to_none=True)
            amp.backward(total, "D")
            dist_.average_gradients(D.parameters(), self.dist)
            amp.step(self.opt_D, "D")
            obj.after_d_step(self._global_step(s) if self._global_after_d else s)
            c.d_iter += 1
            c.images_seen += real.shape[0] * world

        # (2) G: fool D. D's weights are frozen here, so backward skips their (unused) gradients.
        D.requires_grad_(False)
        fake_g = obj.augment(fake, rng)
        with amp.autocast():
            d_fake_g = self._D_fwd(fake_g, labels)
        loss_g = obj.loss.g_loss(amp.fp32(d_fake_g))
        total_g = obj.g_total(loss_g, GStep(G, z, labels, rng, c.step), logged)
        self.opt_G.zero_grad(set_to_none=True)
        amp.backward(total_g, "G")
        dist_.average_gradients(G.parameters(), self.dist)
        amp.step(self.opt_G, "G")
        D.requires_grad_(True)

        if self.ema is not None:
            self.ema.update(G, c.step, real.shape[0] * self.d_steps * world)
        c.step += 1
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **logged}


    # --- what the loop samples and evaluates ----------------------------------------------------------------
    @property
    def sampler(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.G

    @torch.no_grad()
    def sample_grid(self) -> torch.Tensor:
        G = self.sampler
        was_training = G.training
        G.eval()
        x = G(self.fixed_z, self.fixed_labels)
        G.train(was_training)
        return x.float()

    def progress(self) -> dict[str, float]:
        """The state behind the losses, from the objective's parts: ADA's p, the growing stage, the
        path-length target."""
        return self.objective.progress()

    # --- checkpoints -------------------------------------------------------------------------------
    def sync_for_checkpoint(self) -> list[dict[str, Any]] | None:
        """Several processes (every one calls this at the same step): rank 0's buffers everywhere, so all hold
        what the checkpoint saves, and each process's RNG and part states gathered. None for one process."""
        if not self.dist.enabled:
            return None
        dist_.broadcast_buffers(self._models(), self.dist)
        return dist_.gather_objects({"rng": rng_state(), "parts": self.objective.state_dict()}, self.dist)

    def state(self, ranks: list[dict[str, Any]] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and this backend's metadata of a checkpoint (the loop adds counters, config and losses);
        `ranks` are the per-process states of a distributed run."""
        tensors = {**ckpt.module_tensors("G", self.G), **ckpt.module_tensors("D", self.D)}
        if self.ema is not None:
            tensors.update(ckpt.module_tensors("G_ema", self.ema.model))
        tg, pg = ckpt.optimizer_tensors("opt_G", self.opt_G)
        td, pd = ckpt.optimizer_tensors("opt_D", self.opt_D)
        tensors.update(tg)
        tensors.update(td)
        meta = {
            "parts": self.objective.state_dict(),
            "rng": rng_state(),
            "data": self.stream.state_dict(),
            "optim": {"opt_G": pg, "opt_D": pd},
        }
        if ranks is not None:
            meta["ranks"] = ranks  # per process: {"rng", "parts"}; meta["rng"] and meta["parts"] are rank 0's
        if self.precision.scalers:
            meta["amp"] = self.precision.state_dict()
        return tensors, meta

    def load_state(self, c: ckpt.Checkpoint) -> None:
        """Restore models, optimizers, EMA, counters, data position and every RNG stream. A checkpoint of a run on
        the same number of processes restores each process's own streams (bitwise continuation); another
        number continues from the global state (images seen, schedules, data position) and says so."""
        c.require_state("optim", "data", *(() if "ranks" in c.meta else ("rng",)))
        what = f" {c.path.name} ({c.describe()})"
        ckpt.load_module("G", self.G, c.tensors, what)
        ckpt.load_module("D", self.D, c.tensors, what)
        if self.ema is not None:
            ckpt.load_module(c.generator_prefix(), self.ema.model, c.tensors, what)
        ckpt.load_optimizer("opt_G", self.opt_G, c.tensors, c.meta["optim"]["opt_G"])
        ckpt.load_optimizer("opt_D", self.opt_D, c.tensors, c.meta["optim"]["opt_D"])
        self.counters.restore(c, self.t.batch_size, self.d_steps)
        saved_world, rank = int(c.meta.get("world_size", 1)), self.dist.rank
        ranks = c.meta.get("ranks") if saved_world == self.dist.world else None
        try:
            self.objective.load_state_dict(ranks[rank]["parts"] if ranks else c.meta.get("parts"), c.meta)
        except UserError as e:
            raise UserError(f"{c.path.name}: {e}") from None
        self._prepare_batch()
        self.stream.load_state_dict(c.meta["data"])
        if ranks:
            set_rng_state(ranks[rank]["rng"])
        elif rank == 0:
            set_rng_state(c.meta["rng"])
        else:  # a process the saved run did not have: fresh streams of its own
            dist_.seed_process_rngs(self.seed, rank, salt=c.step)
        self.precision.load_state_dict(c.meta.get("amp"))
        if saved_world != self.dist.world:
            self._warn(f"{c.path.name} was written by a run on {saved_world} process(es) and this one has "
                       f"{self.dist.world}: training continues from step {c.step} with the images seen, schedules "
                       f"and data position carried over, but not bitwise as {saved_world} process(es) would have "
                       "continued (per-process random streams and batch statistics differ)")

    def init_from(self, c: ckpt.Checkpoint) -> None:
        """Fine-tuning: take weights (G, D, G_ema) from another run; optimizers and step start fresh."""
        what = f" {c.path}" + (f" ({c.describe()})" if c.meta else "")
        ckpt.load_module("G", self.G, c.tensors, what)
        if any(k.startswith("D.") for k in c.tensors):
            ckpt.load_module("D", self.D, c.tensors, what)
        if self.ema is not None:
            ckpt.load_module(c.generator_prefix(), self.ema.model, c.tensors, what)
