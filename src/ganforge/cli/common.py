"""What every command shares: the Command record, the one-line-error parser, common flags and parsers
of flag values. Commands live one file each beside this one; `ganforge/cli/__init__.py` lists them."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge.device import DEVICES
from ganforge.errors import UserError

EXIT_USER = 2
EXIT_DIVERGED = 3
EXIT_DISK_FULL = 4
EXIT_PEER_FAILED = 1  # another process of a distributed run died; the last checkpoint is intact


@dataclass(frozen=True)
class Command:
    """One subcommand: `add_args(parser)` declares its flags, `run(args) -> exit code` calls the API."""

    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def add_debug(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--device", choices=DEVICES, default=default, help="where to run (default: %(default)s)")


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="allow replacing existing files")


def device_name(name: str) -> str:
    """`auto` -> the concrete device string the API functions take."""
    from ganforge.device import resolve_device

    return str(resolve_device(name))


def parse_psi(value: float) -> float:
    if not -1.0 <= value <= 2.0 or value != value:
        raise UserError(f"--truncation must be a number in [-1, 2] (1 = no truncation); got {value}")
    return value


def parse_seeds(text: str, flag: str, most: int = 32) -> list[int]:
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(t.isdigit() for t in parts) or len(parts) > most:
        raise UserError(f"{flag} takes 1 to {most} comma-separated non-negative integer seeds, e.g. 1,2,3; got {text!r}")
    return [int(t) for t in parts]


def print_metrics(result: dict[str, Any], as_json: bool) -> None:
    import json

    if as_json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:>14}: {v:.6g}" if isinstance(v, float) else f"{k:>14}: {v}")


def report_run(path: Path, summary: dict[str, Any]) -> None:
    """What a finished `train`/`demo` prints: where the run, its samples, curves and checkpoint are."""
    from ganforge.runs.rundir import RunDir

    run = RunDir(path)
    latest = run.latest_checkpoint_path()
    stopped = f" (stopped by {summary['stopped_by']})" if summary.get("stopped_by") else ""
    print(f"run: {path}  step {summary['step']}{stopped}")
    samples = sorted(run.samples.glob("step-*.png"))
    if samples:
        print(f"  samples:     {samples[-1]}")
    if (path / "loss_curves.png").exists():
        print(f"  loss curves: {path / 'loss_curves.png'}")
    if latest is not None:
        print(f"  checkpoint:  {latest}")
