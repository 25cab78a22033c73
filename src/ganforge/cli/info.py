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
    k = sub.add_parser("pack", help="write a source as a StyleGAN2-ADA/StyleGAN3 dataset zip (dataset.json labels)")
    k.add_argument("source", help="a dataset name, a folder or a .zip of images")
    k.add_argument("--out", required=True, help="the .zip to write")
    k.add_argument("--resolution", type=int, help="R x R pixels (default: the images' own square size)")
    k.add_argument("--crop", default="center", choices=("center", "center-wide"),
                   help="center: largest centred square; center-wide: a 4:3 crop on a black square (default center)")
    k.add_argument("--labels", default="auto", choices=("auto", "from-folders", "none"),
                   help="auto: the source's own (dataset.json, class folders, a dataset's classes); from-folders: "
                        "first-level sub-folders are classes; none")
    k.add_argument("--channels", type=int, choices=(1, 3), help="1 or 3 (default: the first image's)")
    k.add_argument("--data-dir", help="folder holding the dataset files")
    k.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    k.add_argument("--overwrite", action="store_true", help="allow replacing an existing zip")
    k.add_argument("--debug", action="store_true", help="show tracebacks")


def _pack(a: argparse.Namespace) -> int:
    from ganforge.data.pack import pack

    r = pack(a.source, a.out, resolution=a.resolution, crop=a.crop, labels=a.labels, channels=a.channels,
             data_dir=a.data_dir, strict=a.strict, overwrite=a.overwrite)
    what = f", {r['labels']} labels ({len(r['classes'])} names)" if r["labels"] else ", no labels"
    print(f"{r['path']}: {r['images']} images, {r['resolution']}x{r['resolution']}x{r['channels']}{what}")
    return 0


def _data(a: argparse.Namespace) -> int:
    if a.data_command == "pack":
        return _pack(a)
    if a.data_command != "info":
        raise UserError("usage: ganforge data info SOURCE [--data-dir DIR] | ganforge data pack SOURCE --out DATA.zip")
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
              f"{c['data']['resolution']}px, {c['train']['steps']} steps")
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
