"""The GPU check: one command that runs every CUDA path of ganforge once and prints a table (check, result,
key numbers, seconds); exit code 1 when any check failed or was not reached.

    PYTHONPATH=src python3 benchmarks/gpu_check.py --out DIR [--deadline 480] [--fmnist DIR] [--quick]

Checks (each in its own subprocess with its own timeout, so a crash or a hang costs one line of the table):
- pytest: the tests marked `cuda` (`-m cuda`), with GANFORGE_TEST_DEVICE=cuda;
- train-<family> (mlp, dcgan, sngan, progan, stylegan2-ada): `--steps` steps in fp32, bf16 and fp16 (GradScaler):
  finite losses, the amp losses close to fp32's (step 1 and the mean of the last quarter), and fp32 resume
  (N/2 steps + resume to N) bitwise equal to N steps straight, under torch.use_deterministic_algorithms;
- compile-dcgan, compile-stylegan2: train.compile=true against eager (graph breaks and errors are reported);
- torchrun-nccl: `torchrun --nproc_per_node=1` running `ganforge train` and a one-process NCCL job through the
  distributed code path (process group, broadcasts, gradient all-reduce) with SyncBatchNorm;
- eval-parity: the same generated samples and real images embedded on CUDA and on CPU give the same FID (1e-4);
- onnx-parity: ONNX export (with its parity self-check) of CUDA-trained dcgan and stylegan2 checkpoints;
- then alone on the GPU (timings): throughput-dcgan64 (ganforge vs the pytorch/examples DCGAN step of
  benchmarks/train_throughput.py, 64x64, batch 128), throughput-stylegan2 (fp32 vs bf16 vs fp16 img/s) and
  fmnist-demo (the fashion_mnist_dcgan recipe for --demo-seconds of training, then `ganforge eval`'s FID).

Without CUDA every check is skipped unless `--quick`, which runs tiny versions of the checks on CPU (or on CUDA
when present: a dry run of the script in a minute or two). The parent imports no torch; it writes gpu_check.md
(the table), gpu_check.json (every number) and gpu_check.log (each check's output) into --out (default $OUT).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FMNIST_DEFAULT, FMNIST_SYSTEM = ".gpu-data/fashion-mnist", "/usr/share/datasets/fashion-mnist"
FMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FAMILIES = {
    "mlp": ("fashion_mnist_mlp", []),
    "dcgan": ("fashion_mnist_dcgan", []),
    "sngan": ("fashion_mnist_sngan", []),
    "progan": ("fashion_mnist32_progan", []),
    "stylegan2-ada": ("fashion_mnist32_stylegan2", ["augment.name=ada"]),
}
# amp vs fp32: the same weights and batch at step 1 (only the forward precision differs), then the trajectories
# part (a GAN is chaotic), so later only the mean loss of the last quarter of the steps is compared, loosely
STEP1_TOL = {"bf16": (0.05, 0.05), "fp16": (0.01, 0.01)}  # (abs, rel): |amp - fp32| <= abs + rel * |fp32|
MEAN_TOL, MEAN_STD = (0.3, 0.3), 2.0  # + 2 x the std of the fp32 run's last-quarter losses
FID_TOL = 1e-4
# the CPU figures in the README for the demo recipe (fashion_mnist_dcgan, batch 64, 2-core CPU, torch 2.13.0)
README_CPU = {
    "img_s": 1225,
    "img_s_source": "README 'GPU fast paths' table, plain (fp32, contiguous)",
    "fid_2000_steps": 15.56,
    "fid_source": "README Benchmarks: 2,000 steps fp32 seed 0, FID of 10k samples",
}


# ---------------------------------------------------------------------------------------------------------------
# results


@dataclass
class Result:
    name: str
    status: str = "not reached"  # ok | FAIL | skipped | not reached | not finished
    reason: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def cell(self) -> str:
        return f"{self.status} ({self.reason})" if self.reason and self.status != "ok" else self.status

    @property
    def failed(self) -> bool:
        return self.status in ("FAIL", "not reached", "not finished")


def fmt_numbers(numbers: dict[str, Any], limit: int = 400) -> str:
    def one(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if math.isfinite(v) else str(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(one(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {one(x)}" for k, x in v.items()) + "}"
        return str(v)

    text = "; ".join(f"{k}={one(v)}" for k, v in numbers.items() if not k.startswith("_"))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def table(results: list[Result]) -> str:
    rows = ["| check | result | key numbers | seconds |", "|---|---|---|---|"]
    for r in results:
        cell = r.cell().replace("|", "/").replace("\n", " ")
        rows.append(f"| {r.name} | {cell} | {fmt_numbers(r.numbers).replace('|', '/')} | {r.seconds:.0f} |")
    return "\n".join(rows)


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.failed for r in results) else 0


# ---------------------------------------------------------------------------------------------------------------
# the checks (run in a child process: `--child NAME`); each returns (status, reason, numbers)


def _ctx(a: argparse.Namespace) -> dict[str, Any]:
    return {"device": a.device, "quick": a.quick, "fmnist": a.fmnist_dir or None, "work": Path(a.work),
            "steps": a.steps, "demo_seconds": a.demo_seconds, "budget": a.budget}


def _data_over(c: dict[str, Any]) -> list[str]:
    return [f"data.data_dir={c['fmnist']}"] if c["fmnist"] else []


def _data(c: dict[str, Any], cfg: dict[str, Any], n: int = 2048) -> Any:
    """The config's Fashion-MNIST when --fmnist found it, else synthetic images of its shape (never a download)."""
    if c["fmnist"]:
        return None  # the trainer loads data.source from data.data_dir
    import numpy as np

    d = cfg["data"]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, d["resolution"], d["resolution"], d["channels"]), dtype=np.uint8)
    import types

    return types.SimpleNamespace(images=images, labels=None, classes=None)


