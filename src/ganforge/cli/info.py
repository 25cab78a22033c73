"""`ganforge data info`, `presets` and `models`: what is there to train on and with."""

from __future__ import annotations

import argparse
import json

from ganforge.cli.common import Command, Parser
from ganforge.errors import UserError


def _data_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", parser_class=Parser, metavar="SUBCOMMAND")
    q = sub.add_parser("info", help="count, shape, classes and value range of a data source")
    q.add_argument("source", help="fashion-mnist, mnist[:test], cifar10, celeba, a folder or a .zip")
    q.add_argument("--data-dir", help="folder holding the dataset files")
    q.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    q.add_argument("--json", action="store_true")
    q.add_argument("--debug", action="store_true", help="show tracebacks")


def _data(a: argparse.Namespace) -> int:
    if a.data_command != "info":
        raise UserError("usage: ganforge data info SOURCE [--data-dir DIR]")
    from ganforge.data import dataset_info

    info = dataset_info(a.source, data_dir=a.data_dir, strict=a.strict)
    if a.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>12}: {v}")
    return 0


def _presets(a: argparse.Namespace) -> int:
    from ganforge.config import list_presets, load_config

    for name in list_presets():
        c = load_config(name)
        print(f"{name:28s} {c['model']['name']:8s} {c['loss']['name']:8s} {c['data']['source']} "
              f"{c['data']['resolution']}px, {c['train']['steps']} steps")  # fmt: skip
    return 0


def _models(a: argparse.Namespace) -> int:
    from ganforge.losses import LOSSES
    from ganforge.models import MODELS

    for name in MODELS.names():
        fam = MODELS.get(name)
        print(f"model {name:10s} {fam.description} (resolutions {', '.join(map(str, fam.resolutions))})")
    for name in LOSSES.names():
        print(f"loss  {name}")
    return 0


def _no_args(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS = [
    Command("data", "dataset tools", _data_args, _data),
    Command("presets", "list the configs shipped with ganforge", _no_args, _presets),
    Command("models", "list the registered models and losses", _no_args, _models),
]
