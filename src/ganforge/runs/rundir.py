"""The run directory: everything a run leaves behind, so that the folder alone describes it.

RUN_DIR/config.yaml        fully resolved config (what `ganforge sample RUN_DIR` rebuilds from)
RUN_DIR/metrics.jsonl      one JSON object per logged step
RUN_DIR/samples/           step-XXXXXXXX.png grids from fixed noise
RUN_DIR/loss_curves.png    D/G losses, refreshed at each checkpoint and at the end
RUN_DIR/tb/                TensorBoard scalars and image grids
RUN_DIR/checkpoints/       step-XXXXXXXX.safetensors + .json (see checkpoint.py)
RUN_DIR/eval.jsonl         evaluations: during training (source "train") and by `ganforge eval`
RUN_DIR/events.jsonl       what happened: start, resume, stop and why, divergence, best checkpoint (events.py)
RUN_DIR/checkpoints/best/  the checkpoint with the best FID during training (never pruned)
RUN_DIR/train.log          what the run printed (warnings, resumes, the end), for people: nothing parses it
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ganforge.config import dump, safe_yaml, validate
from ganforge.errors import UserError, warn
from ganforge.fileio import atomic_write_bytes, jsonl_records
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.events import Event, log_event, read_events

RUN_MARKERS = ("config.yaml", "checkpoints")


def is_run_dir(path: Path) -> bool:
    """A folder ganforge made: config.yaml and a checkpoints/ folder (a user's own folder with a
    config.yaml is not enough to be written into)."""
    return all((path / m).is_file() if m.endswith(".yaml") else (path / m).is_dir() for m in RUN_MARKERS)


def check_run_dir(path: Path) -> None:
    """A new run goes into a folder that does not exist or is empty: never into a user's folder."""
    if path.exists():
        if not path.is_dir():
            raise UserError(f"--run-dir {path} is a file; choose a new folder for the run")
        if is_run_dir(path):
            raise UserError(
                f"{path} already holds a run; continue it with `ganforge train --resume {path}` "
                "or choose another --run-dir"
            )
        if any(path.iterdir()):
            raise UserError(f"--run-dir {path} exists and is not empty; choose a new or empty folder")


