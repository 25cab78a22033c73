"""Crash safety with real processes: a run SIGKILLed anywhere (also inside a checkpoint write) and
resumed ends bitwise equal to an uninterrupted one; damaged checkpoints are detected and skipped;
one process per run dir, and the lock of a killed process is never stale.

The fault-injection harness is benchmarks/crash_test.py (the benchmark runs it for many trials).
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import synthetic_data

from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.runs import checkpoint as ckpt
from ganforge.training.launch import train


def _load_harness() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "crash_test.py"
    spec = importlib.util.spec_from_file_location("ganforge_crash_harness", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


crash = _load_harness()
INTERVAL = 5


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    """In-process runs use train.threads=1, which is process-wide: give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ganforge: warning:")]


def assert_one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2, err
    lines = error_lines(err)
    assert len(lines) == 1 and lines[0].startswith("ganforge: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def cli(args: list, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    """Five SIGKILLs (two in a tensor-file write, one between tensor file and sidecar, the rest during
    start-up or between steps), each followed by `--resume`: same weights, optimizer state and
    losses as one uninterrupted run, and no kill costs more than one checkpoint interval."""
    setup = crash.Setup(tmp_path, steps=20, interval=INTERVAL)
    ref = crash.prepare(setup)  # the uninterrupted run trains alongside
    try:
        res = crash.run_trial(setup, "killed", ["steps", "tensor", "startup", "sidecar", "tensor"], random.Random(0))
        crash.finish_reference(setup, ref)
    finally:
        crash.kill_and_reap(ref)
    crash.judge(setup, "killed", res)
    assert res.survived, res.errors
    assert len(res.kills) >= 5, res.kills
    phases = [k.phase for k in res.kills]
    assert phases.count("tensor write") >= 1 and phases.count("before sidecar") >= 1, res.kills
    assert not res.damaged  # a checkpoint with a sidecar was always complete
    assert res.identical  # every tensor of the final checkpoint, bit for bit
    assert res.metrics_ok  # each step logged once, with the uninterrupted run's losses
    assert all(0 <= k.lost <= INTERVAL for k in res.kills), res.kills
    assert any(k.lost == INTERVAL for k in res.kills if k.phase == "tensor write")  # the bound is reached


@pytest.fixture
def folder_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A finished 15-step run (checkpoints 5, 10, 15) trained by the CLI on a folder of PNGs."""
    setup = crash.Setup(tmp_path, steps=15, interval=INTERVAL)
    crash.make_images(setup.images)
    rc, _, err = cli(setup.train_args(tmp_path / "run"), capsys)
    assert rc == 0, err
    return tmp_path / "run"


def _damage(path: Path, how: str) -> None:
    raw = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(raw[: len(raw) // 2]))
    else:
        raw[len(raw) * 2 // 3] ^= 0x10
        path.write_bytes(bytes(raw))


def test_damaged_checkpoints_are_detected_and_resume_falls_back(
    folder_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ck = folder_run / "checkpoints"
    assert [s for s, _ in ckpt.list_checkpoints(ck)] == [5, 10, 15]
    _damage(ck / "step-00000015.safetensors", "truncate")
    _damage(ck / "step-00000010.safetensors", "flip")
    for step in (10, 15):  # loading either is a one-line error, through the API and the CLI
        p = ck / f"step-{step:08d}.safetensors"
        with pytest.raises(UserError, match="corrupted or truncated") as e:
            ckpt.read_checkpoint(p)
        assert "\n" not in str(e.value)
        rc, _, err = cli(["train", "fashion_mnist_dcgan", "--init-from", p, "--run-dir", tmp_path / "ft"], capsys)
        assert_one_line_error(rc, err, "corrupted or truncated", p.name)
        assert not (tmp_path / "ft").exists()

    rc, out, err = cli(["train", "--resume", folder_run, "train.steps=20", "--quiet"], capsys)
    assert rc == 0, err
    warned = [ln for ln in err.splitlines() if ln.startswith("ganforge: warning: skipping damaged checkpoint")]
    assert len(warned) == 2 and "step-00000015" in warned[0] and "step-00000010" in warned[1], err
    assert "resuming from the newest intact checkpoint, step 5" in err
    assert "step 20" in out
    assert "skipping damaged checkpoint" in (folder_run / "train.log").read_text()
    for step in (10, 15, 20):  # the damaged ones were retrained and rewritten whole
        assert ckpt.read_checkpoint(ck / f"step-{step:08d}.safetensors").step == step
    steps = [r["step"] for r in crash.read_metrics(folder_run)]
    assert steps == list(range(1, 21))

    for _, js in ckpt.list_checkpoints(ck):  # nothing intact left: a one-line error, not a fresh start
        _damage(js.with_suffix(".safetensors"), "flip")
    rc, _, err = cli(["train", "--resume", folder_run, "train.steps=30", "--quiet"], capsys)
    assert_one_line_error(rc, err, "no intact checkpoint")
    assert err.count("ganforge: warning: skipping damaged checkpoint") == 3


def test_damaged_sidecar_is_a_one_line_error(folder_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    js = folder_run / "checkpoints" / "step-00000015.json"
    js.write_text(js.read_text()[:100])
    with pytest.raises(UserError, match="metadata .* unreadable") as e:
        ckpt.read_checkpoint(js)
    assert "\n" not in str(e.value)
    rc, _, err = cli(["train", "--resume", folder_run, "train.steps=16", "--quiet"], capsys)
    assert rc == 0 and "resuming from the newest intact checkpoint, step 10" in err, err


@pytest.mark.slow
def test_second_process_is_refused_and_a_killed_process_leaves_no_stale_lock(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = crash.Setup(tmp_path, steps=100_000, interval=INTERVAL)
    crash.make_images(setup.images)
    run = tmp_path / "run"
    env = crash.ganforge_env(setup.cache)
    first = crash.spawn(setup.train_args(run), env, tmp_path / "first.log")
    try:
        deadline = time.monotonic() + 120
        while not crash.checkpoint_states(run / "checkpoints")[0] and time.monotonic() < deadline:
            assert first.poll() is None, (tmp_path / "first.log").read_text()
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "ganforge", "train", "--resume", str(run), "--quiet"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert_one_line_error(
            second.returncode, second.stderr, "in use by another ganforge process", f"pid {first.pid}"
        )
        rc, _, err = cli(setup.train_args(run), capsys)  # a new run into the same folder is refused too
        assert_one_line_error(rc, err, "already holds a run")
        assert first.poll() is None  # the refusals did not disturb the first process
    finally:
        crash.kill_and_reap(first)
    assert (run / ".lock").is_file()  # the lock file stays, but the kernel dropped the lock with the process
    newest = crash.checkpoint_states(run / "checkpoints")[0][-1]
    rc, out, err = cli(["train", "--resume", run, f"train.steps={newest + 2}", "--quiet"], capsys)
    assert rc == 0, err
    assert f"step {newest + 2}" in out


def test_failed_resume_releases_the_lock(tmp_path: Path) -> None:
    data = synthetic_data(n=64)
    fast = ["model.nf=8", "train.batch_size=16", "train.tensorboard=false", "train.threads=1", "train.eval_every=0"]
    run, _ = train("fashion_mnist_dcgan", fast + ["train.steps=2"], run_dir=tmp_path / "r", data=data, quiet=True)
    with pytest.raises(UserError, match="train.stepz"):
        train(None, ["train.stepz=4"], resume=run.path, data=data, quiet=True)  # a typo, e.g. in a notebook
    _, summary = train(None, ["train.steps=4"], resume=run.path, data=data, quiet=True)  # the retry
    assert summary["step"] == 4
