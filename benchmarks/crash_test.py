"""Crash test: SIGKILL real `ganforge train` processes at random moments, resume, compare bitwise.

Each trial trains a tiny DCGAN (nf=8, batch 16, 32x32 gray) on a folder of generated PNGs, SIGKILLs the
process at seeded random moments -- during start-up, between steps, and inside a checkpoint write
(widened by a sleep in checkpoint.FAULT_HOOK: while the tensor file is still a `.tmp`, and after its
rename but before the JSON sidecar exists) -- resumes it with `ganforge train --resume RUN_DIR`, and
in the end compares the final checkpoint's tensors and the logged losses with one uninterrupted run
of the same config. The checks are independent of ganforge's own code: checkpoints are verified by
re-hashing, progress is read from metrics.jsonl.

    python benchmarks/crash_test.py [--trials 20] [--seed 0] [--steps 20] [--max-kills 3] [--jobs 2]

tests/test_crash.py imports this file, so the quick test and the benchmark run the same harness.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODES = ("startup", "steps", "tensor", "sidecar")  # when a kill happens; the last two inside a checkpoint
_TENSOR_TMP = re.compile(r"^\.step-\d{8,}\.(?!json\.)[^.]+\.tmp$")  # checkpoint tensor file being written
_SIDECAR = re.compile(r"^step-(\d{8,})\.json$")
POLL_S = 0.01


@dataclass
class Setup:
    """Everything a trial needs: where the images, cache and reference run live, and the run config."""

    workdir: Path
    steps: int = 20
    interval: int = 5  # train.checkpoint_every: the most steps a kill may cost
    slow_s: float = 0.3  # seconds FAULT_HOOK sleeps for processes killed inside a checkpoint
    process_timeout_s: float = 180.0  # any single wait for a child process

    @property
    def images(self) -> Path:
        return self.workdir / "images"

    @property
    def cache(self) -> Path:
        return self.workdir / "cache"

    @property
    def reference(self) -> Path:
        return self.workdir / "reference"

    def train_args(self, run_dir: Path) -> list[str]:
        return [
            "train", "fashion_mnist_dcgan", f"data.source={self.images}", "model.nf=8", "train.batch_size=16",
            f"train.checkpoint_every={self.interval}", "train.sample_every=0", "train.tensorboard=false",
            "train.log_every=1", "train.threads=1", "train.keep_checkpoints=3", f"train.steps={self.steps}",
            "--run-dir", str(run_dir), "--quiet",
        ]


@dataclass
class Kill:
    """One SIGKILL: how it was aimed, what it hit, and how many finished steps it cost."""

    mode: str
    phase: str  # "tensor write", "before sidecar" (both inside a checkpoint) or "outside checkpoint"
    progress: int  # newest step this process had logged when it died
    resumed_from: int  # step of the newest intact checkpoint afterwards
    lost: int  # progress - resumed_from: finished steps that are trained again


@dataclass
class TrialResult:
    kills: list[Kill] = field(default_factory=list)
    survived: bool = False  # every resume worked and the run reached its final step
    identical: bool = False  # final checkpoint bitwise equal to the uninterrupted run's (all tensors)
    metrics_ok: bool = False  # metrics.jsonl has each step once, with the uninterrupted run's losses
    damaged: list[str] = field(default_factory=list)  # checkpoints with a sidecar but a wrong hash
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def max_lost(self) -> int:
        return max((k.lost for k in self.kills), default=0)

    @property
    def in_checkpoint(self) -> int:
        return sum(k.phase != "outside checkpoint" for k in self.kills)


# --- data and processes ---------------------------------------------------------------------------------
def make_images(folder: Path, n: int = 64, res: int = 32, seed: int = 0) -> Path:
    """n gray PNGs of bright discs on black: a real folder source for real `ganforge train` processes."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res]
    for i in range(n):
        cy, cx = rng.integers(res // 4, 3 * res // 4, 2)
        r = rng.integers(3, res // 3)
        img = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r**2, rng.integers(150, 256), 0).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:03d}.png")
    return folder