def _train(c: dict[str, Any], preset: str | None, over: list[str], **kw: Any) -> tuple[Any, dict[str, Any]]:
    from ganforge.config import load_config
    from ganforge.training.launch import train

    data = None
    if preset is not None:
        data = _data(c, load_config(preset, over))
    elif kw.get("resume") is not None:
        from ganforge.runs.rundir import RunDir

        data = _data(c, RunDir.open(Path(kw["resume"])).read_config())
    return train(preset, over, data=data, quiet=True, **kw)


def _quiet() -> list[str]:
    return ["train.tensorboard=false", "train.sample_every=0", "train.eval_every=0"]


def _losses(run_dir: Path) -> dict[str, list[float]]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {k: [float(r[k]) for r in recs] for k in ("loss_d", "loss_g")}


def _last_quarter(v: list[float]) -> float:
    tail = v[-max(1, len(v) // 4) :]
    return sum(tail) / len(tail)


def check_env(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    import platform

    import torch

    n: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                         "cuda_available": torch.cuda.is_available(), "cuda_runtime": torch.version.cuda}
    extras: dict[str, Callable[[], Any]] = {"triton": lambda: __import__("triton").__version__}
    if torch.cuda.is_available():
        extras.update(
            gpu=lambda: torch.cuda.get_device_name(0), gpus=torch.cuda.device_count,
            gpu_mem_gib=lambda: round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            capability=lambda: ".".join(map(str, torch.cuda.get_device_capability(0))),
            bf16=torch.cuda.is_bf16_supported, cudnn=torch.backends.cudnn.version,
            nccl=lambda: str(torch.cuda.nccl.version()),
        )
    for key, get in extras.items():  # facts only: none of them may fail the check (the parent reads cuda_available)
        try:
            n[key] = get()
        except Exception as e:  # noqa: BLE001
            n[key] = f"unknown ({type(e).__name__})"
    n["fashion_mnist"] = c["fmnist"] or "not found (synthetic data; the demo and FID checks are skipped)"
    pinned = "2.13.0"
    note = "" if torch.__version__.startswith(pinned) else f"torch {torch.__version__}, not the pinned {pinned}"
    return "ok", note, n


def check_pytest(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    import importlib.util

    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "pytest.mark.cuda" in p.read_text())
    expr = "cuda and not slow" if c["quick"] else "cuda"
    cmd = [sys.executable, "-m", "pytest", "-m", expr, "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-rfEs",
           *files]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd.append("--timeout=150")
    env = dict(os.environ, GANFORGE_TEST_DEVICE=c["device"], PYTHONPATH=str(ROOT / "src"))
    print("$", " ".join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(10, c["budget"] - 5))
    print(p.stdout[-20000:], p.stderr[-5000:], sep="\n", flush=True)
    summary = next((ln.strip("= ") for ln in reversed(p.stdout.splitlines())
                    if re.search(r"\d+ (passed|failed|skipped|error|deselected)", ln)), "")
    failed = [ln.split(" - ")[0] for ln in p.stdout.splitlines() if ln.startswith(("FAILED", "ERROR"))]
    n = {"expr": expr, "files": len(files), "summary": summary}
    if failed:
        n["failed"] = failed[:8]
    if p.returncode == 0:
        return "ok", "", n
    return "FAIL", f"pytest exit code {p.returncode}", n


def check_family(c: dict[str, Any], family: str) -> tuple[str, str, dict[str, Any]]:
    import statistics
    import warnings

    import torch
    from safetensors.torch import load_file

    preset, extra = FAMILIES[family]
    cuda = c["device"] == "cuda"
    torch.use_deterministic_algorithms(True, warn_only=True)  # CUBLAS_WORKSPACE_CONFIG is set by the parent
    torch.backends.cudnn.benchmark = False
    n_steps = c["steps"]
    half = n_steps // 2
    small = ["model.nf=8", "model.nf_max=16", "model.z_dim=16", "model.w_dim=16", "train.batch_size=8",
             "model.hidden=32", "model.d_nf=8"] if c["quick"] else []
    if c["quick"] and family == "progan":
        small += ["grow.batch_sizes=[8,8,8,8]", "grow.fade_images=16", "grow.stable_images=16"]
    common = [f"device={c['device']}", *extra, *small, *_quiet(), *_data_over(c), "train.log_every=1",
              f"train.checkpoint_every={half}", "train.keep_checkpoints=5"]
    w = c["work"] / family
    n: dict[str, Any] = {"steps": n_steps}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(c, preset, common + [f"train.steps={n_steps}"], run_dir=w / "fp32")
        _train(c, preset, common + [f"train.steps={half}"], run_dir=w / "resumed")
        _train(c, None, [f"train.steps={n_steps}"], resume=w / "resumed")
    nondet = sorted({str(x.message).split(" does not have")[0][:80] for x in caught
                     if "deterministic" in str(x.message)})
    ck = f"checkpoints/step-{n_steps:08d}.safetensors"
    a, b = load_file(str(w / "fp32" / ck)), load_file(str(w / "resumed" / ck))
    differ = [k for k in a if not torch.equal(a[k], b.get(k, torch.empty(0)))]
    bad: list[str] = []
    if not differ:
        n["resume"] = "bitwise"
    else:
        diff = max(
            (a[k].float() - b[k].float()).abs().max().item() for k in differ if k in b and a[k].shape == b[k].shape
        )
        n["resume"] = f"not bitwise: {len(differ)}/{len(a)} tensors, max |diff| {diff:.3g}"
        if nondet:
            n["resume_reason"] = "ops without a deterministic CUDA implementation: " + ", ".join(nondet)
        else:
            bad.append("resume not bitwise and no nondeterministic op was reported")
    ref = _losses(w / "fp32")
    n["fp32_last_quarter"] = {k: round(_last_quarter(v), 4) for k, v in ref.items()}
    modes = ["bf16", "fp16"] if cuda else ["bf16"]
    if not cuda:
        n["fp16"] = "skipped (needs CUDA)"
    for mode in modes:
        _train(c, preset, common + [f"train.steps={n_steps}", f"train.amp={mode}"], run_dir=w / mode)
        got = _losses(w / mode)
        d1 = {k: abs(got[k][0] - ref[k][0]) for k in ref}
        dm = {k: abs(_last_quarter(got[k]) - _last_quarter(ref[k])) for k in ref}
        n[f"{mode}_step1_diff"] = {k: round(v, 5) for k, v in d1.items()}
        n[f"{mode}_last_quarter"] = {k: round(_last_quarter(v), 4) for k, v in got.items()}
        ta, tr = STEP1_TOL[mode]
        for k in ref:
            if not d1[k] <= ta + tr * abs(ref[k][0]):
                bad.append(f"{mode} {k} at step 1 differs from fp32 by {d1[k]:.3g} (> {ta} + {tr}*|fp32|)")
            tail = ref[k][-max(1, len(ref[k]) // 4) :]
            spread = statistics.pstdev(tail) if len(tail) > 1 else 0.0  # the fp32 run's own step-to-step noise
            if not dm[k] <= MEAN_TOL[0] + MEAN_TOL[1] * abs(_last_quarter(ref[k])) + MEAN_STD * spread:
                bad.append(f"{mode} mean {k} of the last quarter differs from fp32 by {dm[k]:.3g} "
                           f"(fp32 tail std {spread:.3g})")
        if mode == "fp16":
            meta = json.loads((w / mode / ck).with_suffix(".json").read_text())
            n["fp16_scale"] = {k: v.get("scale") for k, v in (meta.get("amp") or {}).items() if isinstance(v, dict)}
    return ("FAIL", "; ".join(bad), n) if bad else ("ok", "", n)


def check_compile(c: dict[str, Any], family: str) -> tuple[str, str, dict[str, Any]]:
    import logging

    import torch
    import torch._dynamo
    from torch._dynamo.utils import counters

    from ganforge.config import load_config
    from ganforge.training.trainer import Trainer

    logging.getLogger("torch._dynamo").setLevel(logging.ERROR)
    # full float32 on both sides, so that step-1 losses compare at float rounding rather than TF32's
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    preset = FAMILIES[family][0]
    over = [f"device={c['device']}", *_quiet(), *_data_over(c)]
    if c["quick"]:
        over += ["model.nf=8", "model.nf_max=16", "train.batch_size=8"]
    steps = 6 if c["quick"] else 40
    sync = torch.cuda.synchronize if c["device"] == "cuda" else (lambda: None)
    out: dict[str, Any] = {}
    losses: dict[str, list[float]] = {}
    for name, flag in (("eager", "false"), ("compiled", "true")):
        cfg = load_config(preset, [*over, f"train.compile={flag}"])
        t = Trainer(cfg, data=_data(c, cfg), quiet=True)
        sync()
        t0 = time.perf_counter()
        first = t.train_step()
        sync()
        out[f"{name}_first_step_s"] = round(time.perf_counter() - t0, 2)
        vals = [float(first["loss_d"]), float(first["loss_g"])]
        t0, seen = time.perf_counter(), t.images_seen
        for _ in range(steps):
            last = t.train_step()
        sync()
        out[f"{name}_img_s"] = round((t.images_seen - seen) / (time.perf_counter() - t0), 1)
        vals += [float(last["loss_d"]), float(last["loss_g"])]
        losses[name] = vals
        del t
    breaks = counters.get("graph_break", {})
    out["graph_breaks"] = sum(breaks.values())
    if breaks:
        out["graph_break_reasons"] = [str(k)[:120] for k, _ in sorted(breaks.items(), key=lambda kv: -kv[1])[:3]]
    out["unique_graphs"] = int(counters.get("stats", {}).get("unique_graphs", 0))
    out["compiled_vs_eager"] = round(out["compiled_img_s"] / out["eager_img_s"], 2)
    out["step1_loss_diff"] = round(
        max(abs(x - y) for x, y in zip(losses["eager"][:2], losses["compiled"][:2], strict=True)), 6
    )
    finite = all(math.isfinite(v) for v in losses["compiled"])
    if not finite:
        return "FAIL", "compiled losses are not finite", out
    if out["step1_loss_diff"] > 1e-3:
        return "FAIL", f"compiled step-1 loss differs from eager by {out['step1_loss_diff']} (> 1e-3)", out
    return "ok", "", out


def check_torchrun(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Runs under torchrun --nproc_per_node=1 (the parent starts it so)."""
    import dataclasses

    import torch
    import torch.distributed as tdist

    from ganforge.config import load_config
    from ganforge.training import distributed
    from ganforge.training.loop import Loop
    from ganforge.training.trainer import Trainer

    cuda = c["device"] == "cuda"
    n: dict[str, Any] = {"WORLD_SIZE": os.environ.get("WORLD_SIZE"), "LOCAL_RANK": os.environ.get("LOCAL_RANK")}
    steps = 4 if c["quick"] else 50
    over = [f"device={c['device']}", *_quiet(), *_data_over(c), f"train.sync_bn={str(cuda).lower()}",
            "train.checkpoint_every=0", "train.log_every=5"]
    if c["quick"]:
        over += ["model.nf=8", "train.batch_size=8"]
    # (1) `ganforge train` under torchrun with one process: the single-process path (sync_bn has nothing to sync)
    _, summary = _train(c, "fashion_mnist_dcgan", [*over, f"train.steps={steps}"], run_dir=c["work"] / "torchrun")
    n["ganforge_train_step"] = summary["step"]

    # (2) the distributed code path itself on one process: NCCL process group, weight broadcast, gradient
    # all-reduce, the per-step all-gather, SyncBatchNorm-converted models
    @dataclasses.dataclass(frozen=True)
    class OneProcessJob(distributed.Dist):
        @property
        def enabled(self) -> bool:
            return True

    d = OneProcessJob(0, 1, 0)
    cfg = load_config("fashion_mnist_dcgan", [*over, f"train.steps={steps}"])
    dev = torch.device(c["device"])
    created = distributed.start(d, dev, 120)
    try:
        n["backend"] = tdist.get_backend()
        t = Trainer(cfg, data=_data(c, cfg), quiet=True, dist=d)
        loop = Loop(t)
        n["sync_bn_layers"] = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in (*t.G.modules(), *t.D.modules()))
        vals: dict[str, float] = {}
        for _ in range(steps):
            vals = loop._agree(t.train_step())
        n["dist_steps"] = t.step
        n["dist_losses"] = {k: round(v, 4) for k, v in vals.items()}
        if cuda:
            torch.cuda.synchronize()
    finally:
        if created:
            distributed.stop()
    bad = []
    if not all(math.isfinite(v) for v in vals.values()):
        bad.append("non-finite losses")
    if cuda and n["backend"] != "nccl":
        bad.append(f"backend {n['backend']}, expected nccl")
    if cuda and not n["sync_bn_layers"]:
        bad.append("no SyncBatchNorm layer after train.sync_bn=true")
    note = ("one GPU: SyncBatchNorm at world size 1 uses local batch statistics (its all-gather needs >= 2 GPUs); "
            "NCCL collectives ran with one rank") if cuda else "CPU: gloo, sync_bn off (CUDA only)"
    n["note"] = note
    return ("FAIL", "; ".join(bad), n) if bad else ("ok", "", n)


def _small_run(c: dict[str, Any], preset: str, name: str, steps: int) -> Path:
    over = [
        f"device={c['device']}",
        *_quiet(),
        *_data_over(c),
        f"train.steps={steps}",
        f"train.checkpoint_every={steps}",
    ]
    if c["quick"]:
        over += ["model.nf=8", "model.nf_max=16", "train.batch_size=8"]
    run, _ = _train(c, preset, over, run_dir=c["work"] / name)
    return run.path


def check_eval_parity(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    import numpy as np
    import torch

    from ganforge.config import load_config
    from ganforge.data.from_config import load_data
    from ganforge.generate import load_generator, sample
    from ganforge.metrics.evaluate import build_network, compute_metrics, dataset_batches, subset_indices
    from ganforge.metrics.features import extract

    n_img = 1000 if c["quick"] else 10000
    run = _small_run(c, "fashion_mnist_dcgan", "eval-run", 20 if c["quick"] else 600)
    G, cfg = load_generator(run, device="cpu")  # the same samples for both devices: drawn once, on CPU
    fake = torch.cat([sample(G, 500, seed=i) for i in range((n_img + 499) // 500)])[:n_img]
    if c["fmnist"]:
        real = load_data(load_config("fashion_mnist_dcgan", _data_over(c))).images
        what = "Fashion-MNIST train"
    else:
        real = _data(c, cfg, n_img).images
        what = "synthetic"
    idx = subset_indices(len(real), n_img, 0)
    net = build_network("fashion-mnist-cnn")
    devices = ["cpu", c["device"]] if c["device"] != "cpu" else ["cpu", "cpu"]
    fids, feats = [], []
    for dev in devices:
        fr = extract(net, dataset_batches(real, idx), device=dev, progress=False)
        ff = extract(net, fake.split(500), device=dev, progress=False)
        fids.append(float(compute_metrics(fr, ff, ["fid"])["fid"]))
        feats.append(ff["features"])
    n = {"n": n_img, "real": what, "fid_cpu": fids[0], f"fid_{devices[1]}": fids[1], "fid_diff": abs(fids[0] - fids[1]),
         "max_feature_diff": float(np.abs(feats[0] - feats[1]).max()),
         "tf32_flags_outside_metrics": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                        "cudnn": torch.backends.cudnn.allow_tf32}}
    if not abs(fids[0] - fids[1]) <= FID_TOL:
        return "FAIL", f"FID on {devices[1]} differs from CPU by {abs(fids[0] - fids[1]):.3g} (> {FID_TOL})", n
    return "ok", "", n


def check_onnx(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "skipped", "onnx/onnxruntime not installed", {}
    from ganforge.export import TOLERANCE, export

    n: dict[str, Any] = {"tolerance": TOLERANCE}
    bad = []
    for preset, name in (("fashion_mnist_dcgan", "dcgan"), ("fashion_mnist32_stylegan2", "stylegan2")):
        run = _small_run(c, preset, f"onnx-{name}", 10 if c["quick"] else 100)
        res = export(run, "onnx", c["work"] / f"{name}.onnx")
        err = res["metadata"]["parity"]["max_abs_err"]
        n[f"{name}_max_abs_err"] = err
        if not err <= TOLERANCE:
            bad.append(f"{name} ONNX differs by {err:.3g}")
    n["keras/tflite"] = "not checked here (TensorFlow exports run on the CPU side; tests/test_export.py covers them)"
    return ("FAIL", "; ".join(bad), n) if bad else ("ok", "", n)


def _median_rounds(steps: dict[str, Callable[[], Any]], n: int, rounds: int, batch: int, sync: Callable) -> dict:
    import statistics

    speeds: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(n):
                step()
            sync()
            speeds[name].append(n * batch / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in speeds.items()}


def check_throughput_dcgan(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from train_throughput import Reference, make_ganforge

    cuda = c["device"] == "cuda"
    res, nf, bs = (64, 64, 128) if not c["quick"] else (64, 16, 8)
    torch.backends.cudnn.benchmark = True  # as pytorch/examples/dcgan/main.py sets it (process-wide: both sides)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    start = time.perf_counter()
    steps = {"reference": Reference(res, nf, nc=3, bs=bs, device=c["device"]).step}
    variants = {"ganforge fp32": {}, "ganforge bf16": {"amp": "bf16"}}
    if cuda:
        variants["ganforge bf16+compile"] = {"amp": "bf16", "compile": "true"}
    n: dict[str, Any] = {"res": res, "nf": nf, "batch": bs, "nc": 3, "cudnn.benchmark": True}
    for name, kw in variants.items():
        if "compile" in kw and time.perf_counter() - start > c["budget"] * 0.4:
            n[name] = "skipped (time)"
            continue
        try:
            t = make_ganforge(res, nf, bs, nc=3, device=c["device"], **kw)
            for _ in range(3):  # warm-up (compiles)
                t.train_step()
            steps[name] = t.train_step
        except Exception as e:  # a compile failure is a result, not the end of the check
            n[name] = f"FAIL: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
    for step in steps.values():
        step()
    med = _median_rounds(steps, 3 if c["quick"] else 20, 2 if c["quick"] else 3, bs, sync)
    ref = med.pop("reference")
    n["reference_img_s"] = round(ref, 1)
    for name, v in med.items():
        n[f"{name}_img_s"] = round(v, 1)
        n[f"{name}/ref"] = round(v / ref, 2)
    best = max(med.values()) / ref
    n["best/ref"] = round(best, 2)
    n["goal_1.5x"] = "met" if best >= 1.5 else "NOT met"
    failed = [k for k, v in n.items() if isinstance(v, str) and v.startswith("FAIL")]
    return ("FAIL", "; ".join(failed), n) if failed else ("ok", "", n)


def check_throughput_stylegan2(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    import torch

    from ganforge.config import load_config
    from ganforge.training.trainer import Trainer

    cuda = c["device"] == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    over = [f"device={c['device']}", *_quiet()]
    if c["quick"]:
        over += ["model.nf=8", "model.nf_max=16", "train.batch_size=8"]
    steps, batch = {}, 0
    for mode in ["off", "bf16"] + (["fp16"] if cuda else []):
        cfg = load_config("fashion_mnist32_stylegan2", [*over, f"train.amp={mode}"])
        batch = cfg["train"]["batch_size"]
        t = Trainer(cfg, data=_data({**c, "fmnist": None}, cfg), quiet=True)
        for _ in range(3):
            t.train_step()
        steps["fp32" if mode == "off" else mode] = t.train_step
    med = _median_rounds(steps, 2 if c["quick"] else 15, 2 if c["quick"] else 3, batch, sync)
    n: dict[str, Any] = {"batch": batch}
    for k, v in med.items():
        n[f"{k}_img_s"] = round(v, 1)
    for k in med:
        if k != "fp32":
            n[f"{k}/fp32"] = round(med[k] / med["fp32"], 2)
    return "ok", "", n


def check_demo(c: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    if not c["fmnist"]:
        return "skipped", "no Fashion-MNIST (--fmnist)", {}
    import statistics

    from ganforge.evaluation import evaluate_run

    secs = c["demo_seconds"]
    over = [f"device={c['device']}", f"train.max_seconds={secs}", "train.steps=100000000", "train.eval_every=0",
            "train.sample_every=0", "train.checkpoint_every=0", "train.tensorboard=false",
            f"train.log_every={5 if c['quick'] else 100}", *_data_over(c)]
    run, summary = _train(c, "fashion_mnist_dcgan", over, run_dir=c["work"] / "demo")
    from ganforge.runs import checkpoint as ckpt

    last, _ = ckpt.latest_checkpoint(run.checkpoints)
    meta = last.meta
    n: dict[str, Any] = {"train_s": round(float(meta["train_seconds"]), 1), "steps": summary["step"],
                         "stopped_by": summary.get("stopped_by"), "images_seen": meta["images_seen"],
                         "img_s": round(meta["images_seen"] / max(float(meta["train_seconds"]), 1e-9), 1)}
    metrics = run.path / "metrics.jsonl"
    recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()] if metrics.exists() else []
    if len(recs) > 1:  # the first interval holds the warm-up
        n["img_s_median_logged"] = round(statistics.median(r["img_per_s"] for r in recs[1:]), 1)
    n["img_s_vs_readme_cpu"] = round(n["img_s"] / README_CPU["img_s"], 1)
    t0 = time.perf_counter()
    # `ganforge eval RUN`: 10k samples against the whole training set (quick: 1k against 2k)
    rec = evaluate_run(run.path, metrics="fid,kid,is", n=1000 if c["quick"] else 10000, device=c["device"],
                       progress=False, n_ref=2000 if c["quick"] else None)
    n.update(fid=round(rec["fid"], 3), kid=round(rec["kid"], 5), inception_score=round(rec["is"], 3),
             eval_s=round(time.perf_counter() - t0, 1), eval_n=rec["n"], readme_cpu_fid_2000_steps=README_CPU["fid_2000_steps"])
    if not math.isfinite(rec["fid"]):
        return "FAIL", "FID not finite", n
    return "ok", "", n


@dataclass
class Check:
    name: str
    run: Callable[[dict[str, Any]], tuple[str, str, dict[str, Any]]]
    timeout: float  # seconds on CUDA (quick mode: its own, below)
    expected: float  # seconds it usually takes, for planning the exclusive ones
    exclusive: bool = False  # timings: alone on the machine
    deterministic: bool = False  # CUBLAS_WORKSPACE_CONFIG for torch.use_deterministic_algorithms
    torchrun: bool = False
    quick_timeout: float = 150


def checks(demo_seconds: float) -> list[Check]:
    out = [Check("pytest-cuda", check_pytest, 200, 60, deterministic=True, quick_timeout=240)]
    # (timeout, expected seconds) per family: the longest start first
    cost = {"mlp": (150, 30), "dcgan": (150, 40), "sngan": (170, 60), "progan": (170, 60), "stylegan2-ada": (220, 100)}
    out += [Check(f"train-{f}", lambda c, f=f: check_family(c, f), *cost[f], deterministic=True) for f in FAMILIES]
    out += [
        Check("compile-dcgan", lambda c: check_compile(c, "dcgan"), 180, 60),
        Check("compile-stylegan2", lambda c: check_compile(c, "stylegan2-ada"), 240, 120),
        Check("torchrun-nccl", check_torchrun, 120, 30, torchrun=True),
        Check("eval-parity", check_eval_parity, 120, 30),
        Check("onnx-parity", check_onnx, 150, 40),
        Check("throughput-dcgan64", check_throughput_dcgan, 150, 90, exclusive=True),
        Check("throughput-stylegan2", check_throughput_stylegan2, 90, 40, exclusive=True),
        Check(
            "fmnist-demo",
            check_demo,
            demo_seconds + 100,
            demo_seconds + 40,
            exclusive=True,
            quick_timeout=demo_seconds + 100,
        ),
    ]
    return out


def run_child(a: argparse.Namespace) -> int:
    c = _ctx(a)
    c["work"].mkdir(parents=True, exist_ok=True)
    by_name = {ch.name: ch for ch in [Check("env", check_env, 60, 5), *checks(a.demo_seconds)]}
    if os.environ.get("RANK", "0") != "0":
        return 0
    t0 = time.perf_counter()
    try:
        status, reason, numbers = by_name[a.child].run(c)
    except BaseException as e:  # noqa: BLE001 -- every failure becomes a line of the table
        traceback.print_exc()
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        status, reason, numbers = "FAIL", f"{type(e).__name__}: {first}", {}
    res = {"status": status, "reason": reason, "numbers": numbers, "seconds": time.perf_counter() - t0}
    Path(a.child_out).write_text(json.dumps(res, default=str))
    print(f"[{a.child}] {status} {reason}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------------------------
# the parent: schedule the children, enforce the deadline, write the outputs


def find_fmnist(arg: str | None) -> str | None:
    from_arg = [arg] if arg else [FMNIST_DEFAULT]
    for d in [*from_arg, FMNIST_SYSTEM]:
        p = (ROOT / d) if not os.path.isabs(d) else Path(d)
        if all(any((p / (f + s)).is_file() for s in ("", ".gz")) for f in FMNIST_FILES):
            return str(p.resolve())
    return None


@dataclass
class Running:
    check: Check
    proc: subprocess.Popen
    started: float
    timeout: float
    cut: bool  # the timeout is the global deadline's, not the check's own
    out: Path
    log: Path


class Parent:
    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.t_start = time.monotonic()
        self.end = self.t_start + a.deadline
        self.out = Path(a.out or os.environ.get("OUT") or "gpu_check_out")
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
        self.logf = open(self.out / "gpu_check.log", "w")  # noqa: SIM115
        self.fmnist = find_fmnist(a.fmnist)
        self.results: dict[str, Result] = {}
        self.device = "cpu"

    def log(self, text: str) -> None:
        self.logf.write(text if text.endswith("\n") else text + "\n")
        self.logf.flush()

    def left(self) -> float:
        return self.end - time.monotonic()

    def env(self, check: Check) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["PYTHONUNBUFFERED"] = "1"
        env["GANFORGE_CACHE"] = str(self.work / "cache")  # shared by the children: data decoded once
        env.setdefault("GANFORGE_FASHION_MNIST_MIRROR", "http://127.0.0.1:9/")  # no network: fail fast, never hang
        if check.deterministic:
            env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
        if not check.exclusive and self.a.jobs > 1:
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // self.a.jobs)))
        return env

    def start(self, check: Check, timeout: float, cut: bool) -> Running:
        out = self.work / f"{check.name}.json"
        log = self.work / f"{check.name}.log"
        args = ["--child", check.name, "--child-out", str(out), "--device", self.device, "--work",
                str(self.work / check.name), "--steps", str(self.a.steps), "--demo-seconds", str(self.a.demo_seconds),
                "--budget", str(int(timeout)), "--fmnist-dir", self.fmnist or ""]
        if self.a.quick:
            args.append("--quick")
        script = str(Path(__file__).resolve())
        if check.torchrun:
            # --standalone: a local rendezvous on a free port
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", script, *args]
        else:
            cmd = [sys.executable, script, *args]
        fh = open(log, "w")  # noqa: SIM115
        proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env(check), stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
        fh.close()
        print(f"  started {check.name} (timeout {timeout:.0f} s)", flush=True)
        return Running(check, proc, time.monotonic(), timeout, cut, out, log)

    def finish(self, r: Running, killed: bool) -> Result:
        res = Result(r.check.name, seconds=time.monotonic() - r.started)
        text = r.log.read_text(errors="replace") if r.log.exists() else ""
        self.log(f"\n===== {r.check.name} ({res.seconds:.0f} s) =====\n{text[-60000:]}")
        if killed:
            res.status = "not finished" if r.cut else "FAIL"
            res.reason = (f"stopped at the global deadline after {res.seconds:.0f} s" if r.cut
                          else f"timeout after {res.seconds:.0f} s")
        elif r.out.exists():
            d = json.loads(r.out.read_text())
            res.status, res.reason, res.numbers = d["status"], d["reason"], d["numbers"]
        else:
            tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["no output"]
            res.status, res.reason = "FAIL", f"the check process ended with code {r.proc.returncode}: {tail[0][:250]}"
        print(f"  {res.name}: {res.cell()} [{res.seconds:.0f} s]", flush=True)
        return res

    def kill(self, r: Running) -> None:
        try:
            os.killpg(r.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        r.proc.wait()

    def schedule(self, todo: list[Check]) -> None:
        pending = list(todo)
        running: list[Running] = []
        reserve = sum(c.expected for c in todo if c.exclusive) if not self.a.quick else 0
        while pending or running:
            for r in list(running):
                over = time.monotonic() - r.started > r.timeout
                if r.proc.poll() is not None or over:
                    if over and r.proc.poll() is None:
                        self.kill(r)
                    running.remove(r)
                    self.results[r.check.name] = self.finish(r, over)
            if pending:
                nxt = pending[0]
                free = len(running) < (1 if nxt.exclusive else self.a.jobs)
                if free and not (nxt.exclusive and running):
                    own = nxt.quick_timeout if self.a.quick else nxt.timeout
                    room = self.left() - 5 - (0 if nxt.exclusive else reserve)
                    if nxt.exclusive:
                        reserve -= nxt.expected
                    pending.pop(0)
                    if room < min(20, own):
                        self.results[nxt.name] = Result(nxt.name, "not reached", f"{self.left():.0f} s left")
                        print(f"  {nxt.name}: not reached", flush=True)
                        continue
                    running.append(self.start(nxt, min(own, room), own > room))
                    continue
            time.sleep(0.2)

    def run(self) -> int:
        a = self.a
        print(f"gpu_check: deadline {a.deadline:.0f} s, out {self.out}, work {self.work}", flush=True)
        env_check = Check("env", check_env, 90, 5)
        self.device = "cpu"
        self.schedule([env_check])
        env = self.results["env"].numbers
        cuda = bool(env.get("cuda_available"))
        self.device = "cuda" if cuda else "cpu"
        todo = checks(a.demo_seconds)
        if a.only is not None:
            keep = {x.strip() for x in a.only.split(",") if x.strip()}
            for c in todo:
                if not any(c.name.startswith(k) for k in keep):
                    self.results[c.name] = Result(c.name, "skipped", "not selected (--only)")
            todo = [c for c in todo if c.name not in self.results]
        if self.results["env"].status != "ok":
            why = f"the env check failed ({self.results['env'].reason}): torch is not usable here"
            for c in todo:
                self.results[c.name] = Result(c.name, "not reached", why)
            todo = []
        elif not cuda and not a.quick:
            for c in todo:
                self.results[c.name] = Result(
                    c.name, "skipped", "no CUDA GPU visible (use --quick for a CPU smoke run)"
                )
            todo = []
        elif not cuda:  # --quick on CPU
            for c in todo:
                if c.name.startswith("compile-"):
                    self.results[c.name] = Result(c.name, "skipped", "CPU --quick: inductor compiling takes minutes")
            todo = [c for c in todo if c.name not in self.results]
        # the longest parallel checks first (they set the pace), the timings last and alone
        todo.sort(key=lambda c: (c.exclusive, -c.expected if not c.exclusive else 0))
        try:
            self.schedule(todo)
        finally:
            results = [self.results.get(n, Result(n)) for n in ["env", *[c.name for c in checks(a.demo_seconds)]]]
            self.write(results, env)
            self.logf.close()
            if not a.keep_work:
                shutil.rmtree(self.work, ignore_errors=True)
        return exit_code(results)

    def write(self, results: list[Result], env: dict[str, Any]) -> None:
        a = self.a
        mode = "quick (smoke) mode" if a.quick else "full mode"
        head = (f"ganforge GPU check, {mode}, device {self.device}: torch {env.get('torch')}, "
                f"{env.get('gpu', 'no GPU')}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
                f"{time.monotonic() - self.t_start:.0f} s of {a.deadline:.0f} s")
        tol = (f"Tolerances: amp step-1 loss |amp - fp32| <= a + r*|fp32| with (a, r) bf16 {STEP1_TOL['bf16']}, "
               f"fp16 {STEP1_TOL['fp16']}; mean loss of the last quarter of the steps {MEAN_TOL} + {MEAN_STD} x the fp32 "
               f"run's std over that quarter; FID CUDA vs CPU "
               f"{FID_TOL}.")
        md = f"{head}\n\n{table(results)}\n\n{tol}\n"
        print("\n" + md, flush=True)
        (self.out / "gpu_check.md").write_text(md)
        doc = {"mode": mode, "device": self.device, "deadline_s": a.deadline, "env": env, "readme_cpu": README_CPU,
               "tolerances": {"step1": STEP1_TOL, "last_quarter_mean": MEAN_TOL, "last_quarter_std_factor": MEAN_STD,
                              "fid": FID_TOL},
               "results": [r.__dict__ for r in results], "exit_code": exit_code(results)}
        (self.out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="folder for gpu_check.md/.json/.log (default $OUT, else ./gpu_check_out)")
    ap.add_argument("--deadline", type=float, default=480, help="seconds for the whole command (default 480)")
    ap.add_argument("--fmnist", help=f"folder with the 4 Fashion-MNIST IDX files (default {FMNIST_DEFAULT}, "
                    f"then {FMNIST_SYSTEM})")
    ap.add_argument("--quick", action="store_true", help="tiny versions of the checks (CPU smoke run / dry run)")
    ap.add_argument("--steps", type=int, help="training steps per family and precision (default 200; quick 6)")
    ap.add_argument("--demo-seconds", type=float, help="training seconds of the demo recipe (default 90; quick 5)")
    ap.add_argument("--jobs", type=int, help="checks at once before the timings (default 6; --quick 1)")
    ap.add_argument("--only", help="comma list of check names (or prefixes) to run")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary run folders")
    # the child side
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=600, help=argparse.SUPPRESS)
    ap.add_argument("--fmnist-dir", default="", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.steps = a.steps or (6 if a.quick else 200)
    a.demo_seconds = a.demo_seconds if a.demo_seconds is not None else (5 if a.quick else 90)
    if a.child:
        return run_child(a)
    a.jobs = a.jobs or (1 if a.quick else 6)
    return Parent(a).run()


if __name__ == "__main__":
    sys.exit(main())
