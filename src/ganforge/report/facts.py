"""What a run directory says about itself, read tolerantly (older runs lack keys, killed runs lack lines).

`read_run` only reads files (config.yaml, metrics.jsonl, eval.jsonl, events.jsonl, checkpoint sidecars,
samples/); `measure` adds what needs the generator (metrics when eval.jsonl has none, diagnostics,
figures). Findings and rendering work from the resulting `RunFacts` alone, so they are testable without
training anything.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganforge.errors import UserError
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.events import Event, read_events
from ganforge.runs.rundir import RunDir, is_run_dir

# Config keys that say where or how verbosely a run was made, not what was trained: two runs that differ only
# in these (and the seed) are seeds of one configuration.
VOLATILE_KEYS = (
    "seed", "device", "data.data_dir", "train.threads", "train.tensorboard", "train.log_every", "train.sample_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.on_disk_full", "train.n_samples",
)



@dataclass
class RunFacts:
    """Everything the report says about one run; None where the run does not record it."""

    path: Path
    label: str  # unique display name (the folder name, with its parent when names clash)
    cfg: dict[str, Any]
    step: int | None = None  # step of the newest checkpoint
    images_seen: int | None = None
    train_seconds: float | None = None
    train_seconds_source: str = ""  # "trainer" or "estimated from metrics.jsonl throughput"
    losses: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)  # every readable eval.jsonl line
    metrics: dict[str, Any] | None = None  # the eval record the table shows
    metrics_note: str = "missing"
    network: str = ""
    diverged_at: int | None = None
    stopped_by: str | None = None
    collapse_warned: bool = False  # the loop's collapse warning (a "collapse" event)
    samples_png: Path | None = None  # newest samples/step-*.png
    compare_png: Path | None = None
    nearest: dict[str, Any] | None = None  # nearest_neighbours() result
    diagnostics: dict[str, Any] | None = None  # see diagnostics.diagnose
    notes: list[str] = field(default_factory=list)  # what could not be made, and why
    versions: dict[str, str] = field(default_factory=dict)
    started: str | None = None  # times of the first and last events
    finished: str | None = None

    @property
    def name(self) -> str:
        return str(self.cfg.get("name", self.label))

    @property
    def seed(self) -> int:
        return int(self.cfg.get("seed", 0))

    @property
    def target_steps(self) -> int | None:
        """train.steps, or None for a run that only had a time budget."""
        steps = self.cfg["train"]["steps"]
        return None if steps is None else int(steps)

    @property
    def source(self) -> str:
        return str(self.cfg["data"]["source"])

    def value(self, key: str) -> float | None:
        """A finite metric value of the table's record, or None."""
        v = (self.metrics or {}).get(key)
        if key in ("precision", "recall") and self.diagnostics and key in self.diagnostics:
            v = self.diagnostics[key]
        return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"steps": 3}} -> {"train.steps": 3}."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def group_key(cfg: dict[str, Any]) -> str:
    """Runs with equal keys are seeds of one configuration (same name, same settings up to VOLATILE_KEYS)."""
    flat = {k: v for k, v in flatten(cfg).items() if k not in VOLATILE_KEYS}
    return json.dumps(flat, sort_keys=True, default=str)


def estimated_train_seconds(records: list[dict[str, Any]], batch_size: int) -> dict[int, float]:
    """step -> training seconds up to it, from each logged window's throughput.

    The trainer logs img_per_s = (steps in the window) * train.batch_size / (window seconds), so each window's
    seconds come back exactly; gaps between processes (a resume) are not counted because no window spans them.
    """
    out: dict[int, float] = {}
    prev, total = 0, 0.0
    for r in sorted({int(r["step"]): r for r in records if isinstance(r.get("step"), int)}.values(),
                    key=lambda r: r["step"]):
        ips = r.get("img_per_s")
        if isinstance(ips, (int, float)) and ips > 0 and math.isfinite(ips):
            total += (r["step"] - prev) * batch_size / ips
        prev = r["step"]
        out[prev] = total
    return out


def interpolate(table: dict[int, float], step: int) -> float | None:
    """Linear interpolation in a step -> value table (exact at logged steps); None outside it."""
    if step in table:
        return table[step]
    keys = sorted(table)
    lo = [k for k in keys if k < step]
    hi = [k for k in keys if k > step]
    if not lo or not hi:
        return None
    a, b = lo[-1], hi[0]
    return table[a] + (table[b] - table[a]) * (step - a) / (b - a)


def _sidecar(run: RunDir, step: int) -> dict[str, Any]:
    """The newest checkpoint's JSON metadata (without loading its tensors)."""
    for s, js in reversed(ckpt.list_checkpoints(run.checkpoints)):
        if s == step:
            try:
                meta = json.loads(js.read_text())
                return meta if isinstance(meta, dict) else {}
            except (OSError, ValueError):
                return {}
    return {}


