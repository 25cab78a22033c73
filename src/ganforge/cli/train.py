"""`ganforge train` and `ganforge demo`: thin wrappers over ganforge.training.launch.

`ganforge train --nproc N ...` is `torchrun --standalone --nproc_per_node=N -m ganforge train ...`:
the config is checked here first, then torchrun starts the N processes (see training/distributed.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from ganforge.cli.common import EXIT_DISK_FULL, Command, add_device, device_name, report_run
from ganforge.errors import UserError


def split_train_args(args: list[str]) -> tuple[str | None, list[str]]:
    config, overrides = None, []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif config is None:
            config = a
        else:
            raise UserError(f"unexpected argument {a!r}: give one config, then key=value overrides")
    return config, overrides


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="CONFIG|key=value", help="config file or preset, then overrides")
    p.add_argument("--run-dir", help="where the run is written (default runs/<name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where its last checkpoint left it")
    p.add_argument("--init-from", metavar="CKPT", help="fine-tune: start from the weights of a checkpoint or run")
    add_device(p, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train on N processes of this machine (one per GPU, or CPU processes): a shortcut for "
                        "torchrun --standalone --nproc_per_node=N; train.batch_size is the global batch")


def _forwarded_args(a: argparse.Namespace) -> list[str]:
    """The command line of one process of `--nproc`: the same request, without --nproc."""
    out = ["train", *a.args]
    for flag, value in (("--run-dir", a.run_dir), ("--resume", a.resume), ("--init-from", a.init_from),
                        ("--device", a.device)):
        if value is not None:
            out += [flag, str(value)]
    return out + (["--quiet"] if a.quiet else []) + (["--debug"] if getattr(a, "debug", False) else [])


def _train(a: argparse.Namespace) -> int:
    from ganforge.training import distributed
    from ganforge.training.launch import check_launch, train

    config, overrides = split_train_args(a.args)
    if config is None and a.resume is None:
        raise UserError("give a config (YAML path or preset, see `ganforge presets`) or --resume RUN_DIR")
    if a.nproc is not None and a.nproc != 1:
        if a.nproc < 1:
            raise UserError(f"--nproc must be a positive number of processes; got {a.nproc}")
        if os.environ.get("WORLD_SIZE"):
            raise UserError("--nproc starts its own processes; under torchrun leave it out (torchrun's "
                            "--nproc_per_node sets the number)")
        check_launch(config, overrides, resume=a.resume, device=a.device, nproc=a.nproc)
        rc = distributed.launch_local(a.nproc, _forwarded_args(a))
        if rc and rc <= 128:  # above: stopped by a signal, already explained
            print(f"ganforge: error: the {a.nproc}-process training job failed (exit code {rc}); see the messages "
                  "above. Checkpoints already written are intact: continue with --resume RUN_DIR", file=sys.stderr)
        return rc
    run, summary = train(config, overrides, run_dir=a.run_dir, resume=a.resume, init_from=a.init_from,
                         device=a.device, quiet=a.quiet)
    if distributed.is_main_process():
        report_run(run.path, summary)
    return EXIT_DISK_FULL if summary.get("stopped_by") == "disk full" else 0


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--steps", type=int, help="override the demo's step budget")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    add_device(p)


def _demo(a: argparse.Namespace) -> int:
    from ganforge.training.launch import DEMO_PRESET, train_or_continue

    overrides = [f"train.steps={a.steps}"] if a.steps else []
    run_path, summary, note = train_or_continue(DEMO_PRESET, a.run_dir, overrides, device=a.device)
    if note:
        print(note)
    report_run(run_path, summary)
    if not a.no_eval:
        from ganforge.evaluation import evaluate_run
        from ganforge.report import write_report
        from ganforge.visualize import compare_grid

        device = device_name(a.device)
        print(f"  real vs generated: {compare_grid(run_path, device=device)}")
        r = evaluate_run(run_path, metrics="fid,kid,is", n=10000, device=device, announce=True)
        print(f"  FID {r['fid']:.3f}   KID {r['kid']:.5f} +- {r['kid_std']:.5f}   IS {r['is']:.3f} +- {r['is_std']:.3f}"
              f"   (logged in {run_path / 'eval.jsonl'})")
        print(f"  report:      {write_report([run_path], run_path / 'report.html', device=device, overwrite=True)}")
    return 0


COMMANDS = [
    Command("train", "train a GAN from a config (a YAML path or preset name)", _train_args, _train,
            "ganforge train CONFIG [key=value ...] | ganforge train --resume RUN_DIR [key=value ...]"),
    Command("demo", "train the default Fashion-MNIST DCGAN on CPU, evaluate it and write samples", _demo_args, _demo),
]
