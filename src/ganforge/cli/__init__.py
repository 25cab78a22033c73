"""The command line: a table of commands, one file each, over the Python API.

Adding a command is one file `cli/<name>.py` that defines `COMMANDS = [Command(...)]` and one line in
`MODULES` below. Commands parse flags and print; the logic lives in the API modules they call.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

from ganforge import __version__
from ganforge.cli.common import EXIT_DIVERGED, EXIT_PEER_FAILED, EXIT_USER, Command, Parser, add_debug
from ganforge.errors import DistributedFailure, TrainingDiverged, UserError, warn

# one line per command module, in the order `ganforge --help` lists them
MODULES = [
    "ganforge.cli.train",
    "ganforge.cli.sample",
    "ganforge.cli.use",
    "ganforge.cli.latent",
    "ganforge.cli.evaluate",
    "ganforge.cli.export",
    "ganforge.cli.publish",
    "ganforge.cli.report",
    "ganforge.cli.info",
]


def commands() -> list[Command]:
    return [c for m in MODULES for c in importlib.import_module(m).COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="ganforge", description="Train, evaluate, compare and use GANs for images.")
    ap.add_argument("--version", action="version", version=f"ganforge {__version__}")
    add_debug(ap)
    sub = ap.add_subparsers(dest="command", parser_class=Parser, metavar="COMMAND")
    for c in commands():
        p = sub.add_parser(c.name, help=c.help, description=c.description or c.help)
        c.add_args(p)
        add_debug(p)
        p.set_defaults(_run=c.run)
    return ap


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Python warnings (a skipped image, a damaged checkpoint) as one readable line each."""
    warn(str(message))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        if "--debug" not in argv:
            warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        parser = build_parser()
        a, extra = parser.parse_known_args(argv)
        if extra:  # `train CONFIG --quiet key=value`: overrides may follow options too
            if isinstance(getattr(a, "args", None), list) and all("=" in x and not x.startswith("-") for x in extra):
                a.args += extra
            else:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if a.command is None:
            parser.print_help()
            return EXIT_USER
        return a._run(a)
    except (UserError, TrainingDiverged, DistributedFailure) as e:
        if debug:
            traceback.print_exc()
        print(f"ganforge: error: {e}", file=sys.stderr)
        return {UserError: EXIT_USER, TrainingDiverged: EXIT_DIVERGED}.get(type(e), EXIT_PEER_FAILED)
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
