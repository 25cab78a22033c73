"""The training loop. `Trainer.train_step` is the whole GAN update and fits on a screen; the rest
is bookkeeping that makes a run observable (logs, grids, TensorBoard) and unkillable (atomic
checkpoints, exact resume, NaN stop, SIGINT/SIGTERM save).
"""

from __future__ import annotations

import base64
import errno
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
from ganforge.errors import TrainingDiverged, UserError, warn
from ganforge.images import make_grid, save_png
from ganforge.losses import DStep, GStep
from ganforge.models import build_discriminator, build_generator
from ganforge.training import checkpoint as ckpt
from ganforge.training.ema import EMA
from ganforge.training.objective import Objective
from ganforge.training.run import RunDir


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
    """Labels of the fixed sample grid: one class per grid column, or the attributes of n real images."""
    m = cfg["model"]
    if m["label_kind"] == "attributes":
        return torch.as_tensor(np.asarray(data.labels[:n]), dtype=torch.float32, device=device)
    return torch.arange(n, device=device) % m["num_labels"]


def grid_columns(cfg: dict[str, Any]) -> int | None:
    m = cfg["model"]
    if m["conditional"] and m["label_kind"] == "class" and m["num_labels"] <= 16:
        return m["num_labels"]
    return None


class Trainer:
    def __init__(self, cfg: dict[str, Any], run: RunDir | None = None, data: Any = None, quiet: bool = False):
        self.cfg, self.run, self.quiet = cfg, run, quiet
        t = cfg["train"]
        if t["threads"]:
            torch.set_num_threads(t["threads"])
        self.device = resolve_device(cfg["device"])
        self.seed = cfg["seed"]
        torch.manual_seed(self.seed)  # weight init, dropout
        np.random.seed(self.seed % 2**32)
        random.seed(self.seed)

        if data is None:
            data = load_data(cfg)
        self.data = data
        self.conditional = bool(cfg["model"]["conditional"])
        self.G = build_generator(cfg).to(self.device)
        self.D = build_discriminator(cfg).to(self.device)
        # conv models of any kind (nn.Conv2d, equalized, spectral-norm parametrized) have 4-D weights
        self.channels_last = t["channels_last"] and any(p.dim() == 4 for p in self.D.parameters())
        if self.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        # the loss and every part the config turns on (regularizers, augmentation, growing schedule)
        self.objective = Objective.from_config(cfg, self.G, self.D)
        self.d_steps = t["d_steps"]
        self.images_seen = 0
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=t["lr_g"], betas=(t["beta1"], t["beta2"]))
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=t["lr_d"], betas=(t["beta1"], t["beta2"]))
        self.ema = EMA(self.G, t["ema_decay"], t["ema_start"], t["ema_kimg"]) if t["ema"] else None
        self.stream = BatchStream(
            data.images, data.labels, t["batch_size"], self.seed, self.device,
            hflip=cfg["data"]["hflip"], channels_last=self.channels_last,
        )  # fmt: skip
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

    # ---------------------------------------------------------------------------------------------
    def _models(self) -> tuple[torch.nn.Module, ...]:
        return (self.G, self.D) + ((self.ema.model,) if self.ema is not None else ())

    def _prepare_batch(self) -> int:
        """Let the parts set the models up for `images_seen` (growing); the size of the next batch."""
        size = self.objective.batch_size(self.images_seen, self._models())
        return self.cfg["train"]["batch_size"] if size is None else size

    def train_step(self) -> dict[str, torch.Tensor]:
        """`d_steps` D updates, then one G update. Every random draw comes from a generator seeded by
        (seed, counter), so the step is a pure function of the checkpointed state."""
        G, D, obj = self.G, self.D, self.objective
        logged: dict[str, torch.Tensor] = {}
        for _ in range(self.d_steps):
            real, labels = self.stream.next(self.d_iter, self._prepare_batch())
            real = obj.reals(real, D)
            labels = labels if self.conditional else None
            rng = seeded_generator(self.seed + 2, self.d_iter, self.device)
            z = torch.randn(real.shape[0], self.z_dim, device=self.device, generator=rng)

            # (1) D: tell real from fake, plus the terms of the objective's parts
            fake = G(z, labels)
            real_a, fake_a = obj.augment(real, rng), obj.augment(fake.detach(), rng)
            d_real = D(real_a, labels)
            loss_d = obj.loss.d_loss(d_real, D(fake_a, labels))
            s = DStep(G, D, real_a, fake_a, d_real, labels, rng, self.d_iter)
            total = obj.d_total(loss_d, s, logged)
            self.opt_D.zero_grad(set_to_none=True)
            total.backward()
            self.opt_D.step()
            obj.after_d_step(s)
            self.d_iter += 1
            self.images_seen += real.shape[0]

        # (2) G: fool D. D's weights are frozen here, so backward skips their (unused) gradients.
        D.requires_grad_(False)
        loss_g = obj.loss.g_loss(D(obj.augment(fake, rng), labels))
        total_g = obj.g_total(loss_g, GStep(G, z, labels, rng, self.step), logged)
        self.opt_G.zero_grad(set_to_none=True)
        total_g.backward()
        self.opt_G.step()
        D.requires_grad_(True)

        if self.ema is not None:
            self.ema.update(G, self.step, real.shape[0] * self.d_steps)
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
        warn(msg, self.run.log_text if self.run is not None else None)

    # --- checkpoints -------------------------------------------------------------------------------
    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
        }
        return tensors, meta

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint; on a full disk keep the previous one intact, warn, and continue or stop."""
        if self.run is None:
            return None
        try:
            return self._write_checkpoint()
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            have = ckpt.list_checkpoints(self.run.checkpoints)
            prev = have[-1][1].with_suffix(".safetensors").name if have else "none yet"
            self._warn(f"disk full: could not write the checkpoint of step {self.step} ({e.strerror}); "
                       f"the previous checkpoint ({prev}) is intact")  # fmt: skip
            if self.cfg["train"]["on_disk_full"] == "stop":
                self._stop = "disk full"
            return None

    def _write_checkpoint(self) -> Path:
        assert self.run is not None
        tensors, meta = self.state()
        path = ckpt.save_checkpoint(
            self.run.checkpoints, self.step, tensors, meta, self.cfg["train"]["keep_checkpoints"]
        )
        self.run.plot_losses()
        return path

    def load_state(self, c: ckpt.Checkpoint) -> None:
        """Restore models, optimizers, EMA, step, data position and every RNG stream."""
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
        try:
            self.objective.load_state_dict(c.meta.get("parts"), c.meta)
        except UserError as e:
            raise UserError(f"{c.path.name}: {e}") from None
        self._batch_size = self._prepare_batch()
        self.stream.load_state_dict(c.meta["data"])
        set_rng_state(c.meta["rng"])
        self._last = c.meta.get("losses", {})

    def init_from(self, c: ckpt.Checkpoint) -> None:
        """Fine-tuning: take weights (G, D, G_ema) from another run; optimizers and step start fresh."""
        what = f" {c.path}" + (f" ({c.describe()})" if c.meta else "")
        ckpt.load_module("G", self.G, c.tensors, what)
        if any(k.startswith("D.") for k in c.tensors):
            ckpt.load_module("D", self.D, c.tensors, what)
        if self.ema is not None:
            ckpt.load_module(c.generator_prefix(), self.ema.model, c.tensors, what)

    # --- evaluation during training ------------------------------------------------------------------
    def evaluate(self) -> dict[str, Any] | None:
        """FID (and friends) of the sampling generator now, appended to eval.jsonl with the step, images seen
        and training wall-clock; the best FID so far is kept as checkpoints/best/ (never pruned). A failure
        (e.g. feature-network weights missing) warns and turns evaluation off instead of ending the run."""
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
                tensors, meta = self.state()
                ckpt.save_checkpoint(self.run.path / "checkpoints" / "best", self.step, tensors,
                                     {**meta, "fid": rec["fid"]}, keep=1)  # fmt: skip
        return rec

    # --- the loop ----------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop = signal.Signals(signum).name

    def fit(self) -> dict[str, Any]:
        """Train up to `train.steps`; returns a summary. Raises TrainingDiverged on NaN/inf."""
        t = self.cfg["train"]
        total = t["steps"]
        old = {}
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                old[s] = signal.signal(s, self._on_signal)
            except ValueError:  # not the main thread
                pass
        pbar = tqdm(total=total, initial=self.step, desc="train", unit="step", disable=self.quiet,
                    dynamic_ncols=True, mininterval=0.5, file=sys.stderr)  # fmt: skip
        is_cuda = self.device.type == "cuda"
        tic, tic_images = time.perf_counter(), self.images_seen
        try:
            mark = time.perf_counter()
            while self.step < total and self._stop is None:
                out = self.train_step()
                logging = self.step % t["log_every"] == 0 or self.step == total
                if not is_cuda or logging:  # on GPU, sync only when logging
                    values = {k: v.item() for k, v in out.items()}
                    if not all(math.isfinite(v) for v in values.values()):
                        self._diverged(values["loss_d"], values["loss_g"])
                    self._last = values
                if logging:
                    now = time.perf_counter()
                    ips = (self.images_seen - tic_images) / max(now - tic, 1e-9)  # real images D saw
                    tic, tic_images = now, self.images_seen
                    self._log(ips)
                    extra = {k: f"{v:.3g}" for k, v in self.progress().items() if k in ("ada_p", "resolution", "alpha")}
                    pbar.set_postfix(D=f"{self._last['loss_d']:.3f}", G=f"{self._last['loss_g']:.3f}",
                                     img_s=f"{ips:.0f}", **extra, refresh=False)  # fmt: skip
                pbar.update(1)
                if t["sample_every"] and self.step % t["sample_every"] == 0:
                    self.save_samples()
                if t["checkpoint_every"] and self.step % t["checkpoint_every"] == 0:
                    self.save_checkpoint()
                now = time.perf_counter()
                self.train_seconds += now - mark  # sampling and checkpoints count; evaluation does not
                if t["eval_every"] and (self.step % t["eval_every"] == 0 or self.step == total):
                    self.evaluate()
                    tic += time.perf_counter() - now  # img/s measures training only
                mark = time.perf_counter()
        finally:
            pbar.close()
            for s, h in old.items():
                signal.signal(s, h)
        if self.run is not None:
            saved = any(st == self.step for st, _ in ckpt.list_checkpoints(self.run.checkpoints))
            saved = saved or self.save_checkpoint() is not None
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
        return {"step": self.step, "stopped_by": self._stop, **self._last}

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

    def _diverged(self, ld: float, lg: float) -> None:
        where = "no checkpoint was written yet"
        if self.run is not None:
            have = ckpt.list_checkpoints(self.run.checkpoints)
            if have:
                where = f"the last good checkpoint is {have[-1][1].with_suffix('.safetensors')}"
        msg = (f"training diverged at step {self.step}: D loss {ld}, G loss {lg}; {where}. "
               "Lower train.lr_d/train.lr_g or change the loss, then resume or restart")  # fmt: skip
        if self.run is not None:
            self.run.log_text("ERROR " + msg)
        raise TrainingDiverged(msg)
