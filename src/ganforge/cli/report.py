"""`ganforge report` and `ganforge compare`: wrappers over ganforge.report.write_report and ganforge.compare."""

from __future__ import annotations

import argparse

from ganforge.cli.common import Command, add_device, add_overwrite, device_name, parse_seeds


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories to report on")
    p.add_argument(
        "--out", default="report.html", help="HTML file to write; Markdown and JSON go beside it (default %(default)s)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--eval-n", type=int, help="images per side for runs without an evaluation at their final step "
                   "(default 2000, marked in the table)")
    g.add_argument(
        "--no-eval",
        action="store_true",
        help="no evaluation or diagnostics: metrics missing from eval.jsonl stay missing",
    )
    p.add_argument("--network", help="feature network (default: the dataset's, as for `ganforge eval`)")
    p.add_argument("--title")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples the report draws")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    add_overwrite(p)
    add_device(p)


def _report(a: argparse.Namespace) -> int:
    from ganforge.report import write_report

    out = write_report(a.run_dirs, a.out, eval_n=a.eval_n, no_eval=a.no_eval, network=a.network,
                       device=device_name(a.device), seed=a.seed, overwrite=a.overwrite, title=a.title,
                       progress=not a.quiet)
    print(f"report: {out}")
    print(f"        {out.with_suffix('.md')}")
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("args", nargs="*", metavar="CONFIG|key=value",
                   help="configs or presets to compare, then overrides applied to all (write them before the options)")
    p.add_argument("--run", action="append", default=[], metavar="'LABEL=CONFIG key=value ...'",
                   help="a labelled variant with its own overrides (repeatable)")
    b = p.add_mutually_exclusive_group(required=True)
    b.add_argument("--minutes", type=float, help="training wall-clock per run on this machine (train.max_seconds)")
    b.add_argument("--images", type=int, help="real images shown to D per run")
    p.add_argument("--out", required=True, help="folder for the runs, compare.json and report.html")
    p.add_argument("--seeds", default="0", help="comma-separated seeds per config (default 0), e.g. 0,1,2")
    p.add_argument("--eval-n", type=int, default=2000, help="generated images per evaluation (default %(default)s)")
    p.add_argument("--network", help="feature network (default: each dataset's, as for `ganforge eval`)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_device(p, default=None)


def _compare(a: argparse.Namespace) -> int:
    from ganforge.compare import compare, entries_of

    configs = [x for x in a.args if "=" not in x]
    overrides = [x for x in a.args if "=" in x]
    compare(entries_of(configs, a.run), a.out, minutes=a.minutes, images=a.images,
            seeds=parse_seeds(a.seeds, "--seeds"), eval_n=a.eval_n, network=a.network, overrides=overrides,
            device=a.device, quiet=a.quiet)
    return 0


COMMANDS = [
    Command(
        "report",
        "one self-contained HTML report (+ Markdown) comparing runs, with findings",
        _report_args,
        _report,
        "ganforge report RUN_DIR... [--out report.html] [--eval-n N | --no-eval]",
    ),
    Command(
        "compare",
        "train configs under one budget (minutes or images), evaluate them and write the report",
        _compare_args,
        _compare,
        "ganforge compare CONFIG... [key=value ...] (--minutes N | --images N) --out DIR [--seeds 0,1,2]",
    ),
]