def _tensorboard_without_tensorflow() -> None:
    """TensorBoard's writer imports TensorFlow whenever it is installed (the `tf` extra): seconds of start-up and
    ~400 MB per training process, for event files its own stub writes identically. Its documented switch is the
    presence of `tensorboard.compat.notf`; provide it unless TensorFlow is already loaded (the TF backend)."""
    import sys
    import types

    if "tensorflow" not in sys.modules:
        sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a .jsonl file; a line cut by a crash is skipped."""
    return jsonl_records(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else []


class RunDir:
    def __init__(self, path: Path, *, tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.samples = self.path / "samples"
        self.checkpoints = self.path / "checkpoints"
        self.metrics_path = self.path / "metrics.jsonl"
        self._tb_enabled = tensorboard
        self._tb: Any = None
        self._lock_fd: int | None = None

    # -- creation ---------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, cfg: dict[str, Any]) -> RunDir:
        """A new run in `path`, which must not exist or be empty: never write into a user's folder."""
        path = Path(path)
        check_run_dir(path)
        path.mkdir(parents=True, exist_ok=True)
        run = cls(path, tensorboard=cfg["train"]["tensorboard"])
        run.lock()
        run.samples.mkdir(exist_ok=True)
        run.checkpoints.mkdir(exist_ok=True)
        run.write_config(cfg)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDir:
        path = Path(path)
        if not is_run_dir(path):
            raise UserError(f"{path} is not a ganforge run directory (no config.yaml); pass the folder a run wrote")
        run = cls(path)
        run._tb_enabled = run.read_config()["train"]["tensorboard"]
        return run

    # -- checkpoints ------------------------------------------------------------------------------
    def latest(self, *, log: bool = False) -> ckpt.Checkpoint | None:
        """The newest intact checkpoint (None before the first); damaged newer ones are skipped with a
        warning, also written to train.log when `log` is true (the process that owns the run)."""
        found, warnings = ckpt.latest_checkpoint(self.checkpoints)
        for w in warnings:
            warn(w, self.log_text if log else None)
        return found

    def latest_checkpoint_path(self) -> Path | None:
        """Path of the newest checkpoint that has its JSON sidecar (not verified: for messages)."""
        have = ckpt.list_checkpoints(self.checkpoints)
        return have[-1][1].with_suffix(".safetensors") if have else None

    def read_config(self) -> dict[str, Any]:
        p = self.path / "config.yaml"
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read {p}: {' '.join(str(e).split())}") from None
        cfg = safe_yaml(text, str(p))
        if cfg is not None and not isinstance(cfg, dict):
            raise UserError(f"{p} is not a ganforge config (not a mapping); the run directory is damaged")
        return validate(cfg or {})

    def write_config(self, cfg: dict[str, Any]) -> None:
        atomic_write_bytes(self.path / "config.yaml", dump(cfg).encode())

    # -- a lock, so two processes never train into one folder --------------------------------------
    def lock(self) -> None:
        """Exclusive advisory lock on RUN_DIR/.lock; the OS drops it when the process dies, even on kill -9."""
        lock_path = self.path / ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # Windows: no flock; a best-effort pid file is better than nothing
            pass
        except OSError:
            os.close(fd)
            other = lock_path.read_text().strip() or "?"
            raise UserError(
                f"{self.path} is in use by another ganforge process (pid {other}); wait for it or stop it"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    # -- logging: metrics.jsonl (training) and eval.jsonl (evaluations), one JSON object a line ------
    @property
    def eval_path(self) -> Path:
        return self.path / "eval.jsonl"

    def log_metrics(self, record: dict[str, Any]) -> None:
        _append_jsonl(self.metrics_path, record)

    def log_eval(self, record: dict[str, Any]) -> None:
        _append_jsonl(self.eval_path, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def read_eval(self) -> list[dict[str, Any]]:
        return read_jsonl(self.eval_path)

    def truncate_metrics(self, step: int) -> None:
        """On resume, forget what a killed process logged after its last checkpoint (it is redone): training
        metrics and the evaluations made during training (those of `ganforge eval` are kept)."""
        keep = [r for r in self.read_metrics() if r.get("step", 0) <= step]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in keep).encode())
        if self.eval_path.is_file():
            evals = self.read_eval()
            kept = [r for r in evals if r.get("source") != "train" or (r.get("step") or 0) <= step]
            if len(kept) != len(evals):
                atomic_write_bytes(self.eval_path, "".join(json.dumps(r) + "\n" for r in kept).encode())

    def log_event(self, kind: Event, **fields: Any) -> dict[str, Any]:
        return log_event(self.path, kind, **fields)

    def read_events(self) -> list[dict[str, Any]]:
        return read_events(self.path)

    def log_text(self, msg: str) -> None:
        with open(self.path / "train.log", "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + msg + "\n")

    @property
    def tb(self) -> Any:
        if self._tb is None and self._tb_enabled:
            _tensorboard_without_tensorflow()
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path / "tb"))
        return self._tb

    def sample_path(self, step: int) -> Path:
        return self.samples / f"step-{step:08d}.png"

    def plot_losses(self) -> Path | None:
        """loss_curves.png from metrics.jsonl (written atomically: a viewer never sees half a file)."""
        recs = [r for r in self.read_metrics() if "loss_d" in r]
        if not recs:
            return None
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [r["step"] for r in recs]
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=110)
        ax.plot(steps, [r["loss_d"] for r in recs], label="D loss", lw=1)
        ax.plot(steps, [r["loss_g"] for r in recs], label="G loss", lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{self.path.name}: losses")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        out = self.path / "loss_curves.png"
        atomic_write_bytes(out, buf.getvalue())
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
