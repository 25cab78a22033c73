"""Experiment trackers: optional mirrors of a run folder in MLflow (`log.mlflow=URI`) and Weights & Biases
(`log.wandb=offline|online`).

The run folder stays the source of truth; a tracker gets a copy of what it records: the config, metrics.jsonl,
eval.jsonl, the sample grids and, at the end, the final checkpoint as an artefact. The copy is made by a background
thread that tails those files. The files are the queue: a slow or dead tracker can neither hold up a training step
nor make memory grow (what is not sent yet waits on disk, not in RAM), and a tracker that fails at any point warns
once (stderr and train.log) and is dropped while training goes on. At the end the thread gets a bounded time to
send the rest (`FINAL_SECONDS`), then the run ends regardless. A resumed run continues the same tracker run
(RUN_DIR/trackers.json keeps its id). TensorBoard (tb/) stays the default and needs none of this.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from ganforge.config import Key, extend_schema
from ganforge.errors import UserError, warn
from ganforge.fileio import atomic_write_bytes, jsonl_records

extend_schema("log", {
    "mlflow": Key(None, str, "mirror the run to MLflow at this tracking URI: file:./mlruns, a folder, "
                  "http(s)://HOST:PORT, sqlite:///mlflow.db, databricks (needs the mlflow extra)", nullable=True),
    "wandb": Key(None, str, "mirror the run to Weights & Biases: offline (a local wandb/ folder; `wandb sync` later) or "
                 "online (needs the wandb extra and a login)", choices=("offline", "online"), nullable=True),
    "project": Key("ganforge", str, "MLflow experiment / W&B project the run is logged under"),
}, owner="trackers")

MLFLOW_SCHEMES = ("file", "http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks")
POLL_SECONDS = 1.0
FINAL_SECONDS = 60.0  # at the end of training: how long the last records and the checkpoint may take to send
STATE = "trackers.json"


def mlflow_scheme(uri: str) -> str:
    """The URI's scheme ("file" for a plain path, including a Windows drive path)."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if not m or len(m.group(1)) == 1:
        return "file"
    return m.group(1).lower().split("+")[0]


def check(cfg: dict[str, Any]) -> None:
    """Before any data or folder: the tracker URIs make sense and the packages they need are installed."""
    log = cfg.get("log") or {}
    uri = log.get("mlflow")
    if uri is not None:
        scheme = mlflow_scheme(uri)
        if not uri.strip() or scheme not in MLFLOW_SCHEMES:
            raise UserError(f"log.mlflow={uri!r}: unknown tracking URI scheme {scheme!r}; use file:./mlruns (or a "
                            "folder), http(s)://HOST:PORT, sqlite:///mlflow.db or databricks")
        _require("mlflow", "log.mlflow")
    if log.get("wandb") is not None:
        _require("wandb", "log.wandb")


def _require(module: str, key: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise UserError(f"{key} needs the {module} package, which is not installed; pip install 'ganforge[{module}]' "
                        f"(or remove {key})")


def _flat(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)[:500]
    return out


def _numbers(rec: dict[str, Any], prefix: str = "") -> dict[str, float]:
    return {f"{prefix}{k}": float(v) for k, v in rec.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}


class Tracker:
    """One destination. Methods are called from the mirror thread only; any exception drops the tracker."""

    key = ""

    def prepare(self) -> None:
        """Import the tracker's package, in the calling (main) thread before training: an import holds the GIL
        for seconds, which in the background thread would stall the training steps instead."""
        raise NotImplementedError

    def start(self, state: dict[str, Any]) -> dict[str, Any]:
        """Open (or, with `state` from trackers.json, reopen) the tracker's run; returns the state to keep."""
        raise NotImplementedError

    def metrics(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def image(self, step: int, path: Path) -> None:
        raise NotImplementedError

    def finish(self, checkpoint: list[Path]) -> None:
        raise NotImplementedError


class MlflowTracker(Tracker):
    key = "log.mlflow"

    def __init__(self, uri: str, run_dir: Path, cfg: dict[str, Any]) -> None:
        self.uri, self.run_dir, self.cfg = uri, run_dir, cfg
        if mlflow_scheme(uri) == "file":
            # MLflow 3 keeps its file store in maintenance mode behind this switch; log.mlflow=file:... asks for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # an unreachable server fails now, not in minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

    def prepare(self) -> None:
        import mlflow.entities
        import mlflow.tracking  # noqa: F401

    def start(self, state: dict[str, Any]) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        if state.get("run_id"):
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return state
        project = self.cfg["log"]["project"]
        exp = self.client.get_experiment_by_name(project)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(project)
        run = self.client.create_run(exp_id, run_name=self.run_dir.name,
                                     tags={"ganforge.run_dir": str(self.run_dir.resolve())})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in _flat(self.cfg).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.client.log_artifact(self.run_id, str(self.run_dir / "config.yaml"))
        return {"run_id": self.run_id, "uri": self.uri}

    def metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def image(self, step: int, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path), "samples")

    def finish(self, checkpoint: list[Path]) -> None:
        for p in checkpoint:
            self.client.log_artifact(self.run_id, str(p), "checkpoint")
        self.client.set_terminated(self.run_id)


class WandbTracker(Tracker):
    key = "log.wandb"

    def __init__(self, mode: str, run_dir: Path, cfg: dict[str, Any]) -> None:
        self.mode, self.run_dir, self.cfg = mode, run_dir, cfg

    def prepare(self) -> None:
        import wandb

        self.wandb = wandb

    def start(self, state: dict[str, Any]) -> dict[str, Any]:
        wandb = self.wandb
        self.run = wandb.init(mode=self.mode, dir=str(self.run_dir), project=self.cfg["log"]["project"],
                              name=self.run_dir.name, id=state.get("id"), resume="allow" if state.get("id") else None,
                              config=self.cfg, reinit="create_new", settings=wandb.Settings(silent=True))
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")  # metrics and evaluations arrive from two files
        return {"id": self.run.id, "mode": self.mode}

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"step": step, **values})

    def image(self, step: int, path: Path) -> None:
        self.run.log({"step": step, "samples": self.wandb.Image(str(path))})

    def finish(self, checkpoint: list[Path]) -> None:
        if checkpoint:
            art = self.wandb.Artifact(f"{self.run_dir.name}-checkpoint", type="model")
            for p in checkpoint:
                art.add_file(str(p))
            self.run.log_artifact(art)
        self.run.finish()


