"""Training on several processes: `torchrun --nproc_per_node=N -m ganforge train ...` (any torchrun
rendezvous: env:// with gloo on CPU, NCCL on CUDA) or `ganforge train --nproc N` on one machine.

The conventions, each chosen so that a W-process run is the 1-process run split W ways:
- `train.batch_size` (and `grow.batch_sizes`) is the GLOBAL batch, as in StyleGAN: every process takes
  batch/W images (an error when W does not divide it); `images_seen` counts global images.
- Every process draws its slice of one seeded global stream: the data permutation, the flips and the
  latents z are drawn for the whole global batch and sliced, so process r sees rows [r*b, (r+1)*b).
  The randomness of the objective's parts (augmentation, GP epsilon, path-length noise) and of the
  models (dropout, StyleGAN2 noise and mixing) comes from per-process streams derived from (seed, rank).
- Weights start identical (same seed, then a broadcast from rank 0) and stay identical: gradients are
  averaged over the processes after every backward (`average_gradients`), so the optimizers, G_ema
  and the schedules see the same numbers everywhere.
- Batch statistics (BatchNorm, minibatch stddev) are per process, as in StyleGAN2-ADA; `train.sync_bn`
  makes BatchNorm global on CUDA. At checkpoints rank 0's buffers (BatchNorm running statistics,
  StyleGAN2's w_avg) are broadcast, so every process continues from what the checkpoint holds.
- Rank 0 alone writes the run directory; per-process state (RNG streams, part states such as the
  path-length mean) is gathered into the checkpoint, so a resume on the same number of processes is
  bitwise exact. Another number of processes continues (images seen, schedules and data position are
  global) but is not exact, and says so.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist
from torch import nn

from ganforge.data.pipeline import seeded_generator
from ganforge.errors import DistributedFailure, UserError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank r of `world` processes, `local_rank` on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env() -> Dist:
    """The place torchrun gave this process (RANK, WORLD_SIZE, LOCAL_RANK); a single process without them."""
    try:
        world = int(os.environ.get("WORLD_SIZE") or 1)
        if world <= 1:
            return SINGLE
        d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK") or 0))
    except (KeyError, ValueError):
        raise UserError("WORLD_SIZE is set but RANK/LOCAL_RANK are missing or not integers; start distributed "
                        "training with torchrun or `ganforge train --nproc N`") from None
    if not 0 <= d.rank < world:
        raise UserError(f"RANK={d.rank} is outside WORLD_SIZE={world}; start the job with torchrun")
    return d


def is_main_process() -> bool:
    """Whether this process speaks for the job (prints summaries): rank 0, or the only process."""
    return from_env().is_main


def check_world(cfg: dict[str, Any], world: int, device: torch.device) -> None:
    """Settings that cannot work with `world` processes on `device`: one line each, before any process starts."""
    t = cfg["train"]
    if t["sync_bn"] and device.type != "cuda":
        raise UserError("train.sync_bn=true needs CUDA (SyncBatchNorm has no CPU implementation); "
                        "set train.sync_bn=false")
    if t["amp"] == "fp16" and device.type != "cuda":
        raise UserError("train.amp=fp16 needs CUDA (float16 autocast with a GradScaler); on CPU use "
                        "train.amp=bf16 or train.amp=off")
    if world <= 1:
        return
    sizes = {"train.batch_size": [t["batch_size"]]}
    if cfg["grow"]["batch_sizes"]:  # progressive growing: global batch sizes per resolution
        sizes["grow.batch_sizes"] = list(cfg["grow"]["batch_sizes"])
    for key, values in sizes.items():
        bad = [b for b in values if not isinstance(b, int) or b % world]
        if bad:
            raise UserError(f"{key}={values if len(values) > 1 else values[0]} is the global batch and must divide "
                            f"evenly over {world} processes; use multiples of {world}")


# --- process group ----------------------------------------------------------------------------------
def start(d: Dist, device: torch.device, timeout_s: float) -> bool:
    """Join the job (env:// rendezvous: gloo on CPU, NCCL on CUDA); False when the caller had already
    initialised torch.distributed (then it is theirs to destroy). `timeout_s` bounds every collective, so
    a process whose peer hangs ends with an error instead of waiting forever."""
    if device.type == "cuda":
        if d.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={d.local_rank} but this machine shows {torch.cuda.device_count()} GPU(s); "
                            "start at most one process per GPU")
        device = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(device)
    if tdist.is_initialized():
        if tdist.get_world_size() != d.world or tdist.get_rank() != d.rank:
            raise UserError("a torch.distributed process group of another shape is already initialised")
        return False
    kw: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
    try:
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://", rank=d.rank,
                                 world_size=d.world, timeout=datetime.timedelta(seconds=timeout_s), **kw)
    except (RuntimeError, ValueError) as e:
        raise DistributedFailure(f"process {d.rank} could not join the distributed job ({_first_line(e)})") from None
    return True


def stop(clean: bool = True) -> None:
    """Leave the job (a failed peer must not turn the teardown into a second error).

    Why the barrier and the pause: gloo's worker thread drops its reference to a finished collective's tensors
    only after the caller's wait() has returned, and that drop needs the GIL. A process that reaches interpreter
    shutdown first aborts ("terminate called without an active exception": 5 of 113 two-process runs here, seen
    in CI). The barrier (its tensor is C++-only) makes every earlier collective finished, the pause hands the GIL
    to the worker. `clean` is False after an error: then a peer may be gone, and only the pause is kept."""
    if not (tdist.is_available() and tdist.is_initialized()):
        return
    if tdist.get_backend() == "gloo":
        if clean:
            with suppress(RuntimeError):
                tdist.barrier()
        time.sleep(0.05)
    with suppress(RuntimeError, ValueError):
        tdist.destroy_process_group()


def _first_line(e: BaseException) -> str:
    """The gist of a backend error: its first sentence, without the C++ source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip())
    text = text.splitlines()[0] if text else type(e).__name__
    return text.split(". ")[0][:200]


