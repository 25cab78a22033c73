"""The training loop, shared by every backend. A backend (training/trainer.py: torch; tf/train/trainer.py: Keras) does
the step and knows its tensors; the loop owns everything around it:

- the counters (step, D updates, images seen, training seconds), written into every checkpoint here, once;
- the cadence of logs, sample grids, checkpoints and evaluation during training, and the progress bar;
- stops: SIGINT/SIGTERM, the time budget (train.max_seconds), a full disk; NaN/inf losses (TrainingDiverged);
- the run's events (runs/events.py) and train.log lines.

Several processes (torch backend only): the loop agrees stops and NaN with the others through
training/distributed.py, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import errno
import math
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from tqdm import tqdm

from ganforge.config import train_view
from ganforge.errors import DistributedFailure, TrainingDiverged, warn
from ganforge.images import make_grid, save_png
from ganforge.models import standing
from ganforge.models.sampling import run_label_kind
from ganforge.progress import bar
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.events import Event, Stop
from ganforge.runs.rundir import RunDir
from ganforge.training import distributed as dist_
from ganforge.training.distributed import Dist

_STOP_CODES = {Stop.SIGINT: 1, Stop.SIGTERM: 2, Stop.TIME_BUDGET: 3}
_STOP_NAMES = {v: k for k, v in _STOP_CODES.items()}
COLLAPSE_SPREAD = 0.02  # mean per-pixel std of the sample grid below which the loop warns of collapse
COLLAPSE_AFTER = 500  # steps: early grids are legitimately flat


@dataclass
class Counters:
    """Where a run is. The backend advances them in its step (its random streams are keyed by them); the loop
    writes them into checkpoints and `restore` reads them back."""

    step: int = 0  # G updates
    d_iter: int = 0  # D updates (= batches drawn); differs from step when d_steps > 1
    images_seen: int = 0  # global: real images shown to D by all processes together
    train_seconds: float = 0.0  # wall-clock spent training (not evaluating), carried across resumes

    def meta(self) -> dict[str, Any]:
        return {"images_seen": self.images_seen, "train_seconds": round(self.train_seconds, 3), "d_iter": self.d_iter}

    def restore(self, c: ckpt.Checkpoint, batch_size: int, d_steps: int) -> None:
        """From a checkpoint (older ones lack d_iter/images_seen/train_seconds: derived as those runs counted)."""
        self.step = c.step
        self.d_iter = int(c.meta.get("d_iter", c.step * d_steps))
        self.images_seen = int(c.meta.get("images_seen", self.d_iter * batch_size))
        self.train_seconds = float(c.meta.get("train_seconds", 0.0))


class Backend(Protocol):
    """What a backend gives the loop (training/trainer.Trainer and tf/train.TFTrainer implement it)."""

    cfg: dict[str, Any]
    run: RunDir | None
    dist: Dist
    device: torch.device
    quiet: bool
    counters: Counters
    has_ema: bool

    def train_step(self) -> dict[str, Any]:
        """d_steps D updates and one G update; the logged values (0-d tensors or numbers), counters advanced."""

    def state(self, ranks: list[dict[str, Any]] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The checkpoint's tensors and the backend's own metadata (optimizers, RNG, data position, parts)."""

    def load_state(self, c: ckpt.Checkpoint) -> None:
        """Resume: everything `state` saved, and the counters (Counters.restore)."""

    def init_from(self, c: ckpt.Checkpoint) -> None:
        """Fine-tuning: weights from another run; optimizers and counters start fresh."""

    def sample_grid(self) -> torch.Tensor:
        """The fixed-noise grid of the sampling generator (NCHW, [-1, 1])."""

    @property
    def sampler(self) -> torch.nn.Module:
        """A torch generator with the sampling weights (G_ema, else G), for evaluation during training."""

    def progress(self) -> dict[str, float]:
        """The state behind the losses (ADA's p, the growing stage, ...), for logs and the progress bar."""

    def sync_for_checkpoint(self) -> list[dict[str, Any]] | None:
        """Several processes: make them hold what the checkpoint saves; per-process states. None for one."""