class _Tail:
    """New complete lines of a .jsonl file since the last read (a rewritten, shorter file restarts at its end)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0

    def read(self) -> list[dict[str, Any]]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:  # truncated on resume: what follows is new
            self.offset = size
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read(size - self.offset)
        end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
        self.offset += end
        return jsonl_records(chunk[:end].splitlines())


class Mirror:
    """The background thread that copies a run folder's new records into the trackers."""

    def __init__(self, run_dir: Path, trackers: list[Tracker], log: Any = None) -> None:
        self.run_dir = Path(run_dir)
        self.trackers = trackers
        self.log = log
        self.metrics = _Tail(self.run_dir / "metrics.jsonl")
        self.evals = _Tail(self.run_dir / "eval.jsonl")
        self.seen = {p.name for p in (self.run_dir / "samples").glob("step-*.png")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="ganforge-trackers", daemon=True)

    def start(self) -> Mirror:
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Send what is left and close the trackers' runs, waiting at most `timeout` seconds (FINAL_SECONDS)."""
        timeout = FINAL_SECONDS if timeout is None else timeout
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            names = ", ".join(t.key for t in self.trackers)
            warn(f"{names}: still sending after {timeout:g} s; left it (the run folder has everything)", self.log)

    def _fail(self, t: Tracker, e: BaseException) -> None:
        self.trackers.remove(t)
        why = " ".join(str(e).split())[:200] or type(e).__name__
        warn(f"{t.key}: mirroring stopped ({type(e).__name__}: {why}); training goes on and the run folder keeps "
             "everything", self.log)

    def _each(self, call: str, *args: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, call)(*args)
            except Exception as e:  # noqa: BLE001 - a tracker's failure must never end the run
                self._fail(t, e)

    def _main(self) -> None:
        state_path = self.run_dir / STATE
        try:
            state = json.loads(state_path.read_text()) if state_path.is_file() else {}
        except (OSError, ValueError):
            state = {}
        for t in list(self.trackers):
            try:
                state[t.key] = t.start(state.get(t.key, {}))
            except Exception as e:  # noqa: BLE001 - an unreachable server, a missing login: warn once
                self._fail(t, e)
        if self.trackers:
            atomic_write_bytes(state_path, json.dumps(state, indent=1).encode())
        while self.trackers:
            stopping = self._stop.wait(POLL_SECONDS)
            self._poll()
            if stopping:
                self._each("finish", self._final_checkpoint())
                return

    def _poll(self) -> None:
        for rec in self.metrics.read():
            values = _numbers(rec)
            if "step" in rec and values:
                self._each("metrics", int(rec["step"]), values)
        for rec in self.evals.read():
            values = _numbers({k: v for k, v in rec.items() if k not in ("n", "n_ref", "seconds", "images_seen",
                                                                          "train_seconds")}, "eval/")
            if rec.get("step") is not None and values:
                self._each("metrics", int(rec["step"]), values)
        for p in sorted((self.run_dir / "samples").glob("step-*.png")):
            if p.name not in self.seen:
                self.seen.add(p.name)
                self._each("image", int(p.stem.split("-")[1]), p)

    def _final_checkpoint(self) -> list[Path]:
        from ganforge.runs.checkpoint import list_checkpoints

        have = list_checkpoints(self.run_dir / "checkpoints")
        return [have[-1][1].with_suffix(".safetensors"), have[-1][1]] if have else []


def start(run_dir: Path, cfg: dict[str, Any], log: Any = None) -> Mirror | None:
    """The mirror of a run with trackers configured (None without): call `.stop()` when training ends."""
    opts = cfg.get("log") or {}
    trackers: list[Tracker] = []
    if opts.get("mlflow"):
        trackers.append(MlflowTracker(opts["mlflow"], Path(run_dir), cfg))
    if opts.get("wandb"):
        trackers.append(WandbTracker(opts["wandb"], Path(run_dir), cfg))
    for t in list(trackers):
        try:
            t.prepare()
        except Exception as e:  # noqa: BLE001 - a broken installation: warn, train without this tracker
            trackers.remove(t)
            warn(f"{t.key}: cannot load its package ({type(e).__name__}: {' '.join(str(e).split())[:200]}); training "
                 "without it", log)
    return Mirror(Path(run_dir), trackers, log).start() if trackers else None
