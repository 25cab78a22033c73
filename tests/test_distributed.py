"""Distributed training on CPU (gloo, 2 processes): identical weights on every rank, the 2-process run equal to
the 1-process run with the same global batch, bitwise resume, another world size, a dead rank, `--nproc`; and through the real CLI (`ganforge train --nproc 2`,
torchrun's agent in between): a signal, a killed rank, a stalled rank (`train.dist_timeout`), `--resume --nproc`.

Starting processes is what costs here (each imports torch), so one pair of processes runs several jobs in a row
over one process group (`_worker`), and the assertions read what they left on disk.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import FAST, png_folder, synthetic_data
from safetensors.torch import load_file

from ganforge.errors import UserError
from ganforge.models import build_generator
from ganforge.runs import checkpoint as ckpt
from ganforge.training import distributed
from ganforge.training.launch import train
from ganforge.training.loop import Loop
from ganforge.training.trainer import Trainer

QUICK = FAST + ["train.tensorboard=false", "train.sample_every=0", "train.threads=1", "device=cpu"]
# BatchNorm in G (per-rank statistics), dropout in D (per-rank global RNG), GP and DiffAugment (per-rank part
# stream), flips (global draw): every kind of randomness a resume has to restore per process
MIXED = QUICK + ["model.d_norm=none", "model.d_dropout=0.2", "loss.gp_weight=1", "augment.name=diffaugment",
                 "data.hflip=true", "train.batch_size=16", "train.checkpoint_every=5"]
# No batch statistics (progan: pixel norm; minibatch stddev off with groups of 1), no dropout, no random parts:
# then 2 processes with b images each compute what 1 process with 2b computes, growing included. Not bitwise:
# the gradient is summed in another order (b + b, then averaged), and Adam's first step turns a gradient near its
# eps (1e-8) into a weight difference proportional to the learning rate (2e-6 at lr 1e-4). oneDNN is off in
# this comparison because its convolutions pick kernels by batch size: the same image through G in a batch
# of 4 or of 8 differs by 1e-6, which Adam amplifies where a freshly faded-in block has tiny gradients
# (measured: up to 1e-3 after 12 steps at lr 1e-3). That is rounding, not the distributed logic under test.
PROGAN = QUICK + ["model.name=progan", "model.mbstd_group=1", "loss.name=nsgan", "loss.gp_weight=0", "loss.drift=0",
                  "data.hflip=true", "grow.fade_images=16", "grow.stable_images=48", "grow.batch_sizes=[16,8,8,8]",
                  "train.batch_size=8", "train.lr_g=1e-4", "train.lr_d=1e-4", "train.steps=12",
                  "train.checkpoint_every=0"]
DATA_N = 96


# --- running jobs on W processes --------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _module_state(t: Trainer) -> dict[str, torch.Tensor]:
    tensors, _ = t.state()
    return tensors


def _fault(step: int, what: str) -> None:
    """Make this process misbehave after G update `step`: kill itself, get SIGTERM, or report a NaN loss."""
    real = Trainer.train_step

    def step_with_fault(self: Trainer) -> dict[str, torch.Tensor]:
        out = real(self)
        if self.step == step:
            if what == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif what == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
            elif what == "nan":
                out["loss_g"] = out["loss_g"] * float("nan")
        return out

    Trainer.train_step = step_with_fault  # type: ignore[method-assign]


def _worker(rank: int, world: int, port: int, jobs: list[dict[str, Any]], out: str) -> None:
    """One process: join the group, run `jobs` in order (each a `train()` call), record each outcome as JSON."""
    import torch.distributed as tdist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    import datetime

    tdist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=40))
    failed = False
    real_step, real_fit = Trainer.train_step, Loop.run_training
    for job in jobs:
        Trainer.train_step = real_step  # type: ignore[method-assign]
        if rank == 0 and job.get("copy"):  # a run dir cut back to an earlier checkpoint, to resume from
            src, dst, keep = job["copy"]
            shutil.copytree(src, dst)
            for p in Path(dst, "checkpoints").glob("step-*"):
                if int(p.stem.split("-")[1]) > keep:
                    p.unlink()
        tdist.barrier()
        torch.backends.mkldnn.enabled = not job.get("no_onednn", False)
        if job.get("fault") and job["fault"][0] == rank:
            _fault(*job["fault"][1:])
        states: dict[str, Any] = {}

        def fit_and_keep(self: Loop, states: dict[str, Any] = states) -> dict[str, Any]:
            summary = real_fit(self)
            states["tensors"] = _module_state(self.b)
            return summary

        Loop.run_training = fit_and_keep  # type: ignore[method-assign]
        try:
            _, summary = train(job.get("config"), job["overrides"], run_dir=job.get("run_dir"),
                               resume=job.get("resume"), data=synthetic_data(n=DATA_N), quiet=True)
            rec: dict[str, Any] = {"summary": summary}
            if job.get("dump"):
                torch.save(states["tensors"], Path(out) / f"{job['name']}-rank{rank}.pt")
        except BaseException as e:  # noqa: BLE001 - recorded for the test to judge
            failed = True
            rec = {"error": type(e).__name__, "message": str(e), "trace": traceback.format_exc()[-2000:]}
        finally:
            Loop.run_training = real_fit  # type: ignore[method-assign]
        (Path(out) / f"{job['name']}-rank{rank}.json").write_text(json.dumps(rec))
    tdist.destroy_process_group()
    sys.exit(1 if failed else 0)


def _launch(world: int, jobs: list[dict[str, Any]], out: Path, timeout: float = 240) -> list[int | None]:
    """Run `jobs` on `world` fresh processes; their exit codes (None: still running at the timeout, killed)."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, port, jobs, str(out))) for r in range(world)]
    for p in procs:
        p.start()
    codes: list[int | None] = []
    try:
        for p in procs:
            p.join(timeout)
            codes.append(p.exitcode)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    return codes