def read_run(path: str | Path, label: str | None = None) -> RunFacts:
    """The facts a run directory records, without sampling its generator."""
    path = Path(path)
    if not path.is_dir() or not is_run_dir(path):
        raise UserError(f"{path} is not a ganforge run directory (it needs config.yaml and checkpoints/); "
                        "pass folders written by `ganforge train` or `ganforge compare`")
    run = RunDir(path, tensorboard=False)
    f = RunFacts(path=path, label=label or path.name, cfg=run.read_config())
    f.losses = run.read_metrics()
    f.evals = run.read_eval()
    have = ckpt.list_checkpoints(run.checkpoints)
    if have:
        f.step = have[-1][0]
        meta = _sidecar(run, f.step)
        f.images_seen = meta.get("images_seen") if isinstance(meta.get("images_seen"), int) else None
        f.versions = {k: str(meta[k]) for k in ("ganforge_version", "torch_version") if k in meta}
        if isinstance(meta.get("train_seconds"), (int, float)):
            f.train_seconds, f.train_seconds_source = float(meta["train_seconds"]), "trainer"
    if f.step is not None and f.images_seen is None:
        seen = {r["step"]: r["images_seen"] for r in f.losses if isinstance(r.get("images_seen"), int)}
        f.images_seen = int(seen[f.step]) if f.step in seen else None
    if f.step is not None and f.train_seconds is None:
        from_trainer = [
            e for e in f.evals if e.get("step") == f.step and isinstance(e.get("train_seconds"), (int, float))
        ]
        if from_trainer:
            f.train_seconds, f.train_seconds_source = float(from_trainer[-1]["train_seconds"]), "trainer"
        else:
            est = interpolate(estimated_train_seconds(f.losses, f.cfg["train"]["batch_size"]), f.step)
            if est is not None:
                f.train_seconds, f.train_seconds_source = est, "estimated from metrics.jsonl throughput"
    _read_events(f, path)
    for r in f.losses:  # a trainer that records its stop in the metrics (tolerated; events.jsonl is the usual place)
        if r.get("stopped_by"):
            f.stopped_by = str(r["stopped_by"])
        if any(isinstance(v, float) and not math.isfinite(v) for k, v in r.items() if k.startswith("loss")):
            f.diverged_at = f.diverged_at or int(r.get("step", 0))
    grids = sorted(run.samples.glob("step-*.png"))
    f.samples_png = grids[-1] if grids else None
    return f


def _read_events(f: RunFacts, path: Path) -> None:
    """Stops, divergence and collapse warnings from the run's events (runs/events.py reads old folders' train.log);
    a later start or resume clears an earlier stop, since a process continued past it."""
    events = read_events(path)
    times = [e["time"] for e in events if isinstance(e.get("time"), (int, float))]
    if times:
        f.started, f.finished = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) for t in (times[0], times[-1]))
    for e in events:
        kind, step = e.get("event"), e.get("step")
        if kind in (Event.START, Event.RESUME):
            f.diverged_at, f.stopped_by = None, None
        elif kind == Event.DIVERGED and isinstance(step, int):
            f.diverged_at = step
        elif kind == Event.STOP:
            f.stopped_by = str(e.get("reason"))
        elif kind == Event.COLLAPSE:
            f.collapse_warned = True


def pick_eval(f: RunFacts, network: str, n: int | None = None) -> dict[str, Any] | None:
    """The eval.jsonl record the table shows: at the newest checkpoint's step, with `network` (and `n` when
    asked for), against the run's own data; the largest sample count, then the newest line, wins."""
    cands = [e for e in f.evals if e.get("network") == network and isinstance(e.get("fid"), (int, float))]
    own_ref = [e for e in cands if e.get("ref") in (None, f.source)]
    cands = [e for e in own_ref or cands if e.get("step") == f.step and (n is None or e.get("n") == n)]
    if not cands:
        return None
    return max(enumerate(cands), key=lambda ie: (ie[1].get("n") or 0, ie[0]))[1]


def curve(f: RunFacts, network: str) -> list[dict[str, float]]:
    """FID over training: points with step, images_seen and train_seconds where known.

    Lines the trainer wrote during training (source "train") form the curve when there are any; otherwise
    every evaluation of the run with the same network. Missing images_seen / train_seconds are filled from
    metrics.jsonl (images exact at logged steps, seconds estimated from throughput).
    """
    lines = [e for e in f.evals if e.get("network") == network and isinstance(e.get("fid"), (int, float))
             and isinstance(e.get("step"), int) and math.isfinite(e["fid"])]
    trained = [e for e in lines if e.get("source") == "train"]
    lines = trained or lines
    seen = {r["step"]: float(r["images_seen"]) for r in f.losses if isinstance(r.get("images_seen"), (int, float))}
    if f.step is not None and f.images_seen is not None:
        seen[f.step] = float(f.images_seen)
    secs = estimated_train_seconds(f.losses, f.cfg["train"]["batch_size"])
    by_step: dict[int, dict[str, float]] = {}
    for e in lines:
        s = e["step"]
        img = e.get("images_seen")
        sec = e.get("train_seconds")
        if sec is None and s == f.step and f.train_seconds is not None:
            sec = f.train_seconds
        point = {"step": float(s), "fid": float(e["fid"]),
                 "images_seen": float(img) if isinstance(img, (int, float)) else interpolate(seen, s),
                 "train_seconds": float(sec) if isinstance(sec, (int, float)) else interpolate(secs, s)}
        by_step[s] = point  # the newest line of a step wins
    return [by_step[s] for s in sorted(by_step)]