@contextmanager
def _collective(what: str) -> Iterator[None]:
    """A collective whose peer died (connection closed) or hung (timeout) becomes one clear error."""
    try:
        yield
    except RuntimeError as e:  # tdist.DistError and the gloo/NCCL errors are RuntimeErrors
        raise DistributedFailure(f"another process of the distributed job failed or stopped answering during "
                                 f"{what} ({_first_line(e)})") from None


# --- collectives used by the trainer ----------------------------------------------------------------
def broadcast_object(obj: Any, d: Dist, what: str = "start-up") -> Any:
    """Rank 0's `obj` on every process (pickled: configs, paths, a checkpoint to resume from)."""
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    with _collective(what):
        tdist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, d: Dist, what: str = "a checkpoint") -> list[Any]:
    """Every process's `obj`, in rank order, on every process."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world
    with _collective(what):
        tdist.all_gather_object(out, obj)
    return out


def broadcast_modules(modules: Iterable[nn.Module], d: Dist) -> None:
    """Parameters and buffers of rank 0 everywhere: identical starting weights even if initialisation
    differed between machines."""
    if not d.enabled:
        return
    with _collective("the weight broadcast"), torch.no_grad():
        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                tdist.broadcast(t.data, src=0)


def average_gradients(params: Iterable[nn.Parameter], d: Dist) -> None:
    """Mean of each gradient over the processes, in one flat all-reduce.

    Why not DistributedDataParallel: the GAN step runs several backward passes per update (D on real and
    fake, gradient penalty / R1 / path length through a double backward) and freezes D during the G step,
    which DDP's bucketed hooks handle only with `no_sync` and `find_unused_parameters` (and not at all
    with create_graph=True). Averaging the finished gradients once, right before `optimizer.step()`, is
    what StyleGAN2-ADA/StyleGAN3 do: correct whatever happened inside backward. The mean over W
    processes of per-process means over b images is the mean over the global batch of W*b images."""
    if not d.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    with _collective("the gradient all-reduce"):
        tdist.all_reduce(flat)
    flat.div_(d.world)
    with torch.no_grad():
        for g, chunk in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
            g.copy_(chunk.view(g.shape))


def broadcast_buffers(modules: Iterable[nn.Module], d: Dist) -> None:
    """Rank 0's buffers (BatchNorm running statistics, StyleGAN2's w_avg: per-process batch statistics)
    everywhere, so that every process continues from what the checkpoint, written by rank 0, holds. A
    broadcast rather than a mean, which would move identical buffers by rounding (3 x 0.1 / 3 != 0.1)."""
    if not d.enabled:
        return
    with _collective("the buffer broadcast"), torch.no_grad():
        for m in modules:
            for b in m.buffers():
                tdist.broadcast(b, src=0)


def all_gather_cat(t: torch.Tensor, d: Dist, what: str = "the batch all-gather") -> torch.Tensor:
    """The tensors of all processes concatenated along dim 0 (rank order): the global batch."""
    if not d.enabled:
        return t
    parts = [torch.empty_like(t, memory_format=torch.contiguous_format) for _ in range(d.world)]
    with _collective(what):
        tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def reduce_step(values: torch.Tensor, stop_code: int, d: Dist) -> tuple[torch.Tensor, int]:
    """Logged values averaged over the processes, and the largest stop code any process raised: one small
    all-gather, so that a NaN or a signal on one process stops every process at the same step."""
    if not d.enabled:
        return values, stop_code
    row = torch.cat([values.float(), torch.tensor([float(stop_code)], device=values.device)])
    rows = all_gather_cat(row[None], d, "the end of a step")
    return rows[:, :-1].mean(dim=0), int(rows[:, -1].max().item())


# --- per-process random streams -------------------------------------------------------------------
def rank_seed(seed: int, rank: int, what: str) -> int:
    """A seed for process `rank`'s own stream `what`, far from every other (seed, rank, what)."""
    digest = hashlib.sha256(f"ganforge:{seed}:{rank}:{what}".encode()).digest()
    return int.from_bytes(digest[:7], "big")


