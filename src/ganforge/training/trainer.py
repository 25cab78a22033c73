"""The training loop. `Trainer.train_step` is the whole GAN update and fits on a screen; the rest
is bookkeeping that makes a run observable (logs, grids, TensorBoard) and unkillable (atomic
checkpoints, exact resume, NaN stop, SIGINT/SIGTERM save).

The same loop runs as one process or as one of several (see training/distributed.py for the
conventions): then every process takes its slice of the global batch, gradients are averaged before
each optimizer step, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import errno
import functools
import math
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ganforge.data.from_config import load_data
from ganforge.data.pipeline import BatchStream, seeded_generator
from ganforge.device import resolve_device
from ganforge.errors import DistributedFailure, TrainingDiverged, UserError, warn
from ganforge.images import make_grid, save_png
from ganforge.losses import DStep, GStep, Part
from ganforge.models import build_discriminator, build_generator
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.rundir import RunDir
from ganforge.training import distributed as dist_
from ganforge.training.distributed import SINGLE, Dist
from ganforge.training.ema import EMA
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


def fixed_labels(cfg: dict[str, Any], data: Any, n: int, device: torch.device) -> torch.Tensor:
    """Labels of the fixed sample grid: one class per grid column, or the attributes of n real images
    (repeated when the data holds fewer than n)."""
    m = cfg["model"]
    if m["label_kind"] == "attributes":
        idx = np.arange(n) % len(data.labels)
        return torch.as_tensor(np.asarray(data.labels[idx]), dtype=torch.float32, device=device)
    return torch.arange(n, device=device) % m["num_labels"]


def grid_columns(cfg: dict[str, Any]) -> int | None:
    m = cfg["model"]
    if m["conditional"] and m["label_kind"] == "class" and m["num_labels"] <= 16:
        return m["num_labels"]
    return None


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


TIME_BUDGET = "time budget"  # the stop reason train.max_seconds gives (train.log: "stopped by time budget")
_STOP_CODES = {"SIGINT": 1, "SIGTERM": 2, TIME_BUDGET: 3}
_STOP_NAMES = {v: k for k, v in _STOP_CODES.items()}


class Trainer:
    def __init__(self, cfg: dict[str, Any], run: RunDir | None = None, data: Any = None, quiet: bool = False,
                 dist: Dist = SINGLE):  # fmt: skip
        self.cfg, self.run, self.quiet, self.dist = cfg, run, quiet, dist
        t = cfg["train"]
        if t["threads"]:
            torch.set_num_threads(t["threads"])
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
        self.conditional = bool(cfg["model"]["conditional"])
        self.G = build_generator(cfg).to(self.device)
        self.D = build_discriminator(cfg).to(self.device)
        if t["sync_bn"] and dist.enabled:
            self.G = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.G)
            self.D = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.D)
        # conv models of any kind (nn.Conv2d, equalized, spectral-norm parametrized) have 4-D weights
        self.channels_last = t["channels_last"] and any(p.dim() == 4 for p in self.D.parameters())
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        dist_.broadcast_modules((self.G, self.D), dist)
        # the loss and every part the config turns on (regularizers, augmentation, growing schedule)
        self.objective = Objective.from_config(cfg, self.G, self.D)
        self.d_steps = t["d_steps"]
        self.images_seen = 0  # global: real images shown to D by all processes together
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=t["lr_g"], betas=(t["beta1"], t["beta2"]))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=t["lr_d"], betas=(t["beta1"], t["beta2"]))
        self.ema = EMA(self.G, t["ema_decay"], t["ema_start"], t["ema_kimg"]) if t["ema"] else None
        self.stream = BatchStream(
            data.images, data.labels, t["batch_size"] // dist.world, self.seed, self.device,
            hflip=cfg["data"]["hflip"], channels_last=self.channels_last, rank=dist.rank, world_size=dist.world,
        )  # fmt: skip
        self.precision = Precision(t["amp"], self.device)
        self._G_fwd, self._D_fwd = self._forward_modules(t["compile"])
        # several processes: a part that adapts to what D saw (ADA's p) sees the global batch, so it takes
        # the same decision on every process, at the speed (in images) of one process with the global batch
        self._global_after_d = dist.enabled and any(
            type(p).after_d_step is not Part.after_d_step for p in self.objective.parts.values()
        )
        self._pending: str | None = None  # a signal this process got, not yet agreed by all (several processes)
        self.z_dim = cfg["model"]["z_dim"]
        n = t["n_samples"]
        self.fixed_z = torch.randn(n, self.z_dim, generator=seeded_generator(self.seed, -1)).to(self.device)
        self.fixed_labels = fixed_labels(cfg, data, n, self.device) if self.conditional else None
        self.train_seconds = 0.0  # wall-clock spent training (not evaluating), carried across resumes
        self._evaluator: Any = None
        self.step = 0  # G updates
        self.d_iter = 0  # D updates (= batches drawn); differs from step when d_steps > 1
        self._stop: str | None = None
        self._last: dict[str, float] = {}
        self._batch_size = self._prepare_batch()
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
                       "step, which would recompile them every step")  # fmt: skip
            return self.G, self.D
        return torch.compile(self.G), torch.compile(self.D)  # type: ignore[return-value]

    def _prepare_batch(self) -> int:
        """Let the parts set the models up for `images_seen` (growing); the size of the next (global) batch."""
        size = self.objective.batch_size(self.images_seen, self._models())
        return self.cfg["train"]["batch_size"] if size is None else size

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
                                   labels=None if s.labels is None else g(s.labels))  # fmt: skip

    def train_step(self) -> dict[str, torch.Tensor]:
        """`d_steps` D updates, then one G update. Every random draw comes from a generator seeded by
        (seed, counter) -- and, with several processes, the rank -- so the step is a pure function of the
        checkpointed state."""
        G, D, obj, amp = self.G, self.D, self.objective, self.precision
        world = self.dist.world
        logged: dict[str, torch.Tensor] = {}
        for _ in range(self.d_steps):
            real, labels = self.stream.next(self.d_iter, self._prepare_batch() // world)
            real = obj.reals(real, D)
            labels = labels if self.conditional else None
            rng = seeded_generator(self.seed + 2, self.d_iter, self.device)
            z = self._latents(rng, real.shape[0])
            if self.dist.enabled:  # this process's own stream for the parts (augmentation, GP, PL noise)
                rng = dist_.rank_generator(self.seed + 2, self.d_iter, self.dist.rank, self.device)

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
            s = DStep(G, D, real_a, fake_a, d_real, labels, rng, self.d_iter)
            total = obj.d_total(loss_d, s, logged)
            self.opt_D.zero_grad(set_to_none=True)
            amp.backward(total, "D")
            dist_.average_gradients(D.parameters(), self.dist)
            amp.step(self.opt_D, "D")
            obj.after_d_step(self._global_step(s) if self._global_after_d else s)
            self.d_iter += 1
            self.images_seen += real.shape[0] * world

        # (2) G: fool D. D's weights are frozen here, so backward skips their (unused) gradients.
        D.requires_grad_(False)
        fake_g = obj.augment(fake, rng)
        with amp.autocast():
            d_fake_g = self._D_fwd(fake_g, labels)
        loss_g = obj.loss.g_loss(amp.fp32(d_fake_g))
        total_g = obj.g_total(loss_g, GStep(G, z, labels, rng, self.step), logged)
        self.opt_G.zero_grad(set_to_none=True)
        amp.backward(total_g, "G")
        dist_.average_gradients(G.parameters(), self.dist)
        amp.step(self.opt_G, "G")
        D.requires_grad_(True)

        if self.ema is not None:
            self.ema.update(G, self.step, real.shape[0] * self.d_steps * world)
        self.step += 1
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **logged}

    # ---------------------------------------------------------------------------------------------
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

    def save_samples(self) -> Path | None:
        if self.run is None:
            return None
        x = self.sample_grid()
        grid = make_grid(x, nrow=grid_columns(self.cfg))
        path = save_png(grid, self.run.sample_path(self.step))
        if self.run.tb is not None:
            self.run.tb.add_image("samples", grid, self.step, dataformats="HWC")
        spread = x.std(dim=0).mean().item()
        if spread < 0.02 and self.step >= 500:  # early grids are legitimately flat
            self._warn(f"step {self.step}: samples from different noise are nearly identical "
                       f"(mean per-pixel std {spread:.4f}): the generator may have collapsed")  # fmt: skip
        return path

    def _warn(self, msg: str) -> None:
        if self.dist.is_main:  # one line per job, not one per process
            warn(msg, self.run.log_text if self.run is not None else None)

    # --- checkpoints -------------------------------------------------------------------------------
    def _sync_for_checkpoint(self) -> list[dict[str, Any]] | None:
        """Several processes (every one calls this at the same step): rank 0's buffers everywhere, so all hold
        what the checkpoint saves, and each process's RNG and part states gathered. None for one process."""
        if not self.dist.enabled:
            return None
        dist_.broadcast_buffers(self._models(), self.dist)
        return dist_.gather_objects({"rng": rng_state(), "parts": self.objective.state_dict()}, self.dist)

    def state(self, ranks: list[dict[str, Any]] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and metadata of a checkpoint; `ranks` are the per-process states of a distributed run."""
        tensors = {**ckpt.module_tensors("G", self.G), **ckpt.module_tensors("D", self.D)}
        if self.ema is not None:
            tensors.update(ckpt.module_tensors("G_ema", self.ema.model))
        tg, pg = ckpt.optimizer_tensors("opt_G", self.opt_G)
        td, pd = ckpt.optimizer_tensors("opt_D", self.opt_D)
        tensors.update(tg)
        tensors.update(td)
        meta = {
            "images_seen": self.images_seen,
            "train_seconds": round(self.train_seconds, 3),
            "parts": self.objective.state_dict(),
            "config": self.cfg,
            "rng": rng_state(),
            "data": self.stream.state_dict(),
            "d_iter": self.d_iter,
            "optim": {"opt_G": pg, "opt_D": pd},
            "losses": self._last,
            "world_size": self.dist.world,
        }
        if ranks is not None:
            meta["ranks"] = ranks  # per process: {"rng", "parts"}; meta["rng"] and meta["parts"] are rank 0's
        if self.precision.scalers:
            meta["amp"] = self.precision.state_dict()
        return tensors, meta

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint; on a full disk keep the previous one intact, warn, and continue or stop.
        Several processes: every one calls this at the same step, rank 0 writes, and the others wait for it
        (so a process never runs ahead of the checkpoint) and learn whether a full disk stops the job."""
        ranks = self._sync_for_checkpoint()
        path = None
        if self.run is not None:
            try:
                path = self._write_checkpoint(ranks)
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                have = ckpt.list_checkpoints(self.run.checkpoints)
                prev = have[-1][1].with_suffix(".safetensors").name if have else "none yet"
                self._warn(f"disk full: could not write the checkpoint of step {self.step} ({e.strerror}); "
                           f"the previous checkpoint ({prev}) is intact")  # fmt: skip
                if self.cfg["train"]["on_disk_full"] == "stop":
                    self._stop = "disk full"
        if self.dist.enabled and dist_.broadcast_object(self._stop == "disk full", self.dist, "a checkpoint"):
            self._stop = "disk full"
        return path

    def _write_checkpoint(self, ranks: list[dict[str, Any]] | None = None) -> Path:
        assert self.run is not None
        tensors, meta = self.state(ranks)
        path = ckpt.save_checkpoint(
            self.run.checkpoints, self.step, tensors, meta, self.cfg["train"]["keep_checkpoints"]
        )
        self.run.plot_losses()
        return path

    def load_state(self, c: ckpt.Checkpoint) -> None:
        """Restore models, optimizers, EMA, step, data position and every RNG stream. A checkpoint of a run on
        the same number of processes restores each process's own streams (bitwise continuation); another
        number continues from the global state (images seen, schedules, data position) and says so."""
        what = f" {c.path.name} ({c.describe()})"
        ckpt.load_module("G", self.G, c.tensors, what)
        ckpt.load_module("D", self.D, c.tensors, what)
        if self.ema is not None:
            ckpt.load_module(c.generator_prefix(), self.ema.model, c.tensors, what)
        ckpt.load_optimizer("opt_G", self.opt_G, c.tensors, c.meta["optim"]["opt_G"])
        ckpt.load_optimizer("opt_D", self.opt_D, c.tensors, c.meta["optim"]["opt_D"])
        self.step = c.step
        self.train_seconds = float(c.meta.get("train_seconds", 0.0))
        self.d_iter = int(c.meta.get("d_iter", c.step * self.d_steps))
        self.images_seen = int(c.meta.get("images_seen", self.d_iter * self.cfg["train"]["batch_size"]))
        saved_world, rank = int(c.meta.get("world_size", 1)), self.dist.rank
        ranks = c.meta.get("ranks") if saved_world == self.dist.world else None
        try:
            self.objective.load_state_dict(ranks[rank]["parts"] if ranks else c.meta.get("parts"), c.meta)
        except UserError as e:
            raise UserError(f"{c.path.name}: {e}") from None
        self._batch_size = self._prepare_batch()
        self.stream.load_state_dict(c.meta["data"])
        if ranks:
            set_rng_state(ranks[rank]["rng"])
        elif rank == 0:
            set_rng_state(c.meta["rng"])
        else:  # a process the saved run did not have: fresh streams of its own
            dist_.seed_process_rngs(self.seed, rank, salt=c.step)
        self.precision.load_state_dict(c.meta.get("amp"))
        self._last = c.meta.get("losses", {})
        if saved_world != self.dist.world:
            self._warn(f"{c.path.name} was written by a run on {saved_world} process(es) and this one has "
                       f"{self.dist.world}: training continues from step {c.step} with the images seen, schedules "
                       f"and data position carried over, but not bitwise as {saved_world} process(es) would have "
                       "continued (per-process random streams and batch statistics differ)")  # fmt: skip

    def init_from(self, c: ckpt.Checkpoint) -> None:
        """Fine-tuning: take weights (G, D, G_ema) from another run; optimizers and step start fresh."""
        what = f" {c.path}" + (f" ({c.describe()})" if c.meta else "")
        ckpt.load_module("G", self.G, c.tensors, what)
        if any(k.startswith("D.") for k in c.tensors):
            ckpt.load_module("D", self.D, c.tensors, what)
        if self.ema is not None:
            ckpt.load_module(c.generator_prefix(), self.ema.model, c.tensors, what)

    # --- evaluation during training ------------------------------------------------------------------
    def evaluate(self, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """FID (and friends) of the sampling generator now, appended to eval.jsonl with the step, images seen
        and training wall-clock; the best FID so far is kept as checkpoints/best/ (never pruned). A failure
        (e.g. feature-network weights missing) warns and turns evaluation off instead of ending the run.
        Several processes: rank 0 evaluates (the others wait at their next collective); `ranks` are the
        per-process states for the `best` checkpoint."""
        t = self.cfg["train"]
        if self.run is None or not t["eval_every"] or self._evaluator is False:
            return None
        from ganforge.metrics.evaluate import build_network, default_network, evaluate_generator

        try:
            if self._evaluator is None:
                self._evaluator = build_network(t["eval_network"] or default_network(self.cfg["data"]["source"]))
            rec = evaluate_generator(self.sampler, self.cfg, metrics=t["eval_metrics"], n=t["eval_n"],
                                     network=self._evaluator, device=str(self.device), progress=False)  # fmt: skip
        except UserError as e:
            self._evaluator = False
            self._warn(f"evaluation during training is off for this run: {e}")
            return None
        rec.update(step=self.step, images_seen=self.images_seen, train_seconds=round(self.train_seconds, 2),
                   ema=self.ema is not None, source="train")  # fmt: skip
        self.run.log_eval(rec)
        if self.run.tb is not None:
            for k in ("fid", "kid", "is", "precision", "recall"):
                if k in rec:
                    self.run.tb.add_scalar(f"eval/{k}", rec[k], self.step)
        if "fid" in rec:
            best = [r["fid"] for r in self.run.read_eval() if r.get("source") == "train" and "fid" in r]
            if rec["fid"] <= min(best):
                tensors, meta = self.state(ranks)
                ckpt.save_checkpoint(self.run.path / "checkpoints" / "best", self.step, tensors,
                                     {**meta, "fid": rec["fid"]}, keep=1)  # fmt: skip
        return rec

    # --- the loop ----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.dist.enabled:  # every process must stop at the same step: agreed at the next sync point
            self._pending = self._pending or name
        else:
            self._stop = name

    def _agree(self, out: dict[str, torch.Tensor]) -> dict[str, float]:
        """The step's logged values as numbers. Several processes: their mean over the processes (so a NaN
        anywhere is a NaN everywhere), and a signal any process got becomes every process's stop."""
        if not self.dist.enabled:
            return {k: v.item() for k, v in out.items()}
        mean, code = dist_.reduce_step(torch.stack([v.float() for v in out.values()]),
                                       _STOP_CODES.get(self._pending or "", 0), self.dist)  # fmt: skip
        if code and self._stop is None:
            self._stop = _STOP_NAMES[code]
        return dict(zip(out, mean.tolist(), strict=True))

    def fit(self) -> dict[str, Any]:
        """Train up to `train.steps`; returns a summary. Raises TrainingDiverged on NaN/inf, and
        DistributedFailure when another process of a distributed run dies or stops answering."""
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread
                pass
        try:
            self._loop()
            self._finish()
        except DistributedFailure as e:
            msg = f"{e} at step {self.step}; {self._where()}"
            if self.run is not None:
                msg += f"; continue with `ganforge train --resume {self.run.path}`"
                self.run.log_text("ERROR " + msg)
            raise DistributedFailure(msg) from None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return {"step": self.step, "stopped_by": self._stop, **self._last}

    def _loop(self) -> None:
        t = self.cfg["train"]
        total = t["steps"]
        pbar = self._progress_bar()
        is_cuda = self.device.type == "cuda"
        tic, tic_images = time.perf_counter(), self.images_seen
        try:
            mark = time.perf_counter()
            while self.step < total and self._stop is None:
                out = self.train_step()
                logging = self.step % t["log_every"] == 0 or self.step == total
                if not is_cuda or logging:  # on GPU, sync only when logging
                    values = self._agree(out)
                    if not all(math.isfinite(v) for v in values.values()):
                        self._diverged(values["loss_d"], values["loss_g"])
                    self._last = values
                if logging:
                    now = time.perf_counter()
                    ips = (self.images_seen - tic_images) / max(now - tic, 1e-9)  # real images D saw
                    tic, tic_images = now, self.images_seen
                    self._log(ips)
                    extra = {k: f"{v:.3g}" for k, v in self.progress().items() if k in ("ada_p", "resolution", "alpha")}
                    step = {"step": self.step} if t["max_seconds"] else {}
                    pbar.set_postfix(**step, D=f"{self._last['loss_d']:.3f}", G=f"{self._last['loss_g']:.3f}",
                                     img_s=f"{ips:.0f}", **extra, refresh=False)  # fmt: skip
                if t["sample_every"] and self.step % t["sample_every"] == 0:
                    self.save_samples()
                self.train_seconds += time.perf_counter() - mark  # sampling and checkpoints count; evaluation not
                pbar.update(min(self.train_seconds, t["max_seconds"]) - pbar.n if t["max_seconds"] else 1)
                mark = time.perf_counter()
                if t["max_seconds"] and self.train_seconds >= t["max_seconds"] and self._stop is None:
                    if self.dist.enabled:  # agreed with the other processes at the next step's sync
                        self._pending = self._pending or TIME_BUDGET
                    else:
                        self._stop = TIME_BUDGET  # _finish writes the checkpoint of this step
                if t["checkpoint_every"] and self.step % t["checkpoint_every"] == 0:
                    self.save_checkpoint()
                now = time.perf_counter()
                self.train_seconds += now - mark
                if t["eval_every"] and (self.step % t["eval_every"] == 0 or self.step == total):
                    self.evaluate(self._sync_for_checkpoint())
                    tic += time.perf_counter() - now  # img/s measures training only
                mark = time.perf_counter()
        finally:
            pbar.close()

    def _progress_bar(self) -> tqdm:
        """Steps out of `train.steps`; with a time budget (`train.max_seconds`, e.g. from `ganforge compare`,
        where the step total is a placeholder) the budget's training seconds instead, the step in the postfix."""
        t = self.cfg["train"]
        common = dict(desc="train", disable=self.quiet or not self.dist.is_main, dynamic_ncols=True, mininterval=0.5,
                      file=sys.stderr)  # fmt: skip
        if not t["max_seconds"]:
            return tqdm(total=t["steps"], initial=self.step, unit="step", **common)
        budget = float(t["max_seconds"])
        return tqdm(total=budget, initial=min(self.train_seconds, budget), unit="s", **common,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of training [{elapsed}<{remaining}{postfix}]")  # fmt: skip

    def _finish(self) -> None:
        """The end of a run (done or stopped): a checkpoint of the last step, a sample grid, the loss curves."""
        if self.run is None and not self.dist.enabled:
            return
        saved = self.run is not None and any(st == self.step for st, _ in ckpt.list_checkpoints(self.run.checkpoints))
        if self.dist.enabled:
            saved = dist_.broadcast_object(saved, self.dist, "the final checkpoint")
        saved = saved or self.save_checkpoint() is not None
        if self.run is None:
            return
        if self._stop:
            note = "checkpoint saved" if saved else "no checkpoint of this step could be written"
            self.run.log_text(f"stopped by {self._stop} at step {self.step}; {note}")
        try:
            if not self.run.sample_path(self.step).exists():
                self.save_samples()
            self.run.plot_losses()
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self._warn(f"disk full: final sample grid / loss curves not written ({e.strerror})")
        if self.run.tb is not None:
            self.run.tb.flush()

    def progress(self) -> dict[str, float]:
        """The state behind the losses, from the objective's parts: ADA's p, the growing stage, the
        path-length target."""
        return self.objective.progress()

    def _log(self, ips: float) -> None:
        rec = {"step": self.step, "images_seen": self.images_seen, **self._last, **self.progress(),
               "img_per_s": round(ips, 2), "time": round(time.time(), 3)}  # fmt: skip
        if self.run is None:
            return
        self.run.log_metrics(rec)
        if self.run.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "time", "images_seen"):
                    self.run.tb.add_scalar(f"train/{k}", v, self.step)

    def _where(self) -> str:
        """Where the last good checkpoint is, for an error message."""
        if self.run is None:
            return "process 0 writes the checkpoints" if self.dist.enabled else "no checkpoint was written yet"
        have = ckpt.list_checkpoints(self.run.checkpoints)
        if not have:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {have[-1][1].with_suffix('.safetensors')}"

    def _diverged(self, ld: float, lg: float) -> None:
        msg = (f"training diverged at step {self.step}: D loss {ld}, G loss {lg}; {self._where()}. "
               "Lower train.lr_d/train.lr_g or change the loss, then resume or restart")  # fmt: skip
        if self.run is not None:
            self.run.log_text("ERROR " + msg)
        raise TrainingDiverged(msg)
