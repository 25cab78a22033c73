"""`ganforge project`, `ganforge directions` and `ganforge edit`: real images into a run's latent space, semantic
directions in it, and edits along them."""

from __future__ import annotations

import argparse
import math
import re

from ganforge.cli.common import Command, add_device, add_overwrite, device_name, parse_seeds
from ganforge.cli.sample import add_conditioning
from ganforge.errors import UserError

METHOD_HELP = ("sefa: closed-form factorisation of the first layer (Shen & Zhou 2021); pca: GANSpace (Härkönen et "
               "al. 2020); classifier: one linear boundary per class of a classifier (InterFaceGAN, Shen et al. 2020)")


def _generator_flags(p: argparse.ArgumentParser, conditioning: bool) -> None:
    """The flags every latent command shares: which generator, (labels), overwriting, device."""
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of G_ema")
    if conditioning:
        add_conditioning(p)
    add_overwrite(p)
    add_device(p, default="cpu")


def _directions_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--method", required=True, help=METHOD_HELP)  # checked by the registry (no torch import here)
    p.add_argument("--out", required=True, help="the direction file to write (.npz)")
    p.add_argument("--k", type=int, help="keep the K most important directions (default: all; pca: 10)")
    p.add_argument("--n", type=int, help="samples for pca / classifier (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of those samples (default 0)")
    p.add_argument("--network", help="classifier: a feature network with class outputs (default: the run's "
                                     "domain CNN, Fashion-MNIST or MNIST)")
    p.add_argument("--network-weights", help="classifier: a weights file for --network")
    p.add_argument(
        "--layers", help="sefa on style models: factorise only these style layers (coarse, middle, fine, A-B)"
    )
    p.add_argument("--condition", metavar="A", help="write direction A with the --keep directions projected out")
    p.add_argument("--keep", metavar="B[,C]", help="directions to leave unchanged while moving along --condition")
    _generator_flags(p, conditioning=False)


def _directions(a: argparse.Namespace) -> int:
    from ganforge.latent.directions import directions_for_run

    keep = None if a.keep is None else [t.strip() for t in a.keep.split(",") if t.strip()]
    dirs = directions_for_run(a.run_dir, a.method, a.out, k=a.k, n=a.n, seed=a.seed, network=a.network,
                              network_weights=a.network_weights, layers=a.layers, condition_on=a.condition, keep=keep,
                              ema=not a.no_ema, device=device_name(a.device), overwrite=a.overwrite)
    what = {"sefa": "eigenvalue", "pca": "variance share", "classifier": "held-out accuracy"}.get(
        dirs.method, "importance"
    )
    width = max(len(n) for n in dirs.names)
    print(f"{'index':>5}  {'name':<{width}}  {what}")
    for i, (name, value) in enumerate(zip(dirs.names, dirs.importance.tolist(), strict=True)):
        print(f"{i:>5}  {name:<{width}}  {value:.4g}")
    print(f"{len(dirs)} directions in {dirs.space} -> {a.out}")
    return 0


def parse_strengths(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"--strengths takes comma-separated numbers, e.g. -3,-1.5,0,1.5,3; got {text!r}")
    return values


def _edit_args(p: argparse.ArgumentParser) -> None:
    p._negative_number_matcher = re.compile(r"^-\.?\d")  # `--strengths -3,0,3` is a value (Python 3.13's rule)
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--seeds", help="seeds to edit, e.g. 1,2,3 (the images `ganforge sample` gives them)")
    p.add_argument("--latent", nargs="+", metavar="FILE.npz", help="latent files to edit (from ganforge project)")
    p.add_argument("--direction", required=True, metavar="DIRS.npz:NAME",
                   help="a direction file (ganforge directions) and a direction's name or index in it")
    p.add_argument("--strengths", default="-3,-1.5,0,1.5,3",
                   help="standard deviations along the direction, in [-10, 10] (default -3,-1.5,0,1.5,3)")
    p.add_argument("--layers", help="style models: edit only these style layers (coarse, middle, fine, A-B)")
    p.add_argument("--out", help="one PNG per latent and strength, plus manifest.json, into this folder")
    p.add_argument("--grid", help="a grid PNG: a row per latent, a column per strength")
    p.add_argument("--gif", help="an animated GIF: a frame per strength, the latents side by side")
    p.add_argument("--upscale", type=int, default=1, help="enlarge grid/GIF pixels N times (nearest)")
    p.add_argument("--duration", type=int, default=200, help="milliseconds per GIF frame (default 200)")
    _generator_flags(p, conditioning=True)


def _edit(a: argparse.Namespace) -> int:
    from ganforge.latent.edit import edit_to_files

    seeds = None if a.seeds is None else parse_seeds(a.seeds, "--seeds")
    out = edit_to_files(a.run_dir, a.direction, parse_strengths(a.strengths), seeds=seeds, latents=a.latent,
                        out_dir=a.out, grid=a.grid, gif=a.gif, layers=a.layers, cls=a.cls, attrs=a.attr,
                        upscale=a.upscale, duration_ms=a.duration, ema=not a.no_ema, device=device_name(a.device),
                        overwrite=a.overwrite)
    print(f"{out['images']} images along {out['direction']!r}")
    for key in ("grid", "gif", "manifest"):
        if key in out:
            print(f"{key}: {out[key]}")
    return 0


def _project_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--target", nargs="+", required=True, metavar="IMG",
                   help="images to project (converted as the run's training data was: crop, resize, channels)")
    p.add_argument("--out", required=True, help="folder for <stem>.npz, <stem>.png and <stem>-compare.png per target")
    p.add_argument("--space", choices=("z", "w", "w+"), help="latent space (default: w for style models, else z)")
    p.add_argument("--steps", type=int, help="optimisation steps (default 100)")
    p.add_argument("--restarts", type=int, help="starts optimised side by side; the best is kept (default 2)")
    p.add_argument("--network", help="perceptual distance network: fashion-mnist-cnn, mnist-cnn, lpips-vgg16, "
                                     "inception-fid or none (default: the run's domain CNN, else none)")
    p.add_argument("--network-weights", help="a weights file for --network (lpips-vgg16 needs one)")
    p.add_argument("--gif", action="store_true", help="also write <stem>.gif: target | reconstruction while it fits")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting points (default 0)")
    _generator_flags(p, conditioning=True)


def _project(a: argparse.Namespace) -> int:
    from ganforge.latent.project import project_to_files

    out = project_to_files(a.run_dir, a.target, a.out, space=a.space, steps=a.steps, restarts=a.restarts,
                           network=a.network, network_weights=a.network_weights, cls=a.cls, attrs=a.attr, gif=a.gif,
                           seed=a.seed, ema=not a.no_ema, device=device_name(a.device), overwrite=a.overwrite)
    for note in out["notes"]:
        print(f"note: {note}")
    print(f"projected into {out['space']} (loss: pixel MSE + {out['network']} distance)")
    for r in out["projections"]:
        print(f"  {r['target']} -> {a.out}/{r['stem']}.npz  pixel MSE {r['pixel']:.4f}  feature {r['feature']:.4f}")
    return 0


COMMANDS = [
    Command("project", "project real images into a run's latent space (GAN inversion): latents + reconstructions",
            _project_args, _project),
    Command("directions", "find semantic directions in a run's latent space (sefa, pca, classifier)",
            _directions_args, _directions),
    Command("edit", "move seeds or projected latents along a direction (PNGs + manifest, grid, GIF)",
            _edit_args, _edit),
]
