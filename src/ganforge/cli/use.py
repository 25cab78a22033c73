"""`ganforge interpolate` and `ganforge serve`: walks through latent space, and the local web playground."""

from __future__ import annotations

import argparse

from ganforge.cli.common import Command, add_device, add_overwrite, device_name, parse_psi, parse_seeds
from ganforge.cli.sample import add_generator
from ganforge.errors import UserError

MAX_STEPS = 1000


def _interpolate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--seeds", help="keyframe seeds, e.g. 1,7,42 (one seed holds z fixed; default 0,1)")
    p.add_argument("--latents", help="keyframe latent files instead of seeds, e.g. a.npz,b.npz (ganforge project)")
    p.add_argument("--steps", type=int, default=24, help="frames per transition between keyframes (default 24)")
    p.add_argument("--space", choices=("z", "w"), default="z", help="z (any model) or w (style-based models)")
    p.add_argument("--mode", choices=("slerp", "lerp"),
                   help="default: slerp in z (Gaussian latents), lerp in w (as StyleGAN)")
    p.add_argument("--loop", action="store_true", help="walk back to the first keyframe (a seamless looping GIF)")
    p.add_argument("--class", dest="cls", help="class-conditional runs: the class of the whole walk (default 0)")
    p.add_argument("--classes", help="class-conditional runs: walk through these classes, e.g. 0,3,7 or names")
    p.add_argument("--attr", help="attribute-conditional runs: fixed attribute values, e.g. Male=1 (others 0)")
    p.add_argument("--attr-walk", metavar="NAME", help="attribute-conditional runs: walk NAME from 0 to 1")
    p.add_argument("--gif", help="write an animated GIF here (loops forever)")
    p.add_argument("--grid", help="write all frames as one grid PNG here")
    p.add_argument("--out", help="write one PNG per frame into this folder (frame-000000.png, ...)")
    p.add_argument("--mp4", help="write an MP4 here (needs the imageio-ffmpeg package)")
    p.add_argument("--duration", type=int, default=80, help="milliseconds per frame of the GIF/MP4 (default 80)")
    p.add_argument("--upscale", type=int, default=1, help="enlarge GIF/MP4/grid pixels N times (nearest)")
    p.add_argument("--nrow", type=int, help="frames per grid row (default: --steps)")
    add_generator(p)
    add_overwrite(p)
    add_device(p)


def _interpolate(a: argparse.Namespace) -> int:
    from ganforge.generate import interpolate_to_files

    if not 1 <= a.steps <= MAX_STEPS:
        raise UserError(f"--steps must be 1 to {MAX_STEPS} frames per transition, got {a.steps}")
    classes = None if a.classes is None else [c.strip() for c in a.classes.split(",") if c.strip()]
    if classes is not None and not classes:
        raise UserError(f"--classes takes comma-separated class names or indices, e.g. 0,3,7; got {a.classes!r}")
    if a.latents is not None and (a.seeds is not None or a.space != "z"):
        raise UserError("--latents are the keyframes, in their own space: leave out --seeds and --space")
    latents = None if a.latents is None else [t.strip() for t in a.latents.split(",") if t.strip()]
    out = interpolate_to_files(
        a.run_dir, parse_seeds(a.seeds or "0,1", "--seeds"), a.steps, latents=latents, space=a.space, mode=a.mode, loop=a.loop,
        truncation_psi=parse_psi(a.truncation), cls=a.cls, classes=classes, attrs=a.attr, attr_walk=a.attr_walk,
        gif=a.gif, grid=a.grid, out_dir=a.out, mp4=a.mp4, duration_ms=a.duration, upscale=a.upscale, nrow=a.nrow,
        ema=not a.no_ema, device=device_name(a.device), overwrite=a.overwrite,
    )
    print(f"{out['frames']} frames (keyframes at {', '.join(map(str, out['keyframes']))})")
    for key in ("gif", "mp4", "grid"):
        if key in out:
            print(f"{key}: {out[key]}")
    if "files" in out:
        print(f"{len(out['files'])} frames in {a.out}")
    return 0


def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one or more run directories to offer")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generators instead of G_ema")
    add_device(p, default="cpu")


def _serve(a: argparse.Namespace) -> int:
    from ganforge.web import serve

    if not 1 <= a.port <= 65535:
        raise UserError(f"--port must be 1 to 65535, got {a.port}")
    serve(a.run_dirs, host=a.host, port=a.port, device=device_name(a.device), ema=not a.no_ema)
    return 0


COMMANDS = [
    Command("interpolate", "walk through latent space between seeds, classes or attributes (GIF, grid, frames)",
            _interpolate_args, _interpolate),
    Command("serve", "local web playground for trained runs (grids, truncation, interpolation, style mixing)",
            _serve_args, _serve),
]
