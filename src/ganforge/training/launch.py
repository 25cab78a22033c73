"""`train()`: new run, resume or fine-tune, the function behind `ganforge train`."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ganforge.config import apply_overrides, load_config, validate
from ganforge.data import ImageData
from ganforge.data.from_config import load_data, resolve_labels
from ganforge.device import resolve_device
from ganforge.errors import DistributedFailure, UserError, warn
from ganforge.losses import gp_weight
from ganforge.runs import checkpoint as ckpt
from ganforge.runs import trackers
from ganforge.runs.events import Event
from ganforge.runs.rundir import RunDir, check_run_dir, is_run_dir
from ganforge.training import distributed
from ganforge.training.distributed import Dist
from ganforge.training.loop import Backend, Loop

# the trainer of each `backend`, found by module name (ganforge.tf sits above training/ in the layering)
TRAINERS = {"torch": ("ganforge.training.trainer", "Trainer"), "tensorflow": ("ganforge.tf.train.trainer", "TFTrainer")}


def trainer_class(cfg: dict[str, Any]) -> type[Backend]:
    module, name = TRAINERS[cfg.get("backend", "torch")]
    return getattr(importlib.import_module(module), name)


def check_backend(cfg: dict[str, Any], nproc: int = 1) -> None:
    """What a backend cannot train (tensorflow: mlp, dcgan), or a tracker that cannot work (log.mlflow/log.wandb), is a
    one-line error before any data or folder."""
    trackers.check(cfg)
    if cfg.get("backend", "torch") == "torch":
        return
    if nproc > 1:
        raise UserError(f"backend {cfg['backend']} trains in one process; leave out --nproc / torchrun")
    trainer_class(cfg).check_config(cfg)


def default_run_dir(name: str, root: Path = Path("runs")) -> Path:
    """runs/<name>, or runs/<name>-2, -3, ... so that no earlier run is touched."""
    p = root / name
    i = 2
    while p.exists():
        p = root / f"{name}-{i}"
        i += 1
    return p


def resolve_checkpoint(path: str | Path) -> ckpt.Checkpoint:
    """A checkpoint file, or a run directory (its newest intact checkpoint)."""
    p = Path(path)
    if p.is_dir():
        if is_run_dir(p):
            found = RunDir(p, tensorboard=False).latest()
        else:
            found, warnings = ckpt.latest_checkpoint(p)
            for w in warnings:
                warn(w)
        if found is None:
            raise UserError(f"{p} holds no intact checkpoint (looked for checkpoints/step-*.safetensors)")
        return found
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist; pass a .safetensors file or a run directory")
    return ckpt.read_checkpoint(p)


def _warn_family_mismatch(cfg: dict[str, Any]) -> None:
    """Combinations that train but contradict the paper they come from get a warning, not silence."""
    lc, m = cfg["loss"], cfg["model"]
    gp = gp_weight(cfg)
    if gp > 0 and m["name"] == "dcgan" and m["d_norm"] == "batch":
        warn("a gradient penalty with BatchNorm in the critic is ill-defined (Gulrajani et al. 2017); "
             "set model.d_norm=none")
    if lc["name"] in ("wgan", "wgan-gp") and gp == 0:
        warn("the Wasserstein loss without a Lipschitz constraint diverges; set loss.gp_weight=10 or use "
             "loss.name=wgan-gp")


def _remove_new_run_dir(path: Path) -> None:
    """Undo RunDir.create after a failure before training started (only ganforge's own files are there)."""
    import shutil

    ours = {"config.yaml", ".lock", "samples", "checkpoints", "tb", "events.jsonl", "train.log"}
    if path.is_dir() and set(p.name for p in path.iterdir()) <= ours:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class _Plan:
    """What a `train()` call resolved to before any training: the config, the run directory (`run` is
    open and locked in the process that writes it, None in the other processes of a distributed run),
    the checkpoint to resume from or to initialise from, and the data."""

    cfg: dict[str, Any]
    path: Path
    new: bool  # a run directory this call created (removed again if the start fails)
    run: RunDir | None = None
    data: ImageData | None = None
    resume: ckpt.Checkpoint | None = None  # None on a resume: restart from step 0 (no intact checkpoint yet)
    init: ckpt.Checkpoint | None = None
    fell_back: bool = False  # resume skipped damaged newer checkpoints

    def shared(self) -> _Plan:
        """What the other processes of a distributed run receive (no open run dir, no data)."""
        return dataclasses.replace(self, run=None, data=None)


def _plan_resume(resume: Path, overrides: list[str], data: ImageData | None, world: int = 1) -> _Plan:
    run = RunDir.open(resume)
    run.lock()
    try:
        cfg = apply_overrides(run.read_config(), overrides)
        check_backend(cfg, world)
        distributed.check_world(cfg, world, resolve_device(cfg["device"]))
        found, warnings = ckpt.latest_checkpoint(run.checkpoints)
        for w in warnings:
            warn(w, run.log_text)
        if found is not None and cfg["train"]["steps"] is not None and found.step >= cfg["train"]["steps"]:
            raise UserError(
                f"{run.path} is already at step {found.step} >= train.steps={cfg['train']['steps']}; "
                f"pass a larger train.steps=N to train further"
            )
        if found is None and (warnings or any(run.checkpoints.glob("step-*.safetensors"))):
            raise UserError(f"{run.path} has no intact checkpoint to resume from (all are damaged); start a new run")
        return _Plan(cfg, run.path, new=False, run=run, data=data, resume=found, fell_back=bool(warnings))
    except BaseException:
        run.close()  # release the lock: a failed resume must not block the next attempt
        raise


def _plan_new(config: str | dict[str, Any] | None, overrides: list[str], run_dir: str | Path | None,
              init_from: str | Path | None, data: ImageData | None, world: int = 1) -> _Plan:
    if isinstance(config, dict):
        cfg = apply_overrides(validate(config), overrides)
    else:
        cfg = load_config(config, overrides)
    check_backend(cfg, world)
    distributed.check_world(cfg, world, resolve_device(cfg["device"]))  # before any data or folder
    init = resolve_checkpoint(init_from) if init_from is not None else None
    path = Path(run_dir) if run_dir is not None else default_run_dir(cfg["name"])
    check_run_dir(path)
    trainer_data = data if data is not None else load_data(cfg)  # bad data fails before the run dir exists
    cfg = resolve_labels(cfg, trainer_data)
    _warn_family_mismatch(cfg)
    run = RunDir.create(path, cfg)
    return _Plan(cfg, path, new=True, run=run, data=trainer_data, init=init)


def _start(plan: _Plan, quiet: bool, dist: Dist) -> Loop:
    """The loop around the backend of a plan, its state restored (resume) or initialised (fine-tuning); the run
    dir logs it."""
    run = plan.run
    try:
        loop = Loop(trainer_class(plan.cfg)(plan.cfg, run, data=plan.data, quiet=quiet, dist=dist))
        if plan.new:
            if plan.init is not None:
                loop.b.init_from(plan.init)
                if run is not None:
                    run.log_event(Event.INIT, path=str(plan.init.path), step=plan.init.step)
                    run.log_text(f"initialised from {plan.init.path}")
        elif plan.resume is None:
            # killed before its first checkpoint: nothing to restore, so the run starts again from step 0
            if run is not None:
                warn(f"{run.path} has no intact checkpoint yet; starting it again from step 0", run.log_text)
                run.log_event(Event.RESUME, step=0, checkpoint=None, restart=True)
                run.write_config(plan.cfg)
                run.truncate_metrics(0)
        else:
            found = plan.resume
            try:
                loop.resume(found)
            except UserError:
                raise
            except Exception as e:  # noqa: BLE001 - a sidecar that passed its hash but is still unusable
                why = f"{type(e).__name__}: {str(e)[:120]}"
                raise UserError(f"checkpoint {found.path} cannot be restored ({why})") from None
            if run is not None:
                run.write_config(plan.cfg)
                run.truncate_metrics(found.step)
                if plan.fell_back:
                    print(f"ganforge: resuming from the newest intact checkpoint, step {found.step}", file=sys.stderr)
                run.log_event(Event.RESUME, step=found.step, checkpoint=found.path.name, world=dist.world)
                run.log_text(f"resumed from {found.path.name} (step {found.step}) to {_target(plan.cfg)}"
                             + (f" on {dist.world} processes" if dist.enabled else ""))
    except BaseException:
        if run is not None:
            run.close()
            if plan.new:
                _remove_new_run_dir(plan.path)  # it was absent or empty before: leave nothing half-made behind
        raise
    if run is not None and plan.new:
        c = plan.cfg
        run.log_event(Event.START, model=c["model"]["name"], source=c["data"]["source"], steps=c["train"]["steps"],
                      max_seconds=c["train"]["max_seconds"], world=dist.world, backend=c.get("backend", "torch"))
        run.log_text(f"started: {c['model']['name']} on {c['data']['source']} for {_target(plan.cfg)}"
                     + (f" on {dist.world} processes (global batch {c['train']['batch_size']})" if dist.enabled else ""))
    return loop


def _target(cfg: dict[str, Any]) -> str:
    """What a run trains to, for train.log: a step count and/or a time budget."""
    t = cfg["train"]
    parts = ([f"train.steps={t['steps']}"] if t["steps"] is not None else []) + (
        [f"train.max_seconds={t['max_seconds']:g}"] if t["max_seconds"] else [])
    return " or ".join(parts)


def _requested_config(
    config: str | dict[str, Any] | None, overrides: list[str], resume: str | Path | None
) -> dict[str, Any]:
    """The config a `train()` call asks for, resolved without touching anything (no run dir, no data)."""
    if resume is not None:
        return apply_overrides(RunDir.open(Path(resume)).read_config(), overrides)
    if isinstance(config, dict):
        return apply_overrides(validate(config), overrides)
    return load_config(config, overrides)


def check_launch(config: str | dict[str, Any] | None, overrides: list[str], *, resume: str | Path | None = None,
                 device: str | None = None, nproc: int) -> dict[str, Any]:
    """Before starting `nproc` processes: the config resolves and fits them, so a mistake is one line here
    rather than one traceback per process. Returns the config."""
    overrides = list(overrides) + ([f"device={device}"] if device is not None else [])
    cfg = _requested_config(config, overrides, resume)
    dev = resolve_device(cfg["device"])
    check_backend(cfg, nproc)
    distributed.check_world(cfg, nproc, dev)
    if dev.type == "cuda" and nproc > torch.cuda.device_count():
        raise UserError(f"--nproc {nproc} but this machine shows {torch.cuda.device_count()} GPU(s); one process "
                        "per GPU (or --device cpu)")
    return cfg


def _plan_distributed(d: Dist, config: str | dict[str, Any] | None, overrides: list[str], run_dir: str | Path | None,
                      resume: str | Path | None, init_from: str | Path | None, data: ImageData | None) -> _Plan:
    """Rank 0 plans (creates or locks the run dir, finds the checkpoint) and tells the others; they get the
    config, the path and the checkpoint from it and load the data themselves (from the cache rank 0 filled)."""
    if d.is_main:
        try:
            plan = _plan_resume(Path(resume), overrides, data, d.world) if resume is not None else (
                _plan_new(config, overrides, run_dir, init_from, data, d.world))
        except UserError as e:
            distributed.broadcast_object(("user", str(e)), d)
            raise
        except BaseException as e:
            distributed.broadcast_object(("failed", f"{type(e).__name__}: {e}"), d)
            raise
        try:
            distributed.broadcast_object(("ok", plan.shared()), d)
        except BaseException:
            if plan.run is not None:
                plan.run.close()
                if plan.new:
                    _remove_new_run_dir(plan.path)
            raise
        return plan
    status, payload = distributed.broadcast_object(None, d)
    if status == "user":
        raise UserError(payload)
    if status != "ok":
        raise DistributedFailure(f"process 0 failed while preparing the run ({payload})")
    payload.data = data if data is not None else load_data(payload.cfg)
    return payload


def train(
    config: str | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
    data: ImageData | None = None,
) -> tuple[RunDir, dict[str, Any]]:
    """Train a GAN. Returns the run directory and a summary (final step, last losses).

    Started by torchrun (RANK / WORLD_SIZE in the environment), each process calls this with the same
    arguments: they join one job, rank 0 writes the run directory, and train.batch_size is the global
    batch (see training/distributed.py). Each process returns the run directory and the same summary."""
    overrides = list(overrides or [])
    if device is not None:
        overrides.append(f"device={device}")
    if resume is not None:
        if config is not None:
            raise UserError("--resume takes its config from the run directory; pass overrides only")
        if init_from is not None:
            raise UserError("--resume and --init-from cannot be combined")
    d = distributed.from_env()
    if not d.enabled:
        if resume is not None:
            plan = _plan_resume(Path(resume), overrides, data)
        else:
            plan = _plan_new(config, overrides, run_dir, init_from, data)
        return _fit(plan, quiet, d)
    # every process checks the request before joining (the same one-line error everywhere, no hang)
    requested = _requested_config(config, overrides, resume)
    dev = resolve_device(requested["device"])
    distributed.check_world(requested, d.world, dev)
    created = distributed.start(d, dev, requested["train"]["dist_timeout"])
    clean = False
    try:
        plan = _plan_distributed(d, config, overrides, run_dir, resume, init_from, data)
        result = _fit(plan, quiet, d)
        clean = True
        return result
    finally:
        if created:
            distributed.stop(clean)


def _fit(plan: _Plan, quiet: bool, d: Dist) -> tuple[RunDir, dict[str, Any]]:
    loop = _start(plan, quiet, d)
    run = plan.run
    mirror = None if run is None else trackers.start(run.path, plan.cfg, run.log_text)  # log.mlflow / log.wandb
    try:
        summary = loop.run_training()
        if run is not None:
            run.log_event(Event.FINISH, step=summary["step"], stopped_by=summary["stopped_by"])
            run.log_text(
                f"finished at step {summary['step']}"
                + (f" (stopped by {summary['stopped_by']})" if summary["stopped_by"] else "")
            )
    finally:
        if mirror is not None:
            mirror.stop()
        if run is not None:
            run.close()
    return (run if run is not None else RunDir(plan.path, tensorboard=False)), summary


# `make demo`'s recipe, chosen by measurement (benchmarks/recipes.py); until 2026-12 it was fashion_mnist_dcgan
DEMO_PRESET = "fashion_mnist_dcgan_fast"


def train_or_continue(
    preset: str, run_dir: str | Path, overrides: list[str] | None = None, *, device: str | None = None
) -> tuple[Path, dict[str, Any], str | None]:
    """Train `preset` into `run_dir`; if the folder already holds that run, resume it, or leave it alone when it
    already reached its step budget (what `make demo` run twice should do). Returns the run path, the summary and
    a note for the user (or None)."""
    path = Path(run_dir)
    overrides = list(overrides or [])
    if not is_run_dir(path):
        run, summary = train(preset, overrides, run_dir=path, device=device)
        return run.path, summary, None
    cfg = RunDir(path, tensorboard=False).read_config()
    target = apply_overrides(cfg, overrides)["train"]["steps"]
    have = ckpt.list_checkpoints(path / "checkpoints")
    if have and target is not None and have[-1][0] >= target:
        name = load_config(preset)["name"]
        other = "" if cfg.get("name") == name else f" with {cfg.get('name')!r}, not the current {name!r}"
        return path, {"step": have[-1][0]}, (f"run {path} is already trained{other} (step {have[-1][0]}); "
                                             "delete it to train again")
    run, summary = train(None, overrides, resume=path, device=device)
    return run.path, summary, None
