"""`ganforge sample` and `ganforge style-mix`: thin wrappers over ganforge.generate."""

from __future__ import annotations

import argparse

from ganforge.cli.common import Command, add_device, add_overwrite, parse_psi, parse_seeds
from ganforge.errors import UserError


def add_conditioning(p: argparse.ArgumentParser) -> None:
    p.add_argument("--class", dest="cls", help="conditional runs: a class name or index (default: every class)")
    p.add_argument("--attr", help="attribute-conditional runs: e.g. Smiling=1,Male=0 (others 0)")


def add_generator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of G_ema")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI",
                   help="style-based models: truncation psi (1 = plain sampling, 0.7 = typical images)")


def _sample_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--grid", help="write a grid PNG here (default RUN_DIR/sample-seed<S>.png)")
    p.add_argument("--out", help="write one PNG per image into this folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int, help="images per grid row")
    add_conditioning(p)
    add_generator(p)
    add_overwrite(p)
    add_device(p)


def _sample(a: argparse.Namespace) -> int:
    from ganforge.generate import sample_to_files

    if a.n < 1:
        raise UserError(f"--n must be at least 1, got {a.n}")
    out = sample_to_files(a.run_dir, n=a.n, seed=a.seed, grid=a.grid, out_dir=a.out, ema=not a.no_ema,
                          device=a.device, nrow=a.nrow, overwrite=a.overwrite, cls=a.cls, attrs=a.attr,
                          truncation_psi=parse_psi(a.truncation))
    if "grid" in out:
        print(f"grid: {out['grid']}")
    if "files" in out:
        print(f"{len(out['files'])} images in {a.out}")
    return 0


def _style_mix_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory of a style-based model")
    p.add_argument("--rows", default="1,2,3,4", help="seeds of the rows (their styles are kept), e.g. 1,2,3")
    p.add_argument("--cols", default="5,6,7,8", help="seeds of the columns (their styles are copied in)")
    p.add_argument("--layers", default="coarse", help="coarse, middle, fine or a range A-B of style layers")
    p.add_argument("--grid", help="PNG to write (default RUN_DIR/style-mix-<layers>.png)")
    add_conditioning(p)
    add_generator(p)
    add_overwrite(p)
    add_device(p)


def _style_mix(a: argparse.Namespace) -> int:
    from ganforge.generate import style_mix_to_file

    rows, cols = parse_seeds(a.rows, "--rows"), parse_seeds(a.cols, "--cols")
    path = style_mix_to_file(a.run_dir, rows, cols, a.layers, grid=a.grid, truncation_psi=parse_psi(a.truncation),
                             cls=a.cls, attrs=a.attr, ema=not a.no_ema, device=a.device, overwrite=a.overwrite)
    print(f"grid: {path}")
    return 0


COMMANDS = [
    Command("sample", "sample images from a trained run", _sample_args, _sample),
    Command("style-mix", "style-mixing figure of a style-based run (stylegan2)", _style_mix_args, _style_mix),
]