class BackendBase:
    """What every backend offers its callers besides the protocol: the counters as attributes, and one warning
    path (stderr + train.log, once per job)."""

    counters: Counters
    ema: Any
    run: RunDir | None
    dist: Dist

    @property
    def step(self) -> int:
        return self.counters.step

    @property
    def images_seen(self) -> int:
        return self.counters.images_seen

    @property
    def has_ema(self) -> bool:
        return self.ema is not None

    def _warn(self, msg: str) -> None:
        if self.dist.is_main:  # one line per job, not one per process
            warn(msg, self.run.log_text if self.run is not None else None)


def grid_columns(cfg: dict[str, Any]) -> int | None:
    m = cfg["model"]
    if m["conditional"] and m["label_kind"] == "class" and m["num_labels"] <= 16:
        return m["num_labels"]
    return None


class Loop:
    def __init__(self, backend: Backend) -> None:
        self.b = backend
        self.cfg, self.run, self.dist = backend.cfg, backend.run, backend.dist
        self.t = train_view(self.cfg)
        self.c = backend.counters
        self.last: dict[str, float] = {}  # the newest logged values (checkpointed as "losses")
        self.stop: Stop | None = None
        self._pending: Stop | None = None  # a stop this process saw, not yet agreed by all (several processes)
        self._evaluator: Any = None  # the feature network, built on first use; False once evaluation failed
        self._standing: tuple[int, torch.nn.Module | None] | None = None  # (step, G_ema with standing statistics)
        self._untimed = 0.0  # seconds of standing statistics since the last accounting: sampling work, not training

    # --- run-folder side effects ---------------------------------------------------------------------------
    def warn(self, msg: str) -> None:
        if self.dist.is_main:  # one line per job, not one per process
            warn(msg, self.run.log_text if self.run is not None else None)

    def event(self, kind: Event, **fields: Any) -> None:
        if self.run is not None:
            self.run.log_event(kind, **fields)

    def resume(self, c: ckpt.Checkpoint) -> None:
        self.b.load_state(c)
        self.last = c.meta.get("losses", {})

    def save_samples(self) -> None:
        if self.run is None:
            return
        x = self.b.sample_grid()
        grid = make_grid(x, nrow=grid_columns(self.cfg))
        save_png(grid, self.run.sample_path(self.c.step))
        if self.run.tb is not None:
            self.run.tb.add_image("samples", grid, self.c.step, dataformats="HWC")
        spread = x.std(dim=0).mean().item()
        if spread < COLLAPSE_SPREAD and self.c.step >= COLLAPSE_AFTER:
            self.event(Event.COLLAPSE, step=self.c.step, spread=round(spread, 5))
            self.warn(f"step {self.c.step}: samples from different noise are nearly identical "
                      f"(mean per-pixel std {spread:.4f}): the generator may have collapsed")

    def standing_sampler(self) -> torch.nn.Module | None:
        """A copy of G_ema with standing BatchNorm statistics (models/standing.py), what evaluation scores and the
        checkpoint stores; None without EMA or BatchNorm. Computed once per step."""
        if self._standing is None or self._standing[0] != self.c.step:
            G, t0 = None, time.perf_counter()
            if self.b.has_ema and standing.batchnorms(self.b.sampler):
                from ganforge.models import build_generator

                # a plain copy on the CPU (no SyncBatchNorm: rank 0 alone runs this; no channels-last), so the
                # statistics are the ones load_generator computes from the same weights, on any device
                with torch.random.fork_rng(devices=[]):  # building G draws init weights: leave training's RNG be
                    G = build_generator(self.cfg)
                    ckpt.load_module("G_ema", G, ckpt.module_tensors("G_ema", self.b.sampler), " (G_ema)")
                    standing.apply_standing_stats(G, label_kind=run_label_kind(self.cfg))
                G = G.to(next(self.b.sampler.parameters()).device)
            self._standing = (self.c.step, G)
            self._untimed += time.perf_counter() - t0
        return self._standing[1]

    def checkpoint_state(self, ranks: list[dict[str, Any]] | None = None) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = self.b.state(ranks)
        meta = {**meta, **self.c.meta(), "config": self.cfg, "losses": self.last, "world_size": self.dist.world}
        # torch backend only: a TensorFlow checkpoint stays what the Keras G_ema holds (load_generator computes the
        # same standing statistics on load)
        G = self.standing_sampler() if self.cfg.get("backend", "torch") == "torch" else None
        own = None if G is None else ckpt.module_tensors("G_ema", G)
        if own is not None and own.keys() <= tensors.keys():  # G_ema saved by this backend under that name
            tensors.update(own)  # sampling a checkpoint is then reproducible without recomputing anything
            meta[standing.META_KEY] = standing.settings()
        return tensors, meta

    def save_checkpoint(self) -> bool:
        """Write a checkpoint; on a full disk keep the previous one intact, warn, and continue or stop.
        Several processes: every one calls this at the same step, rank 0 writes, the others wait for it (so a
        process never runs ahead of the checkpoint) and learn whether a full disk stops the job."""
        ranks = self.b.sync_for_checkpoint()
        saved = False
        if self.run is not None:
            try:
                tensors, meta = self.checkpoint_state(ranks)
                ckpt.save_checkpoint(self.run.checkpoints, self.c.step, tensors, meta,
                                     self.t.keep_checkpoints)
                self.run.plot_losses()
                saved = True
            except OSError as e:
                if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                have = ckpt.list_checkpoints(self.run.checkpoints)
                prev = have[-1][1].with_suffix(".safetensors").name if have else "none yet"
                self.event(Event.DISK_FULL, step=self.c.step, error=e.strerror)
                self.warn(f"disk full: could not write the checkpoint of step {self.c.step} ({e.strerror}); "
                          f"the previous checkpoint ({prev}) is intact")
                if self.t.on_disk_full == "stop":
                    self.stop = Stop.DISK_FULL
        if self.dist.enabled and dist_.broadcast_object(self.stop is Stop.DISK_FULL, self.dist, "a checkpoint"):
            self.stop = Stop.DISK_FULL
        return saved

    def evaluate(self) -> dict[str, Any] | None:
        """FID (and friends) of the sampling generator now, appended to eval.jsonl with the step, images seen
        and training wall-clock; the best FID so far is kept as checkpoints/best/ (never pruned). A failure
        (e.g. feature-network weights missing) warns and turns evaluation off instead of ending the run.
        Several processes: rank 0 evaluates (the others wait at their next collective)."""
        t = self.t
        ranks = self.b.sync_for_checkpoint()
        if self.run is None or not t.eval_every or self._evaluator is False:
            return None
        from ganforge.errors import UserError
        from ganforge.metrics.evaluate import build_network, default_network, evaluate_generator

        try:
            if self._evaluator is None:
                self._evaluator = build_network(t.eval_network or default_network(self.cfg["data"]["source"]))
            G = self.standing_sampler()
            rec = evaluate_generator(self.b.sampler if G is None else G, self.cfg, metrics=t.eval_metrics, n=t.eval_n,
                                     network=self._evaluator, device=str(self.b.device), progress=False,
                                     ema=self.b.has_ema, standing_stats=None if G is None else True)
        except UserError as e:
            self._evaluator = False
            self.warn(f"evaluation during training is off for this run: {e}")
            return None
        rec.update(step=self.c.step, images_seen=self.c.images_seen, train_seconds=round(self.c.train_seconds, 2),
                   ema=self.b.has_ema, source="train")
        self.run.log_eval(rec)
        if self.run.tb is not None:
            for k in ("fid", "kid", "is", "precision", "recall"):
                if k in rec:
                    self.run.tb.add_scalar(f"eval/{k}", rec[k], self.c.step)
        if "fid" in rec:
            best = [r["fid"] for r in self.run.read_eval() if r.get("source") == "train" and "fid" in r]
            if rec["fid"] <= min(best):
                tensors, meta = self.checkpoint_state(ranks)
                ckpt.save_checkpoint(self.run.path / "checkpoints" / "best", self.c.step, tensors,
                                     {**meta, "fid": rec["fid"]}, keep=1)
                self.event(Event.BEST, step=self.c.step, fid=rec["fid"])
        return rec

    # --- the loop ------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        name = Stop(signal.Signals(signum).name)
        if self.dist.enabled:  # every process must stop at the same step: agreed at the next sync point
            self._pending = self._pending or name
        else:
            self.stop = name

    def _agree(self, out: dict[str, Any]) -> dict[str, float]:
        """The step's logged values as numbers. Several processes: their mean over the processes (so a NaN
        anywhere is a NaN everywhere), and a stop any process saw becomes every process's stop."""
        if not self.dist.enabled:
            return {k: float(v) for k, v in out.items()}
        mean, code = dist_.reduce_step(torch.stack([torch.as_tensor(v).float() for v in out.values()]),
                                       _STOP_CODES.get(self._pending, 0) if self._pending else 0, self.dist)
        if code and self.stop is None:
            self.stop = _STOP_NAMES[code]
        return dict(zip(out, mean.tolist(), strict=True))

    def run_training(self) -> dict[str, Any]:
        """Train up to `train.steps` (or the time budget); returns a summary. Raises TrainingDiverged on
        NaN/inf, and DistributedFailure when another process of a distributed run dies or stops answering."""
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
            msg = f"{e} at step {self.c.step}; {self._where()}"
            if self.run is not None:
                msg += f"; continue with `ganforge train --resume {self.run.path}`"
                self.run.log_text("ERROR " + msg)
            raise DistributedFailure(msg) from None
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        return {"step": self.c.step, "stopped_by": self.stop.value if self.stop else None, **self.last}

    def _loop(self) -> None:
        t = self.t
        total = t.steps if t.steps is not None else math.inf  # None: the time budget alone ends the run
        pbar = self.progress_bar()
        is_cuda = self.b.device.type == "cuda"
        tic, tic_images = time.perf_counter(), self.c.images_seen
        try:
            mark = time.perf_counter()
            while self.c.step < total and self.stop is None:
                out = self.b.train_step()
                step = self.c.step
                logging = step % t.log_every == 0 or step == total
                if not is_cuda or logging:  # on GPU, sync only when logging
                    values = self._agree(out)
                    if not all(math.isfinite(v) for v in values.values()):
                        self._diverged(values["loss_d"], values["loss_g"])
                    self.last = values
                if logging:
                    now = time.perf_counter()
                    ips = (self.c.images_seen - tic_images) / max(now - tic, 1e-9)  # real images D saw
                    tic, tic_images = now, self.c.images_seen
                    self._log(ips)
                    extra = {k: f"{v:.3g}" for k, v in self.b.progress().items() if k in ("ada_p", "resolution", "alpha")}
                    shown = {"step": step} if t.max_seconds else {}
                    pbar.set_postfix(**shown, D=f"{self.last['loss_d']:.3f}", G=f"{self.last['loss_g']:.3f}",
                                     img_s=f"{ips:.0f}", **extra, refresh=False)
                if t.sample_every and step % t.sample_every == 0:
                    self.save_samples()
                self.c.train_seconds += time.perf_counter() - mark  # sampling and checkpoints count; evaluation not
                pbar.update(min(self.c.train_seconds, t.max_seconds) - pbar.n if t.max_seconds else 1)
                mark = time.perf_counter()
                if t.max_seconds and self.c.train_seconds >= t.max_seconds and self.stop is None:
                    if self.dist.enabled:  # agreed at the next sync (each step on CPU, each logged step on GPU)
                        self._pending = self._pending or Stop.TIME_BUDGET
                    else:
                        self.stop = Stop.TIME_BUDGET  # _finish writes the checkpoint of this step
                if t.checkpoint_every and step % t.checkpoint_every == 0:
                    self.save_checkpoint()
                now = time.perf_counter()
                self.c.train_seconds += now - mark - self._untimed  # standing statistics are not training
                self._untimed = 0.0
                if t.eval_every and (step % t.eval_every == 0 or step == total):
                    self.evaluate()
                    self._untimed = 0.0  # evaluation is not counted anyway
                    tic += time.perf_counter() - now  # img/s measures training only
                mark = time.perf_counter()
        finally:
            pbar.close()

    def progress_bar(self) -> tqdm:
        """Steps out of `train.steps`; with a time budget (`train.max_seconds`) the budget's training seconds
        instead, the step in the postfix."""
        t = self.t
        common = dict(desc="train", disable=self.b.quiet or not self.dist.is_main, dynamic_ncols=True,
                      mininterval=0.5, file=sys.stderr)
        if not t.max_seconds:
            return bar(total=t.steps, initial=self.c.step, unit="step", **common)
        budget = float(t.max_seconds)
        return bar(total=budget, initial=min(self.c.train_seconds, budget), unit="s", **common,
                    bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s of training [{elapsed}<{remaining}{postfix}]")

    def _finish(self) -> None:
        """The end of a run (done or stopped): a checkpoint of the last step, a sample grid, the loss curves."""
        if self.run is None and not self.dist.enabled:
            return
        step = self.c.step
        saved = self.run is not None and any(st == step for st, _ in ckpt.list_checkpoints(self.run.checkpoints))
        if self.dist.enabled:
            saved = dist_.broadcast_object(saved, self.dist, "the final checkpoint")
        saved = saved or self.save_checkpoint()
        if self.run is None:
            return
        if self.stop:
            note = "checkpoint saved" if saved else "no checkpoint of this step could be written"
            self.event(Event.STOP, step=step, reason=self.stop.value, saved=saved)
            self.run.log_text(f"stopped by {self.stop} at step {step}; {note}")
        try:
            if not self.run.sample_path(step).exists():
                self.save_samples()
            self.run.plot_losses()
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.warn(f"disk full: final sample grid / loss curves not written ({e.strerror})")
        if self.run.tb is not None:
            self.run.tb.flush()

    def _log(self, ips: float) -> None:
        rec = {"step": self.c.step, "images_seen": self.c.images_seen, **self.last, **self.b.progress(),
               "img_per_s": round(ips, 2), "time": round(time.time(), 3)}
        if self.run is None:
            return
        self.run.log_metrics(rec)
        if self.run.tb is not None:
            for k, v in rec.items():
                if k not in ("step", "time", "images_seen"):
                    self.run.tb.add_scalar(f"train/{k}", v, self.c.step)

    def _where(self) -> str:
        """Where the last good checkpoint is, for an error message."""
        if self.run is None:
            return "process 0 writes the checkpoints" if self.dist.enabled else "no checkpoint was written yet"
        have = ckpt.list_checkpoints(self.run.checkpoints)
        if not have:
            return "no checkpoint was written yet"
        return f"the last good checkpoint is {have[-1][1].with_suffix('.safetensors')}"

    def _diverged(self, ld: float, lg: float) -> None:
        step = self.c.step
        msg = (f"training diverged at step {step}: D loss {ld}, G loss {lg}; {self._where()}. "
               "Lower train.lr_d/train.lr_g or change the loss, then resume or restart")
        if self.run is not None:
            self.event(Event.DIVERGED, step=step, loss_d=ld, loss_g=lg)
            self.run.log_text("ERROR " + msg)
        raise TrainingDiverged(msg)

