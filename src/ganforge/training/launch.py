"""`train()`: new run, resume or fine-tune, the function behind `ganforge train`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ganforge.config import apply_overrides, load_config, validate
from ganforge.data.from_config import load_data, resolve_labels
from ganforge.errors import UserError, warn
from ganforge.losses import gp_weight
from ganforge.training import checkpoint as ckpt
from ganforge.training.run import RunDir, check_run_dir, is_run_dir
from ganforge.training.trainer import Trainer


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

    if path.is_dir() and set(p.name for p in path.iterdir()) <= {"config.yaml", ".lock", "samples", "checkpoints", "tb",
                                                                 "train.log"}:  # fmt: skip
        shutil.rmtree(path, ignore_errors=True)


def _prepare_resume(run: RunDir, overrides: list[str], data: Any, quiet: bool) -> Trainer:
    cfg = apply_overrides(run.read_config(), overrides)
    found, warnings = ckpt.latest_checkpoint(run.checkpoints)
    for w in warnings:
        warn(w, run.log_text)
    if found is not None and found.step >= cfg["train"]["steps"]:
        raise UserError(
            f"{run.path} is already at step {found.step} >= train.steps={cfg['train']['steps']}; "
            f"pass a larger train.steps=N to train further"
        )
    if found is None and (warnings or any(run.checkpoints.glob("step-*.safetensors"))):
        raise UserError(f"{run.path} has no intact checkpoint to resume from (all are damaged); start a new run")
    trainer = Trainer(cfg, run, data=data, quiet=quiet)
    if found is None:
        # killed before its first checkpoint: nothing to restore, so the run starts again from step 0
        warn(f"{run.path} has no intact checkpoint yet; starting it again from step 0", run.log_text)
        run.write_config(cfg)
        run.truncate_metrics(0)
        return trainer
    try:
        trainer.load_state(found)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a sidecar that passed its hash but is still unusable
        raise UserError(f"checkpoint {found.path} cannot be restored ({type(e).__name__}: {str(e)[:120]})") from None
    run.write_config(cfg)
    run.truncate_metrics(found.step)
    if warnings:
        print(f"ganforge: resuming from the newest intact checkpoint, step {found.step}", file=sys.stderr)
    run.log_text(f"resumed from {found.path.name} (step {found.step}) to train.steps={cfg['train']['steps']}")
    return trainer


def train(
    config: str | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
    data: Any = None,
) -> tuple[RunDir, dict[str, Any]]:
    """Train a GAN. Returns the run directory and a summary (final step, last losses)."""
    overrides = list(overrides or [])
    if device is not None:
        overrides.append(f"device={device}")
    if resume is not None:
        if config is not None:
            raise UserError("--resume takes its config from the run directory; pass overrides only")
        if init_from is not None:
            raise UserError("--resume and --init-from cannot be combined")
        run = RunDir.open(Path(resume))
        run.lock()
        try:
            trainer = _prepare_resume(run, overrides, data, quiet)
        except BaseException:
            run.close()  # release the lock: a failed resume must not block the next attempt
            raise
    else:
        if isinstance(config, dict):
            cfg = apply_overrides(validate(config), overrides)
        else:
            cfg = load_config(config, overrides)
        init = resolve_checkpoint(init_from) if init_from is not None else None
        path = Path(run_dir) if run_dir is not None else default_run_dir(cfg["name"])
        check_run_dir(path)
        trainer_data = data if data is not None else load_data(cfg)  # bad data fails before the run dir exists
        cfg = resolve_labels(cfg, trainer_data)
        _warn_family_mismatch(cfg)
        run = RunDir.create(path, cfg)
        try:
            trainer = Trainer(cfg, run, data=trainer_data, quiet=quiet)
            if init is not None:
                trainer.init_from(init)
                run.log_text(f"initialised from {init.path}")
        except BaseException:
            run.close()
            _remove_new_run_dir(path)  # it was absent or empty before: leave nothing half-made behind
            raise
        run.log_text(f"started: {cfg['model']['name']} on {cfg['data']['source']} for {cfg['train']['steps']} steps")
    try:
        summary = trainer.fit()
        run.log_text(
            f"finished at step {summary['step']}"
            + (f" (stopped by {summary['stopped_by']})" if summary["stopped_by"] else "")
        )
    finally:
        run.close()
    return run, summary


DEMO_PRESET = "fashion_mnist_dcgan"


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
    target = apply_overrides(RunDir(path, tensorboard=False).read_config(), overrides)["train"]["steps"]
    have = ckpt.list_checkpoints(path / "checkpoints")
    if have and have[-1][0] >= target:
        return path, {"step": have[-1][0]}, f"run {path} is already trained (step {have[-1][0]}); delete it to train again"
    run, summary = train(None, overrides, resume=path, device=device)
    return run.path, summary, None
