"""`ganforge train` and `ganforge demo`: thin wrappers over ganforge.training.launch."""

from __future__ import annotations

import argparse

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


def _train(a: argparse.Namespace) -> int:
    from ganforge.training.launch import train

    config, overrides = split_train_args(a.args)
    if config is None and a.resume is None:
        raise UserError("give a config (YAML path or preset, see `ganforge presets`) or --resume RUN_DIR")
    run, summary = train(config, overrides, run_dir=a.run_dir, resume=a.resume, init_from=a.init_from,
                         device=a.device, quiet=a.quiet)  # fmt: skip
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
        from ganforge.metrics.evaluate import evaluate_run
        from ganforge.visualize import compare_grid

        device = device_name(a.device)
        print(f"  real vs generated: {compare_grid(run_path, device=device)}")
        r = evaluate_run(run_path, metrics="fid,kid,is", n=10000, device=device, announce=True)
        print(f"  FID {r['fid']:.3f}   KID {r['kid']:.5f} +- {r['kid_std']:.5f}   IS {r['is']:.3f} +- {r['is_std']:.3f}"
              f"   (logged in {run_path / 'eval.jsonl'})")  # fmt: skip
    return 0


COMMANDS = [
    Command("train", "train a GAN from a config (a YAML path or preset name)", _train_args, _train,
            "ganforge train CONFIG [key=value ...] | ganforge train --resume RUN_DIR [key=value ...]"),  # fmt: skip
    Command("demo", "train the default Fashion-MNIST DCGAN on CPU, evaluate it and write samples", _demo_args, _demo),
]