def _result(out: Path, job: str, rank: int) -> dict[str, Any]:
    rec = json.loads((out / f"{job}-rank{rank}.json").read_text())
    assert "error" not in rec or job == "N", rec.get("trace")
    return rec


def _tensors(run: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{step:08d}.safetensors"))


def _meta(run: Path, step: int) -> dict[str, Any]:
    return json.loads((run / "checkpoints" / f"step-{step:08d}.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One pair of processes: a 10-step run (A), A resumed from its step-5 checkpoint (B), the progan run of
    the equivalence test (P), a SIGTERM on rank 1 (S), a NaN on rank 1 (N)."""
    root = tmp_path_factory.mktemp("dist")
    jobs = [
        {"name": "A", "config": "fashion_mnist_dcgan", "overrides": MIXED + ["train.steps=10"], "run_dir": str(root / "A"),
         "dump": True},
        {"name": "B", "copy": (str(root / "A"), str(root / "B"), 5), "resume": str(root / "B"),
         "overrides": ["train.steps=10"]},
        {"name": "P", "config": "fashion_mnist32_progan", "overrides": PROGAN, "run_dir": str(root / "P"),
         "no_onednn": True},
        {"name": "S", "config": "fashion_mnist_dcgan", "overrides": MIXED + ["train.steps=50"],
         "run_dir": str(root / "S"), "fault": (1, 3, "sigterm")},
        {"name": "N", "config": "fashion_mnist_dcgan", "overrides": MIXED + ["train.steps=50"],
         "run_dir": str(root / "N"), "fault": (1, 7, "nan")},
    ]
    codes = _launch(2, jobs, root)
    assert codes == [1, 1], codes  # the NaN job ends both processes with TrainingDiverged, the rest succeed
    return root


# --- the tests ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_parameters_identical_on_both_ranks(runs):
    a0, a1 = torch.load(runs / "A-rank0.pt"), torch.load(runs / "A-rank1.pt")
    assert a0.keys() == a1.keys() and any(k.startswith("opt_D.") for k in a0)
    for k in a0:  # G, D, G_ema (rank 0's BatchNorm statistics since the checkpoint) and both optimizers
        assert torch.equal(a0[k], a1[k]), k
    saved = _tensors(runs / "A", 10)
    # the checkpoint's G_ema BatchNorm statistics are standing ones (models/standing.py), not the in-memory copies of G's
    standing = [k for k in saved if k.startswith("G_ema.") and ("running_" in k or "num_batches" in k)]
    assert all(torch.equal(saved[k], a0[k]) for k in saved if k not in standing)
    # the weights did move, and both ranks report the same (averaged) losses
    assert not torch.equal(saved["G.convs.0.weight"], _tensors(runs / "A", 5)["G.convs.0.weight"])
    s0, s1 = _result(runs, "A", 0)["summary"], _result(runs, "A", 1)["summary"]
    assert s0 == s1 and s0["step"] == 10
    recs = [json.loads(x) for x in (runs / "A" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["images_seen"]) for r in recs] == [(5, 80), (10, 160)]  # global images
    meta = _meta(runs / "A", 10)
    assert meta["world_size"] == 2 and len(meta["ranks"]) == 2
    assert meta["ranks"][0]["rng"] == meta["rng"] and meta["ranks"][0]["rng"] != meta["ranks"][1]["rng"]
    assert "on 2 processes (global batch 16)" in (runs / "A" / "train.log").read_text()


@pytest.mark.slow
def test_resume_of_a_two_rank_run_is_bitwise(runs):
    a, b = _tensors(runs / "A", 10), _tensors(runs / "B", 10)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ma, mb = _meta(runs / "A", 10), _meta(runs / "B", 10)
    assert ma["ranks"] == mb["ranks"] and ma["data"] == mb["data"] and ma["losses"] == mb["losses"]
    log = (runs / "B" / "train.log").read_text()
    assert "resumed from step-00000005.safetensors (step 5) to train.steps=10 on 2 processes" in log


@pytest.mark.slow
def test_two_ranks_equal_one_process_with_the_global_batch(runs, tmp_path):
    """Global batch 16 (8 per rank) on 2 processes == batch 16 on 1 process, through flips, an epoch boundary and
    growing: 4x4 at global batch 16, then 8x8 fading in at global batch 8 (4 per rank), then 16x16."""
    with torch.backends.mkldnn.flags(enabled=False):  # as the 2-process run (see PROGAN)
        _, summary = train("fashion_mnist32_progan", PROGAN, run_dir=tmp_path / "one", data=synthetic_data(n=DATA_N),
                           quiet=True)
    one, two = _tensors(tmp_path / "one", 12), _tensors(runs / "P", 12)
    m1, m2 = _meta(tmp_path / "one", 12), _meta(runs / "P", 12)
    assert m1["images_seen"] == m2["images_seen"] == 3 * 16 + 9 * 8  # 3 steps at 16, then 9 at 8
    assert m1["data"] == m2["data"] == {"epoch": 1, "pos": 24}  # an epoch of 96 images ended at step 9
    recs = [json.loads(x) for x in (runs / "P" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["resolution"], r["alpha"]) for r in recs] == [(5, 8.0, 0.5), (10, 8.0, 1.0), (12, 16.0, 0.0)]
    worst = max((one[k] - two[k]).abs().max().item() for k in one if k.startswith(("G.", "D.", "G_ema.")))
    assert worst < 1e-5, worst
    torch.manual_seed(0)  # the initial weights (seed 0): training did move them, by far more than the tolerance
    init = build_generator(_cfg("fashion_mnist32_progan", PROGAN)).state_dict()
    assert max((one["G." + k] - v).abs().max().item() for k, v in init.items() if v.is_floating_point()) > 1e-3
    assert summary["loss_d"] == pytest.approx(_result(runs, "P", 0)["summary"]["loss_d"], abs=1e-5)


@pytest.mark.slow
def test_signal_on_one_rank_stops_every_rank_at_the_same_step(runs):
    s0, s1 = _result(runs, "S", 0)["summary"], _result(runs, "S", 1)["summary"]
    assert s0["stopped_by"] == s1["stopped_by"] == "SIGTERM" and s0["step"] == s1["step"] == 3
    assert [s for s, _ in ckpt.list_checkpoints(runs / "S" / "checkpoints")] == [3]
    n0, n1 = _result(runs, "N", 0), _result(runs, "N", 1)
    assert n0["error"] == n1["error"] == "TrainingDiverged"
    assert "diverged at step 7" in n0["message"] and "step-00000005.safetensors" in n0["message"]


@pytest.mark.slow
def test_resume_on_another_world_size_continues_and_says_so(runs, tmp_path, capsys):
    run = tmp_path / "C"
    shutil.copytree(runs / "A", run)
    for p in (run / "checkpoints").glob("step-00000010.*"):
        p.unlink()
    _, summary = train(None, ["train.steps=10"], resume=run, data=synthetic_data(n=DATA_N), quiet=True)
    assert summary["step"] == 10
    err = capsys.readouterr().err
    assert "written by a run on 2 process(es) and this one has 1" in err and "not bitwise" in err
    assert "not bitwise" in (run / "train.log").read_text()
    meta = _meta(run, 10)
    assert meta["world_size"] == 1 and "ranks" not in meta
    assert meta["images_seen"] == 160 and meta["data"] == _meta(runs / "A", 10)["data"]  # position is global


@pytest.mark.slow
def test_a_dead_rank_ends_the_job_and_keeps_the_last_checkpoint(tmp_path):
    jobs = [{"name": "K", "config": "fashion_mnist_dcgan", "overrides": MIXED + ["train.steps=50"],
             "run_dir": str(tmp_path / "K"), "fault": (1, 7, "kill")}]
    codes = _launch(2, jobs, tmp_path, timeout=120)
    assert codes[1] == -signal.SIGKILL and codes[0] == 1, codes  # rank 0 ended by itself, with an error
    rec = json.loads((tmp_path / "K-rank0.json").read_text())
    assert rec["error"] == "DistributedFailure", rec
    assert "another process of the distributed job failed or stopped answering" in rec["message"]
    assert "step-00000005.safetensors" in rec["message"]
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "K" / "checkpoints")] == [5]
    ckpt.read_checkpoint(tmp_path / "K" / "checkpoints" / "step-00000005.safetensors")  # hash verified
    assert not [p for p in (tmp_path / "K" / "checkpoints").iterdir() if p.name.startswith(".")]
    assert "ERROR another process" in (tmp_path / "K" / "train.log").read_text()
    # and the run resumes from there (on one process: it says so and continues)
    _, summary = train(None, ["train.steps=8"], resume=tmp_path / "K", data=synthetic_data(n=DATA_N), quiet=True)
    assert summary["step"] == 8


@pytest.mark.slow
def test_nproc_cli_runs_torchrun(tmp_path, capsys):
    from ganforge.cli import main

    data = png_folder(tmp_path / "imgs", 48)
    rc = main(["train", "fashion_mnist_dcgan", f"data.source={data}", *QUICK, "train.steps=4", "train.batch_size=8",
               "--run-dir", str(tmp_path / "r"), "--nproc", "2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    meta = _meta(tmp_path / "r", 4)
    assert meta["world_size"] == 2 and meta["images_seen"] == 32
    assert "on 2 processes" in (tmp_path / "r" / "train.log").read_text()


# --- one-line errors, no processes needed -------------------------------------------------------------
def test_batch_must_divide_over_the_processes(capsys):
    from ganforge.cli import main

    rc = main(["train", "fashion_mnist_dcgan", "train.batch_size=15", "--nproc", "2", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err == ("ganforge: error: train.batch_size=15 is the global batch and must divide evenly over 2 "
                   "processes; use multiples of 2")
    with pytest.raises(UserError, match=r"grow.batch_sizes=\[64, 64, 32, 15\] is the global batch"):
        distributed.check_world(
            _cfg("fashion_mnist32_progan", ["grow.batch_sizes=[64,64,32,15]", "train.batch_size=16"]), 2,
            torch.device("cpu"))
    assert main(["train", "fashion_mnist_dcgan", "--nproc", "0"]) == 2
    assert "--nproc must be a positive" in capsys.readouterr().err


def _cfg(preset: str, overrides: list[str]) -> dict[str, Any]:
    from ganforge.config import load_config

    return load_config(preset, overrides)


@pytest.mark.parametrize(("override", "message"), [
    ("train.sync_bn=true", "train.sync_bn=true needs CUDA"),
    ("train.amp=fp16", "train.amp=fp16 needs CUDA"),
])
def test_cuda_only_settings_are_one_line_errors_on_cpu(tmp_path, override, message):
    with pytest.raises(UserError, match=message) as e:
        train("fashion_mnist_dcgan", QUICK + [override], run_dir=tmp_path / "r", data=synthetic_data(n=32), quiet=True)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "r").exists()  # refused before the run directory was made


@pytest.mark.cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_trains_and_resumes_exactly(tmp_path, amp, test_device):
    """train.amp really runs the forward passes in half precision (the losses differ from float32), stays finite,
    and resumes bitwise like float32 (fp16: with its loss scalers, CUDA only)."""
    if amp == "fp16" and not test_device.startswith("cuda"):
        pytest.skip("train.amp=fp16 needs CUDA (GANFORGE_TEST_DEVICE=cuda)")
    common = QUICK + ["model.d_norm=none", "train.batch_size=8", "train.checkpoint_every=3", f"device={test_device}"]
    data = synthetic_data(n=48)
    _, s32 = train("fashion_mnist_dcgan", common + ["train.steps=6"], run_dir=tmp_path / "f32", data=data, quiet=True)
    _, s16 = train("fashion_mnist_dcgan", common + ["train.steps=6", f"train.amp={amp}"], run_dir=tmp_path / "a",
                   data=data, quiet=True)
    assert s16["loss_d"] != s32["loss_d"] and abs(s16["loss_d"] - s32["loss_d"]) < 0.1
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    for p in (tmp_path / "b" / "checkpoints").glob("step-00000006.*"):
        p.unlink()
    train(None, ["train.steps=6"], resume=tmp_path / "b", data=data, quiet=True)
    a, b = _tensors(tmp_path / "a", 6), _tensors(tmp_path / "b", 6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(v.dtype == torch.float32 for k, v in a.items() if k.startswith("G.") and v.is_floating_point())


def test_amp_off_adds_no_casts():
    from ganforge.training.trainer import Precision

    p = Precision(False, torch.device("cpu"))  # `train.amp: off` reads as false in YAML
    x = torch.ones(2)
    assert p.mode == "off" and p.fp32(x) is x and not p.scalers and p.state_dict() == {}
    with p.autocast():
        assert not torch.is_autocast_enabled("cpu")


@pytest.mark.slow
@pytest.mark.cuda
def test_compile_trains_like_eager_and_checkpoints_plain_modules(tmp_path, test_device):
    """train.compile=true (inductor on CPU here: ~40 s of compiling) gives eager's numbers up to rounding, and the
    checkpoint holds the modules' own names (no `_orig_mod.`), so sampling and resume do not care."""
    common = QUICK + ["model.d_norm=none", "train.batch_size=8", "train.steps=2", "train.ema=false",
                      f"device={test_device}"]
    data = synthetic_data(n=32)
    _, eager = train("fashion_mnist_dcgan", common, run_dir=tmp_path / "e", data=data, quiet=True)
    _, compiled = train("fashion_mnist_dcgan", common + ["train.compile=true"], run_dir=tmp_path / "c", data=data,
                        quiet=True)
    assert compiled["loss_d"] == pytest.approx(eager["loss_d"], abs=1e-5)
    assert compiled["loss_g"] == pytest.approx(eager["loss_g"], abs=1e-5)
    e, c = _tensors(tmp_path / "e", 2), _tensors(tmp_path / "c", 2)
    assert e.keys() == c.keys()
    assert max((e[k] - c[k]).abs().max().item() for k in e if k.startswith(("G.", "D."))) < 1e-4


def test_ranks_draw_disjoint_slices_of_the_global_batch_flips_included():
    """Rank r's batch is rows [r*b, (r+1)*b) of what one process draws with the global batch (same images, same
    flips), so across the ranks every image is seen exactly once per epoch."""
    from ganforge.data.pipeline import BatchStream

    n, b, world = 40, 4, 2
    images = np.stack([np.array([[[2 * i], [2 * i + 1]]], np.uint8) for i in range(n)])  # 1 x 2 px: flips show
    one = BatchStream(images, np.arange(n), b * world, seed=3, device=torch.device("cpu"), hflip=True)
    ranks = [BatchStream(images, np.arange(n), b, seed=3, device=torch.device("cpu"), hflip=True, rank=r,
                         world_size=world) for r in range(world)]
    seen = []
    for step in range(n // (b * world)):  # one epoch
        x, y = one.next(step)
        parts = [s.next(step) for s in ranks]
        assert torch.equal(x, torch.cat([p[0] for p in parts])) and torch.equal(y, torch.cat([p[1] for p in parts]))
        seen += torch.cat([p[1] for p in parts]).tolist()
    assert sorted(seen) == list(range(n))
    assert one.state_dict() == ranks[0].state_dict() == ranks[1].state_dict() == {"epoch": 0, "pos": n}
    flipped = (x[:, 0, 0, 0] > x[:, 0, 0, 1]).tolist()
    assert any(flipped) and not all(flipped)  # the flips are really drawn (and sliced like the images)


# --- through the CLI: `ganforge train --nproc 2` as a user runs it (a parent, torchrun's agent, 2 workers) ------
CLI = QUICK + ["train.batch_size=8", "train.log_every=1"]
LONG = ["train.steps=100000", "train.checkpoint_every=2"]  # runs until the test stops it
needs_proc = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through Linux /proc")


def _start_cli(tmp_path: Path, args: list[str]) -> subprocess.Popen[str]:
    """`ganforge train <args> --nproc 2 --quiet` in a session of its own (no terminal); a new run trains on 48
    PNGs under tmp_path/imgs (a resume takes its data source from the run's config)."""
    if "--resume" not in args:
        data = tmp_path / "imgs" if (tmp_path / "imgs").is_dir() else png_folder(tmp_path / "imgs", 48)
        args = [*args, f"data.source={data}"]
    cmd = [sys.executable, "-m", "ganforge", "train", *args, "--nproc", "2", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _tree(pid: int) -> dict[int, int | None]:
    """pid -> RANK for `pid` and every process below it (the agent has no RANK, the workers 0 and 1)."""
    out: dict[int, int | None] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            todo += [int(c) for t in Path(f"/proc/{p}/task").iterdir() for c in (t / "children").read_text().split()]
            env = Path(f"/proc/{p}/environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        out[p] = next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None) if p != pid else None
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _wait_for(cond: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Poll `cond` (a file, a log line) until it holds; fail if the job ended first or `timeout` s passed."""
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None and not cond():
            pytest.fail(f"the job ended (exit {proc.returncode}) first: {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout} s")
        time.sleep(0.05)


@contextmanager
def _workers_of(proc: subprocess.Popen[str], run: Path) -> Iterator[dict[int, int]]:
    """rank -> pid of the two workers, once training wrote its step-2 checkpoint; on the way out (a failing
    assertion included) every process of the job that is still there is killed, one by one."""
    tree: dict[int, int | None] = {}
    try:
        _wait_for(lambda: (run / "checkpoints" / "step-00000002.json").exists(), proc)
        tree = _tree(proc.pid)
        yield {r: p for p, r in tree.items() if r is not None}
    finally:
        for p in [*tree, proc.pid]:
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.returncode is None:
            proc.communicate(timeout=30)


def _intact_checkpoints(run: Path) -> list[int]:
    """The steps of the run's checkpoints, each read back with its SHA-256 verified; no temporary file left."""
    found = ckpt.list_checkpoints(run / "checkpoints")
    for _, path in found:
        ckpt.read_checkpoint(path)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    return [s for s, _ in found]


@needs_proc
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_nproc_cli_stops_every_rank_with_a_checkpoint(tmp_path, sig):
    """SIGTERM to the `ganforge train --nproc` process alone (a scheduler's `kill PID`); SIGINT to every process of
    its process group (what Ctrl-C in a terminal does; torchrun's agent runs in a group of its own). Either way all ranks stop at one step, that step is checkpointed,
    and the exit code is 0 as for one process (README: "Ctrl-C or SIGTERM save a checkpoint and exit 0")."""
    run = tmp_path / "r"
    proc = _start_cli(tmp_path, ["fashion_mnist_dcgan", *CLI, *LONG, "--run-dir", str(run)])
    with _workers_of(proc, run) as workers:
        assert sorted(workers) == [0, 1]
        for p in [proc.pid] if sig == signal.SIGTERM else [p for p in _tree(proc.pid) if os.getpgid(p) == proc.pid]:
            os.kill(p, sig)
        out, err = proc.communicate(timeout=120)
        assert not [r for r, p in workers.items() if _alive(p)]
    assert proc.returncode == 0 and "Traceback" not in err, err
    log = (run / "train.log").read_text()
    stopped = re.search(rf"stopped by {sig.name} at step (\d+); checkpoint saved", log)
    assert stopped and "ERROR" not in log, log  # the ranks agreed on the step: no one waited on a gone peer
    step = int(stopped[1])
    assert step >= 2 and _intact_checkpoints(run)[-1] == step
    assert f"step {step} (stopped by {sig.name})" in out


@needs_proc
@pytest.mark.slow
def test_a_killed_rank_ends_nproc_cli_with_exit_1_and_intact_checkpoints(tmp_path):
    run = tmp_path / "r"
    proc = _start_cli(tmp_path, ["fashion_mnist_dcgan", *CLI, *LONG, "--run-dir", str(run)])
    with _workers_of(proc, run) as workers:
        os.kill(workers[1], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert not _alive(workers[0])  # the other rank ended too
    assert proc.returncode == 1, err
    steps = _intact_checkpoints(run)
    last = run / "checkpoints" / f"step-{steps[-1]:08d}.safetensors"
    failure = next(x for x in err.splitlines() if "another process of the distributed job failed" in x)
    assert f"the last good checkpoint is {last}; continue with `ganforge train --resume {run}`" in failure
    assert "ERROR another process of the distributed job failed" in (run / "train.log").read_text()
    assert "failed (exit code 1); see the messages above. Checkpoints already written are intact" in err


@needs_proc
@pytest.mark.slow
def test_dist_timeout_ends_nproc_cli_when_a_rank_stalls(tmp_path):
    """A rank frozen by SIGSTOP (a hung process): rank 0 gives up after `train.dist_timeout` seconds, not the
    default 1800, with the dead-rank message and exit 1."""
    run, timeout = tmp_path / "r", 6
    proc = _start_cli(tmp_path, ["fashion_mnist_dcgan", *CLI, *LONG, f"train.dist_timeout={timeout}",
                                 "--run-dir", str(run)])
    with _workers_of(proc, run) as workers:
        os.kill(workers[1], signal.SIGSTOP)
        frozen = time.monotonic()
        _wait_for(lambda: "ERROR another process" in (run / "train.log").read_text(), proc, timeout=timeout + 60)
        waited = time.monotonic() - frozen
        os.kill(workers[1], signal.SIGCONT)  # let it end now rather than at the agent's 30 s SIGKILL
        _, err = proc.communicate(timeout=120)
    # rank 0 may have been waiting on rank 1 for part of a step before the freeze
    assert timeout - 2 < waited < timeout + 30, waited
    assert proc.returncode == 1, err
    failure = next(x for x in err.splitlines() if "another process of the distributed job failed" in x)
    # in whichever collective rank 0 was waiting (the gradient all-reduce, a checkpoint's gather, ...)
    assert re.search(rf"stopped answering during [^(]+\(Timed out waiting {timeout * 1000}ms", failure), failure
    assert "the last good checkpoint is" in failure and _intact_checkpoints(run)


@pytest.mark.slow
def test_resume_through_nproc_cli_continues_bitwise(tmp_path):
    """`ganforge train --resume RUN --nproc 2` from step 3 of a 6-step 2-process run ends with the same bytes
    as the straight run (BatchNorm, dropout, GP, DiffAugment and flips: per-rank streams restored), and its
    step counters, images seen and logged losses continue where the checkpoint left them."""
    a, b = tmp_path / "A", tmp_path / "B"
    mixed = [o for o in MIXED if not o.startswith(("train.batch_size", "train.checkpoint_every"))]
    straight = _start_cli(tmp_path, ["fashion_mnist_dcgan", *mixed, *CLI, "train.steps=6", "train.checkpoint_every=3",
                                     "--run-dir", str(a)])
    err = straight.communicate(timeout=240)[1]
    assert straight.returncode == 0, err
    shutil.copytree(a, b)
    for p in (b / "checkpoints").glob("step-00000006.*"):
        p.unlink()
    resumed = _start_cli(tmp_path, ["--resume", str(b)])
    out, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
    ta, tb = _tensors(a, 6), _tensors(b, 6)
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)
    ma, mb = _meta(a, 6), _meta(b, 6)
    assert mb["world_size"] == 2 and ma["ranks"] == mb["ranks"] and ma["data"] == mb["data"]
    assert mb["images_seen"] == 48 and ma["losses"] == mb["losses"]

    def logged(run: Path) -> list[tuple[Any, ...]]:
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["images_seen"], r["loss_d"], r["loss_g"]) for r in recs]

    assert logged(b) == logged(a) and [r[0] for r in logged(b)] == [1, 2, 3, 4, 5, 6]
    assert "resumed from step-00000003.safetensors (step 3) to train.steps=6 on 2 processes" in (b / "train.log").read_text()
    assert "step 6" in out