def rank_generator(seed: int, counter: int, rank: int, device: torch.device) -> torch.Generator:
    """The stream of the objective's parts on process `rank` for D update `counter`: a pure function of
    checkpointed counters, different on every process."""
    return seeded_generator(rank_seed(seed, rank, "parts"), counter, device)


def seed_process_rngs(seed: int, rank: int, salt: int = 0) -> None:
    """Seed torch / numpy / python global RNGs (dropout, StyleGAN2 noise and mixing) for process `rank`."""
    s = rank_seed(seed, rank, f"global:{salt}")
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)


# --- `ganforge train --nproc N` ---------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux /proc; none found elsewhere or once it has ended)."""
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except (OSError, ValueError):
        return []


def launch_local(nproc: int, argv: list[str]) -> int:
    """Run `ganforge <argv>` on `nproc` processes of this machine under torchrun and return its exit code.

    Re-executing under `python -m torch.distributed.run --standalone` (rather than spawning workers from
    this process) makes the shortcut exactly the documented torchrun path: one code path to test, and
    torchrun's agent ends the whole job when one worker dies and gives each worker its RANK/LOCAL_RANK.

    SIGINT/SIGTERM sent to this process (Ctrl-C reaches only this one: the agent runs in a session of its
    own) go straight to the workers, which save a checkpoint, stop at the same step and exit 0; the agent
    then ends normally, so the exit code is 0 exactly when every worker saved, as for one process (a
    signal to the agent makes it re-signal the workers and exit 1 with a traceback, whatever they did).
    The agent gets the signal where its workers cannot be found (no /proc, or still starting), and gets
    SIGHUP/SIGQUIT: a closed terminal or the quit key ends the job, as without the separate session."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "ganforge", *argv]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    got: list[int] = []
    to_agent = [getattr(signal, n) for n in ("SIGHUP", "SIGQUIT") if hasattr(signal, n)]

    def forward(signum: int, frame: Any) -> None:
        got.append(signum)
        workers = [] if signum in to_agent else _children(proc.pid)
        for pid in workers or [proc.pid]:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # ended meanwhile
                pass

    old = {}
    for s in (signal.SIGINT, signal.SIGTERM, *to_agent):
        try:
            old[s] = signal.signal(s, forward)
        except ValueError:  # not the main thread
            pass
    try:
        rc = proc.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if got and rc:  # a worker could not save and stop cleanly (or the agent itself was signalled)
        print(f"ganforge: the {nproc}-process job was stopped by {signal.Signals(got[0]).name}; continue it with "
              "`ganforge train --resume RUN_DIR`", file=sys.stderr)
        return 128 + got[0]
    return rc