def ganforge_env(cache: Path, slow_s: float | None = None) -> dict[str, str]:
    env = {**os.environ, "GANFORGE_CACHE": str(cache), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop(SLOW_ENV, None)
    if slow_s:
        env[SLOW_ENV] = str(slow_s)  # read by the launcher below, not by ganforge
    return env


SLOW_ENV = "CRASH_TEST_SLOW_CHECKPOINT"
# `ganforge ARGS` with the documented fault hook installed: sleep at every point inside a checkpoint
# write, which widens the window in which a SIGKILL leaves a checkpoint half-written.
LAUNCHER = (
    "import os, sys, time\n"
    "import ganforge.runs.checkpoint as c\n"
    f"s = float(os.environ.get({SLOW_ENV!r}) or 0)\n"
    "c.FAULT_HOOK = (lambda point: time.sleep(s)) if s else None\n"
    "from ganforge.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """`ganforge ARGS` in a child process, output to a log file (a pipe nobody reads could block the child)."""
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-c", LAUNCHER, *args], stdout=f, stderr=subprocess.STDOUT, env=env)


def kill_and_reap(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=timeout)


# --- reading a run dir without ganforge ------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_states(ckdir: Path) -> tuple[list[int], list[str]]:
    """(steps of intact checkpoints, names of damaged ones): a sidecar counts as a checkpoint, and it is
    intact when it parses and the tensor file's SHA-256 matches the one it names."""
    intact, damaged = [], []
    if not ckdir.is_dir():
        return intact, damaged
    for p in sorted(ckdir.iterdir()):
        m = _SIDECAR.match(p.name)
        if not m:
            continue
        try:
            meta = json.loads(p.read_text())
            ok = sha256_file(p.with_suffix(".safetensors")) == meta["sha256"] and meta["step"] == int(m.group(1))
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if ok:
            intact.append(int(m.group(1)))
        else:
            damaged.append(p.name)
    return sorted(intact), damaged


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            out.append(rec)
    return out


def progress_since(run_dir: Path, t0: float) -> int:
    """Newest step logged by a process started at t0 (records carry their wall time)."""
    return max((r["step"] for r in read_metrics(run_dir) if r.get("time", 0) >= t0), default=-1)


def same_tensors(a: Path, b: Path) -> bool:
    """Every tensor of two safetensors files equal bit for bit (same names, dtypes, shapes, bytes)."""
    from safetensors.numpy import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    return (
        ta.keys() == tb.keys()
        and any(k.startswith("G.") for k in ta)
        and all(ta[k].dtype == tb[k].dtype and ta[k].shape == tb[k].shape and ta[k].tobytes() == tb[k].tobytes() for k in ta)
    )


def same_metrics(run: Path, ref: Path, steps: int) -> bool:
    """Each step logged exactly once, with exactly the losses of the uninterrupted run."""
    a, b = read_metrics(run), read_metrics(ref)
    if [r["step"] for r in a] != list(range(1, steps + 1)) or [r["step"] for r in b] != list(range(1, steps + 1)):
        return False
    return all(
        x.get("loss_d") == y.get("loss_d") and x.get("loss_g") == y.get("loss_g") for x, y in zip(a, b, strict=True)
    )


# --- one trial -----------------------------------------------------------------------------------------
def prepare(setup: Setup) -> subprocess.Popen:
    """Make the images and start the uninterrupted reference run (it also fills the decode cache)."""
    make_images(setup.images)
    shutil.rmtree(setup.reference, ignore_errors=True)
    return spawn(setup.train_args(setup.reference), ganforge_env(setup.cache), setup.workdir / "reference.log")


def finish_reference(setup: Setup, proc: subprocess.Popen) -> None:
    rc = proc.wait(timeout=setup.process_timeout_s)
    final = setup.reference / "checkpoints" / f"step-{setup.steps:08d}.safetensors"
    if rc != 0 or not final.is_file():
        log = (setup.workdir / "reference.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the uninterrupted reference run failed (exit {rc}):\n{log}")


def _wait_for(proc: subprocess.Popen, cond, deadline: float) -> bool:  # noqa: ANN001
    """Poll `cond()` until it holds (True) or the process ends or the deadline passes (False)."""
    while time.monotonic() < deadline:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(POLL_S)
    return False


def _names(d: Path) -> set[str]:
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


def _aim(
    setup: Setup, proc: subprocess.Popen, run: Path, mode: str, base: int, t_spawn: float, rng: random.Random
) -> bool:
    """Wait for the moment `mode` aims at; False if the process ended first (or it never came)."""
    ck = run / "checkpoints"
    deadline = time.monotonic() + setup.process_timeout_s
    # never kill before the run has one complete checkpoint: there would be nothing to resume
    if not _wait_for(proc, lambda: bool(checkpoint_states(ck)[0]), deadline):
        return False
    armed_ns, before = time.time_ns(), _names(ck)
    if mode == "startup":  # for a resumed process: while it imports, loads data, restores, truncates logs
        _wait_for(proc, lambda: False, time.monotonic() + rng.uniform(0.0, 2.5))
        return proc.poll() is None
    if mode == "steps":
        target = base + rng.randint(1, 2 * setup.interval)
        if not _wait_for(proc, lambda: progress_since(run, t_spawn) >= target, deadline):
            return False
        time.sleep(rng.uniform(0.0, 0.05))
        return proc.poll() is None
    if mode == "tensor":
        return _wait_for(proc, lambda: any(_TENSOR_TMP.match(n) for n in _names(ck) - before), deadline)
    if mode == "sidecar":

        def orphan() -> bool:
            for n in _names(ck) - before:
                p = ck / n
                if n.endswith(".safetensors") and not p.with_suffix(".json").exists():
                    try:
                        return p.stat().st_mtime_ns >= armed_ns
                    except OSError:
                        return False
            return False

        return _wait_for(proc, orphan, deadline)
    raise ValueError(f"unknown kill mode {mode!r}")


def _phase(ck: Path, before: set[str], spawned_ns: int) -> str:
    """What the kill interrupted, from what it left in checkpoints/."""
    new = _names(ck) - before
    if any(_TENSOR_TMP.match(n) for n in new):
        return "tensor write"
    for n in _names(ck):
        p = ck / n
        if n.endswith(".safetensors") and not p.with_suffix(".json").exists():
            try:
                if p.stat().st_mtime_ns >= spawned_ns:
                    return "before sidecar"
            except OSError:
                pass
    return "outside checkpoint"


def run_trial(setup: Setup, name: str, modes: list[str], rng: random.Random) -> TrialResult:
    """Train into a fresh run dir, one SIGKILL per entry of `modes`, resume after each (see `judge`)."""
    t_start = time.monotonic()
    res = TrialResult()
    run, logs = setup.workdir / name, setup.workdir / f"{name}.log"
    shutil.rmtree(run, ignore_errors=True)
    ck, base = run / "checkpoints", 0
    args = setup.train_args(run)
    proc: subprocess.Popen | None = None
    try:
        for i, mode in enumerate([*modes, None]):
            slow = setup.slow_s if mode in ("tensor", "sidecar") else None
            before, spawned_ns, t0 = _names(ck), time.time_ns(), time.time()
            proc = spawn(args, ganforge_env(setup.cache, slow), logs)
            if mode is None:  # the last process runs to the end
                rc = proc.wait(timeout=setup.process_timeout_s)
                if rc != 0:
                    res.errors.append(f"final process exited {rc}")
                break
            _aim(setup, proc, run, mode, base, t0, rng)
            rc = kill_and_reap(proc)
            if rc == 0:
                break  # it finished before the kill came: nothing left to resume
            if rc != -signal.SIGKILL:
                res.errors.append(f"process {i} ({mode}) exited {rc} on its own")
                break
            intact, damaged = checkpoint_states(ck)
            res.damaged += [f"{d} (after kill {i})" for d in damaged]
            if not intact:
                res.errors.append(f"no intact checkpoint after kill {i} ({mode})")
                break
            progress = max(base, progress_since(run, t0))
            res.kills.append(
                Kill(mode, _phase(ck, before, spawned_ns), progress, intact[-1], max(0, progress - intact[-1]))
            )
            base = intact[-1]
            if base >= setup.steps:
                break
            args = ["train", "--resume", str(run), "--quiet"]
        res.survived = not res.errors and checkpoint_states(ck)[0][-1:] == [setup.steps]
    except subprocess.TimeoutExpired as e:
        res.errors.append(f"timeout: {e}")
    finally:
        if proc is not None and proc.poll() is None:  # never leave a child behind
            kill_and_reap(proc)
    res.seconds = time.monotonic() - t_start
    if res.errors and logs.is_file():
        res.errors.append("log tail: " + logs.read_text(errors="replace")[-1500:])
    return res


def judge(setup: Setup, name: str, res: TrialResult) -> TrialResult:
    """Compare a survived trial with the finished reference run: tensors and logged losses."""
    if res.survived:
        final = f"step-{setup.steps:08d}.safetensors"
        res.identical = same_tensors(
            setup.workdir / name / "checkpoints" / final, setup.reference / "checkpoints" / final
        )
        res.metrics_ok = same_metrics(setup.workdir / name, setup.reference, setup.steps)
    return res


# --- the benchmark ---------------------------------------------------------------------------------------
def table(results: list[TrialResult], interval: int) -> str:
    kills = sum(len(r.kills) for r in results)
    rows = [
        ("trials", len(results)),
        ("survived", sum(r.survived for r in results)),
        ("identical", sum(r.identical for r in results)),
        ("metrics identical", sum(r.metrics_ok for r in results)),
        ("total kills", kills),
        ("kills inside a checkpoint write", sum(r.in_checkpoint for r in results)),
        ("damaged checkpoints seen", sum(len(r.damaged) for r in results)),
        (f"max_steps_lost (checkpoint_every={interval})", max((r.max_lost for r in results), default=0)),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{w}} | {v:>5} |" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20, help="train.steps of every run")
    ap.add_argument("--interval", type=int, default=5, help="train.checkpoint_every")
    ap.add_argument("--max-kills", type=int, default=3, help="each trial kills 1..N times")
    ap.add_argument("--jobs", type=int, default=2, help="trials run at once (each child uses one thread)")
    ap.add_argument("--workdir", help="keep everything here (default: a temporary folder, removed)")
    a = ap.parse_args(argv)
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="ganforge-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    setup = Setup(work, steps=a.steps, interval=a.interval)
    t0 = time.monotonic()
    try:
        finish_reference(setup, prepare(setup))
        plans = []
        for t in range(a.trials):
            rng = random.Random(a.seed * 100_003 + t)
            plans.append((f"trial-{t:03d}", [rng.choice(MODES) for _ in range(rng.randint(1, a.max_kills))], rng))
        with concurrent.futures.ThreadPoolExecutor(max(1, a.jobs)) as pool:
            results = list(pool.map(lambda p: judge(setup, p[0], run_trial(setup, *p)), plans))
        for (name, _, _), r in zip(plans, results, strict=True):
            what = ", ".join(f"{k.mode}->{k.phase} lost {k.lost}" for k in r.kills)
            status = "ok" if r.survived and r.identical and r.metrics_ok else "FAIL"
            print(f"{name}: {status} {r.seconds:5.1f}s  kills: {what}")
            for e in r.errors + r.damaged:
                print(f"    {e}")
        print()
        print(table(results, a.interval))
        print(f"\n{a.trials} trials in {time.monotonic() - t0:.0f} s")
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    good = all(r.survived and r.identical and r.metrics_ok and not r.damaged for r in results)
    return 0 if good and max((r.max_lost for r in results), default=0) <= a.interval else 1


if __name__ == "__main__":
    raise SystemExit(main())
