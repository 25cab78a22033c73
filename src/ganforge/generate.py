"""Using a trained generator: load it from a run directory and sample images, grids or files.

A run directory is self-describing (config.yaml + checkpoints), so nothing else is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ganforge.device import resolve_device
from ganforge.errors import UserError
from ganforge.fileio import atomic_write_file
from ganforge.images import check_new_file, save_grid, save_images, to_pil, to_uint8
from ganforge.models import build_generator
from ganforge.models.sampling import require_styles, run_label_kind, sample, seed_latents
from ganforge.models.standing import prepare_loaded
from ganforge.runs import bundle
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.rundir import RunDir

# generate.project (and its types) re-exported on first use: projection pulls in feature networks, which
# `ganforge sample` never needs
_PROJECTION = ("project", "Projection", "ProjectionCancelled")


def __getattr__(name: str) -> Any:
    if name in _PROJECTION:
        import importlib

        return getattr(importlib.import_module("ganforge.latent.project"), name)
    raise AttributeError(f"module 'ganforge.generate' has no attribute {name!r}")


def find_checkpoint(
    run_dir: str | Path, checkpoint: str | Path | None = None
) -> tuple[ckpt.Checkpoint, dict[str, Any]]:
    """The checkpoint a run folder (its newest intact one, or `checkpoint`) or a bundle (ganforge publish) holds,
    read once, with its config."""
    if bundle.is_bundle(run_dir):
        if checkpoint is not None:
            raise UserError(f"{run_dir} is a published bundle with one model; --checkpoint applies to run folders")
        found = bundle.read_bundle(run_dir)
        return found, found.config
    run = RunDir.open(Path(run_dir))
    cfg = run.read_config()
    if checkpoint is not None:
        found = ckpt.read_checkpoint(Path(checkpoint))
    else:
        found = run.latest()
        if found is None:
            raise UserError(f"{run.path} has no intact checkpoint yet; train first (or wait for the first checkpoint)")
    return found, found.meta.get("config") or cfg


def generator_of(
    found: ckpt.Checkpoint, cfg: dict[str, Any], *, ema: bool = True, device: str = "cpu", standing_stats: bool = True
) -> torch.nn.Module:
    """The generator of a loaded checkpoint (G_ema when it holds one and `ema` is true), in eval mode, with standing
    statistics as `load_generator` gives them."""
    G = build_generator(cfg)
    prefix = found.generator_prefix(ema)
    ckpt.load_module(prefix, G, found.tensors, f" {found.path.name} ({found.describe()})")
    G.sampled_from = prefix  # "G_ema" or "G", for the evaluation protocol
    # on the CPU: the same statistics on any device
    G.standing_stats = prepare_loaded(G, prefix, found.meta, standing_stats, found.tensors,
                                       label_kind=run_label_kind(cfg))
    return G.to(resolve_device(device)).eval()


def load_generator(
    run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | Path | None = None,
    standing_stats: bool = True,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator of a run folder or a bundle (G_ema when it kept one and `ema` is true), in eval mode. G_ema
    with BatchNorm gets standing statistics (models/standing.py) unless `standing_stats` is false;
    `G.sampled_from` and `G.standing_stats` record what was used (None: not applicable)."""
    found, cfg = find_checkpoint(run_dir, checkpoint)
    return generator_of(found, cfg, ema=ema, device=device, standing_stats=standing_stats), cfg


def make_labels(
    cfg: dict[str, Any], n: int, cls: str | int | None = None, attrs: str | None = None
) -> torch.Tensor | None:
    """Labels for n samples of a conditional run: one class (by index or name, case-insensitive), every
    class in turn (default), or attribute values like "Smiling=1,Male=0" (unnamed attributes are 0)."""
    m = cfg["model"]
    if not m.get("conditional"):
        if cls is not None or attrs is not None:
            raise UserError(
                "this run's model is not conditional; --class/--attr need a run trained with model.conditional=true"
            )
        return None
    names = [str(x) for x in m["label_names"]]
    if m["label_kind"] == "attributes":
        if cls is not None:
            raise UserError(f"this run is conditioned on attributes, not classes; use --attr, e.g. --attr {names[0]}=1")
        vec = torch.zeros(len(names))
        for part in filter(None, (attrs or "").split(",")):
            key, _, val = part.partition("=")
            lookup = {x.lower(): i for i, x in enumerate(names)}
            if key.strip().lower() not in lookup or val.strip() not in ("0", "1"):
                raise UserError(f"--attr {part!r}: write NAME=0 or NAME=1 with NAME one of {', '.join(names)}")
            vec[lookup[key.strip().lower()]] = float(val)
        return vec.expand(n, -1).clone()
    if attrs is not None:
        raise UserError("this run is conditioned on classes, not attributes; use --class NAME or --class INDEX")
    if cls is None:
        return torch.arange(n) % len(names)
    lookup = {x.lower(): i for i, x in enumerate(names)}
    text = str(cls).strip()
    if text.lower() in lookup:
        idx = lookup[text.lower()]
    elif text.isdigit() and int(text) < len(names):
        idx = int(text)
    else:
        raise UserError(f"unknown class {text!r}; choose one of: {', '.join(names)} (or an index 0-{len(names) - 1})")
    return torch.full((n,), idx, dtype=torch.long)


def style_layers(G: torch.nn.Module, spec: str) -> list[int]:
    """ws indices for "coarse" (4-8 px), "middle", "fine" (the top resolutions, 64 px and up, or the
    output resolution of a smaller model) or an inclusive index range "A-B"."""
    res = list(G.ws_resolutions)
    fine_from = min(64, max(res))
    groups = {
        "coarse": [i for i, r in enumerate(res) if r <= 8],
        "middle": [i for i, r in enumerate(res) if 8 < r < fine_from],
        "fine": [i for i, r in enumerate(res) if r >= fine_from],
    }
    text = spec.strip().lower()
    if text in groups:
        return groups[text]
    lo, sep, hi = text.partition("-")
    if sep and lo.isdigit() and hi.isdigit() and int(lo) <= int(hi) < len(res):
        return list(range(int(lo), int(hi) + 1))
    raise UserError(f"--layers {spec!r}: use coarse, middle, fine or a range A-B of style layers 0-{len(res) - 1} "
                    f"(this model's layers drive resolutions {', '.join(map(str, res))})")


@torch.no_grad()
def style_mix(
    G: torch.nn.Module, row_seeds: list[int], col_seeds: list[int], layers: str | list[int] = "coarse",
    truncation_psi: float = 1.0, labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """The style-mixing figure as a batch of images ((1 + rows) x (1 + cols), row-major, CPU, [-1, 1]):
    the first row holds the column seeds' images, the first column the row seeds', and cell (i, j) is row
    seed i with its styles at `layers` taken from column seed j. The top-left cell is blank."""
    require_styles(G, "style mixing")
    idx = style_layers(G, layers) if isinstance(layers, str) else list(layers)
    device = next(G.parameters()).device

    def ws_of(seeds: list[int]) -> torch.Tensor:
        lb = None if labels is None else labels[: len(seeds)].to(device)
        return G.mapping(seed_latents(G, seeds).to(device), lb, truncation_psi=truncation_psi)

    w_rows, w_cols = ws_of(row_seeds), ws_of(col_seeds)
    rows = [torch.cat([w_cols[:1], w_cols])]  # the corner cell is blanked below
    for i in range(len(row_seeds)):
        mixed = w_rows[i : i + 1].repeat(len(col_seeds), 1, 1)
        mixed[:, idx] = w_cols[:, idx]
        rows.append(torch.cat([w_rows[i : i + 1], mixed]))
    ws = torch.cat(rows)
    img = G.synthesis(ws, noise_mode="const").float().clamp_(-1.0, 1.0).cpu()
    img[0] = -1.0  # blank corner
    return img


def sample_to_files(
    run_dir: str | Path, *, n: int = 64, seed: int = 0, grid: str | Path | None = None,
    out_dir: str | Path | None = None, ema: bool = True, device: str = "cpu", nrow: int | None = None,
    overwrite: bool = False, cls: str | int | None = None, attrs: str | None = None, truncation_psi: float = 1.0,
) -> dict[str, Any]:
    """`ganforge sample`: a grid PNG and/or one PNG per image. Defaults to RUN_DIR/sample-grid.png."""
    if grid is None and out_dir is None:
        grid = Path(run_dir) / f"sample-seed{seed}.png"
    if grid is not None:
        check_new_file(Path(grid), overwrite, own_dir=Path(run_dir))
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    labels = make_labels(cfg, n, cls, attrs)
    x = sample(G, n, seed=seed, labels=labels, truncation_psi=truncation_psi)
    if nrow is None and labels is not None and cls is None and attrs is None and len(cfg["model"]["label_names"]) <= 16:
        nrow = len(cfg["model"]["label_names"])  # one class per column
    written: dict[str, Any] = {}
    if out_dir is not None:
        written["files"] = [str(p) for p in save_images(x, Path(out_dir), overwrite=overwrite)]
    if grid is not None:
        written["grid"] = str(save_grid(x, Path(grid), nrow=nrow))
    return written


def style_mix_to_file(
    run_dir: str | Path, row_seeds: list[int], col_seeds: list[int], layers: str = "coarse", *,
    grid: str | Path | None = None, truncation_psi: float = 1.0, cls: str | int | None = None,
    attrs: str | None = None, ema: bool = True, device: str = "cpu", overwrite: bool = False,
) -> Path:
    """`ganforge style-mix`: the style-mixing figure of a run as one PNG (default RUN_DIR/style-mix-<layers>.png).
    Conditional runs use class 0 unless a class or attributes are given."""
    safe_layers = "".join(c if c.isalnum() else "-" for c in layers)
    path = Path(grid) if grid else Path(run_dir) / f"style-mix-{safe_layers}.png"
    check_new_file(path, overwrite, own_dir=Path(run_dir))
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    require_styles(G, "style mixing")
    if cls is None and attrs is None and cfg["model"].get("conditional") and cfg["model"]["label_kind"] != "attributes":
        cls = 0
    labels = make_labels(cfg, max(len(row_seeds), len(col_seeds)), cls, attrs)
    img = style_mix(G, row_seeds, col_seeds, layers, truncation_psi, labels)
    return save_grid(img, path, nrow=len(col_seeds) + 1)


# --- latent walks: interpolation between seeds, classes and attributes --------------------------------------------
# A walk is a list of keyframes (a seed and a label each) and the frames between them. z is Gaussian, so its
# samples sit near a sphere: slerp keeps in-between latents on it (lerp passes through atypically short ones);
# w is not Gaussian, and StyleGAN's own walks and its perceptual path length lerp there. Style models render with
# their fixed per-layer noise (noise_mode="const"), so only the latent moves from frame to frame.

INTERP_SPACES = ("z", "w")
INTERP_MODES = ("slerp", "lerp")
MAX_FRAMES = 10000


@dataclass(frozen=True)
class LatentPath:
    """A walk ready to render: one latent (z: [F, z_dim], w: [F, num_ws, w_dim]) and label vector per frame."""

    space: str
    latents: torch.Tensor
    labels: torch.Tensor | None
    keyframes: list[int]  # frame index of every keyframe the walk passes (a looped walk does not repeat the first)
    truncation_psi: float = 1.0


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Straight line; written (1-t)a + tb so that t=0 and t=1 give a and b exactly."""
    return a * (1.0 - t) + b * t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation (Shoemake 1985; White 2016 for GAN latents) along the great circle from a to b;
    falls back to lerp for (nearly) parallel vectors, where the two agree."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = (a64 @ b64 / (a64.norm() * b64.norm()).clamp_min(1e-12)).clamp(-1.0, 1.0)
    theta = torch.acos(cos)
    s = torch.sin(theta)
    if s < 1e-6:
        return lerp(a, b, t)
    out = (torch.sin((1.0 - t) * theta) / s) * a64 + (torch.sin(t * theta) / s) * b64
    return out.view_as(a).to(a.dtype)


def _need_two(keys: int) -> None:
    if keys < 2:
        raise UserError("a walk needs at least two keyframes: give two or more seeds (--seeds 1,7), classes "
                        "(--classes 0,3) or an attribute to walk (--attr-walk NAME)")


def walk_positions(keys: int, steps: int, loop: bool = False) -> list[float]:
    """Positions along a walk in keyframe units (k = the k-th keyframe): `steps` frames per transition, the last
    keyframe included, or, looping, the way back to the first (which a looping GIF shows next) left out."""
    _need_two(keys)
    if steps < 1:
        raise UserError(f"--steps must be at least 1 frame per transition, got {steps}")
    segments = keys if loop else keys - 1
    total = segments * steps + (0 if loop else 1)
    if total > MAX_FRAMES:
        raise UserError(f"that walk has {total} frames (at most {MAX_FRAMES}); use fewer --steps or keyframes")
    return [i / steps for i in range(total)]


def _key_labels(G: torch.nn.Module, labels: torch.Tensor | None, keys: int) -> torch.Tensor | None:
    """Keyframe labels as float vectors: every conditional model reads labels through `label_vector`, linearly,
    so a soft vector between two one-hot classes is a valid input (the blend of the two class embeddings)."""
    from ganforge.models.layers import label_vector

    num = getattr(G, "num_labels", None)
    if labels is None:
        if num:
            raise UserError("this generator is conditional: give keyframe labels (a class or attribute values)")
        return None
    if not num:
        raise UserError("this generator is not conditional; --class, --classes and --attr need a conditional run")
    vec = label_vector(torch.as_tensor(labels), num).float()
    if len(vec) == 1:
        vec = vec.expand(keys, -1)
    return vec.clone()


@torch.no_grad()
def interpolation_path(
    G: torch.nn.Module, seeds: list[int], steps: int = 24, *, space: str = "z", mode: str | None = None,
    loop: bool = False, truncation_psi: float = 1.0, labels: torch.Tensor | None = None,
    positions: list[float] | None = None,
) -> LatentPath:
    """The latents of a walk through the keyframes (seed_i, labels_i): a list of one seed or one label is held for
    every keyframe, so `seeds=[5], labels=tensor([0, 3, 7])` is a class walk at a fixed z. Keyframes are the exact
    latents `sample` uses for those seeds. `positions` (in keyframe units) replaces the regular `steps` grid."""
    if space not in INTERP_SPACES:
        raise UserError(f"--space must be one of {', '.join(INTERP_SPACES)}, got {space!r}")
    mode = mode or ("slerp" if space == "z" else "lerp")
    if mode not in INTERP_MODES:
        raise UserError(f"--mode must be one of {', '.join(INTERP_MODES)}, got {mode!r}")
    if space == "w":
        require_styles(G, "interpolation in w (--space w)")
        if mode == "slerp":
            raise UserError("w is not Gaussian, so slerp has no meaning there; use --mode lerp with --space w")
    if truncation_psi != 1.0:
        require_styles(G, "truncation")
    n_labels = 0 if labels is None else len(labels)
    keys = max(len(seeds), n_labels)
    if len(seeds) not in (1, keys) or n_labels not in (0, 1, keys):
        raise UserError(f"{len(seeds)} seeds and {n_labels} keyframe labels: give equally many, or one of either "
                        "(held fixed along the walk)")
    if not seeds:
        raise UserError("a walk needs at least one seed")
    _need_two(keys)
    pos = walk_positions(keys, steps, loop) if positions is None else [float(u) for u in positions]
    segments = keys if loop else keys - 1
    if not pos or not all(0.0 <= u <= segments for u in pos):
        raise UserError(f"positions along a walk of {keys} keyframes lie in [0, {segments}], got {pos[:4]}")
    z = seed_latents(G, seeds).expand(keys, -1) if len(seeds) == 1 else seed_latents(G, seeds)
    key_y = _key_labels(G, labels, keys)
    if space == "w":
        device = next(G.parameters()).device
        # one keyframe at a time, as `sample(G, 1, seed=s)` maps it (CPU matmuls round differently per batch size)
        ws = [G.mapping(z[i : i + 1].to(device), None if key_y is None else key_y[i : i + 1].to(device),
                        truncation_psi=truncation_psi, update_w_avg=False) for i in range(keys)]
        key_lat = torch.cat(ws).cpu()
    else:
        key_lat = z
    interp = slerp if mode == "slerp" else lerp
    lat, lab, keyframes = [], [], []
    for f, u in enumerate(pos):
        a = int(math.floor(u)) % keys
        b, t = (a + 1) % keys, u - math.floor(u)
        if t == 0.0:  # a keyframe: its exact latent, so the walk's ends are `sample` of those seeds
            keyframes.append(f)
            lat.append(key_lat[a])
            lab.append(None if key_y is None else key_y[a])
        else:
            lat.append(interp(key_lat[a], key_lat[b], t))
            lab.append(None if key_y is None else lerp(key_y[a], key_y[b], t))
    labels_out = None if key_y is None else torch.stack(lab)  # type: ignore[arg-type]
    return LatentPath(space, torch.stack(lat), labels_out, keyframes, float(truncation_psi))


@torch.no_grad()
def render_path(G: torch.nn.Module, path: LatentPath, batch_size: int = 64) -> torch.Tensor:
    """The frames of a walk (NCHW, CPU, [-1, 1]); style models use their fixed noise, so frames differ only by
    the latent, and a z frame equals `sample` of that z (the same mapping, truncation and noise)."""
    device = next(G.parameters()).device
    styled = hasattr(G, "mapping") and hasattr(G, "synthesis")
    out = []
    for i in range(0, len(path.latents), batch_size):
        lat = path.latents[i : i + batch_size].to(device)
        lb = None if path.labels is None else path.labels[i : i + batch_size].to(device)
        if path.space == "w":
            img = G.synthesis(lat, noise_mode="const")
        elif styled:
            ws = G.mapping(lat, lb, truncation_psi=path.truncation_psi, update_w_avg=False)
            img = G.synthesis(ws, noise_mode="const")
        else:
            img = G(lat, lb)
        out.append(img.float().clamp_(-1.0, 1.0).cpu())
    return torch.cat(out)


def latent_walk(G: torch.nn.Module, keys: Any, steps: int = 24, *, mode: str | None = None,
                loop: bool = False) -> tuple[Any, list[int]]:
    """A walk through latent keyframes (a `latent.core.Latent` of K latents: projections or any latent file) as one
    Latent per frame, and the keyframes' frame indices: z slerped (or lerped), w and w+ lerped, labels and optimised
    noise maps lerped. A keyframe's frame is its latent exactly, so it renders as its projection did."""
    from ganforge.latent.core import Latent
    from ganforge.models.layers import label_vector

    mode = mode or ("slerp" if keys.space == "z" else "lerp")
    if mode not in INTERP_MODES:
        raise UserError(f"--mode must be one of {', '.join(INTERP_MODES)}, got {mode!r}")
    if mode == "slerp" and keys.space != "z":
        raise UserError(f"{keys.space} is not Gaussian, so slerp has no meaning there; use --mode lerp")
    n = len(keys)
    pos = walk_positions(n, steps, loop)
    labels = None if keys.labels is None else label_vector(keys.labels, int(G.num_labels)).float()
    noise = None if keys.noise is None else [m.expand(n, *m.shape[1:]) for m in keys.noise]
    interp = slerp if mode == "slerp" else lerp
    frames: list[tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor] | None]] = []
    keyframes = []
    for f, u in enumerate(pos):
        a = int(math.floor(u)) % n
        b, t = (a + 1) % n, u - math.floor(u)
        if t == 0.0:
            keyframes.append(f)
            frames.append((keys.values[a], None if labels is None else labels[a],
                           None if noise is None else [m[a] for m in noise]))
        else:
            frames.append((interp(keys.values[a], keys.values[b], t),
                           None if labels is None else lerp(labels[a], labels[b], t),
                           None if noise is None else [lerp(m[a], m[b], t) for m in noise]))
    out = Latent(torch.stack([v for v, _, _ in frames]), keys.space,
                 None if labels is None else torch.stack([lb for _, lb, _ in frames]),  # type: ignore[misc]
                 None if noise is None else [torch.stack([nz[j] for _, _, nz in frames])  # type: ignore[index]
                                             for j in range(len(noise))])
    return out, keyframes


def interpolate(
    G: torch.nn.Module, seeds: list[int], steps: int = 24, *, space: str = "z", mode: str | None = None,
    loop: bool = False, truncation_psi: float = 1.0, labels: torch.Tensor | None = None,
    positions: list[float] | None = None, batch_size: int = 64,
) -> torch.Tensor:
    """The frames of a walk through seeds (and/or keyframe labels): see `interpolation_path` for the walk and
    `render_path` for the rendering. Returns NCHW in [-1, 1] on the CPU."""
    path = interpolation_path(G, seeds, steps, space=space, mode=mode, loop=loop, truncation_psi=truncation_psi,
                              labels=labels, positions=positions)
    return render_path(G, path, batch_size)


def walk_labels(
    cfg: dict[str, Any], cls: str | None = None, classes: list[str] | None = None, attrs: str | None = None,
    attr_walk: str | None = None,
) -> torch.Tensor | None:
    """Keyframe labels for `ganforge interpolate`: a class walk (`classes`), an attribute going 0 -> 1 on top of
    `attrs` (`attr_walk`), one fixed class or attribute set, or class 0 for a class-conditional run given none."""
    m = cfg["model"]
    kind = m.get("label_kind") if m.get("conditional") else None
    if classes is not None:
        if cls is not None:
            raise UserError("--class and --classes exclude each other: --classes 0,3,7 walks through classes")
        if kind != "class":
            raise UserError("--classes needs a class-conditional run (model.conditional=true on a dataset with "
                            f"classes); this run is {'conditioned on attributes' if kind else 'not conditional'}")
        return torch.cat([make_labels(cfg, 1, c) for c in classes])  # type: ignore[misc]
    if attr_walk is not None:
        if kind != "attributes":
            raise UserError("--attr-walk needs an attribute-conditional run (e.g. celeba64_cgan); this run is "
                            f"{'conditioned on classes' if kind else 'not conditional'}")
        names = [str(x) for x in m["label_names"]]
        lookup = {x.lower(): i for i, x in enumerate(names)}
        if attr_walk.strip().lower() not in lookup:
            raise UserError(f"--attr-walk {attr_walk!r}: choose one of {', '.join(names)}")
        base = make_labels(cfg, 2, None, attrs)
        assert base is not None
        base[:, lookup[attr_walk.strip().lower()]] = torch.tensor([0.0, 1.0])
        return base
    if kind == "class" and cls is None and attrs is None:
        cls = "0"
    return make_labels(cfg, 1, cls, attrs)


def frames_to_pil(x: torch.Tensor, upscale: int = 1) -> list[Image.Image]:
    """NCHW [-1, 1] -> Pillow images ("L" for one channel, "RGB" for three), nearest-neighbour upscaled."""
    return [to_pil(arr, upscale) for arr in to_uint8(x)]


def save_gif(x: torch.Tensor, path: Path, duration_ms: int = 80, upscale: int = 1) -> Path:
    """An animated GIF that loops forever (Pillow, no ffmpeg), written atomically. Pillow merges a frame that is
    identical to the one before it into a longer frame, so the timing is kept even then."""
    frames = frames_to_pil(x, upscale)

    def write(tmp: str) -> None:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)

    atomic_write_file(Path(path), write)
    return Path(path)


def _mp4_encoder() -> Any:
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError("--mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); --gif needs "
                        "nothing extra") from None
    return imageio_ffmpeg


def save_mp4(x: torch.Tensor, path: Path, fps: float = 12.5, upscale: int = 1) -> Path:
    """An H.264 MP4 through imageio-ffmpeg's bundled ffmpeg, the one optional encoder (GIFs need none)."""
    imageio_ffmpeg = _mp4_encoder()
    frames = frames_to_pil(x, upscale)
    w, h = frames[0].size

    def write(tmp: str) -> None:
        gen = imageio_ffmpeg.write_frames(tmp, (w, h), pix_fmt_in="rgb24", fps=fps, macro_block_size=1,
                                          output_params=["-f", "mp4"])
        gen.send(None)
        for im in frames:
            gen.send(im.convert("RGB").tobytes())
        gen.close()

    atomic_write_file(Path(path), write)
    return Path(path)


def check_suffix(path: str | Path, flag: str, suffix: str) -> Path:
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise UserError(f"{flag} {p}: the file name must end in {suffix}")
    return p


def interpolate_to_files(
    run_dir: str | Path, seeds: list[int], steps: int = 24, *, space: str = "z", mode: str | None = None,
    loop: bool = False, truncation_psi: float = 1.0, cls: str | None = None, classes: list[str] | None = None,
    attrs: str | None = None, attr_walk: str | None = None, gif: str | Path | None = None,
    grid: str | Path | None = None, out_dir: str | Path | None = None, mp4: str | Path | None = None,
    duration_ms: int = 80, upscale: int = 1, nrow: int | None = None, ema: bool = True, device: str = "cpu",
    overwrite: bool = False, latents: list[str | Path] | None = None,
) -> dict[str, Any]:
    """`ganforge interpolate`: a walk of a run as a GIF, an MP4, a grid PNG and/or one PNG per frame. Every target
    is checked before anything is generated, and none is replaced without `overwrite`. `latents`: latent files
    (from `ganforge project`) as the keyframes instead of seeds; they carry their own space and labels."""
    if gif is None and grid is None and out_dir is None and mp4 is None:
        raise UserError("say where the walk goes: --gif FILE.gif, --grid FILE.png, --out FOLDER or --mp4 FILE.mp4")
    if not 1 <= duration_ms <= 60000:
        raise UserError(f"--duration is milliseconds per frame, 1 to 60000; got {duration_ms}")
    if not 1 <= upscale <= 16:
        raise UserError(f"--upscale must be 1 to 16, got {upscale}")
    targets = [(gif, "--gif", ".gif"), (grid, "--grid", ".png"), (mp4, "--mp4", ".mp4")]
    for p, flag, suffix in targets:
        if p is not None:
            check_new_file(check_suffix(p, flag, suffix), overwrite)
    if mp4 is not None:
        _mp4_encoder()  # before the work, not after it
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    if latents is not None:
        from ganforge.latent.core import render
        from ganforge.latent.edit import load_latents

        if any(v is not None for v in (cls, classes, attrs, attr_walk)) or truncation_psi != 1.0:
            raise UserError("--latents carry their own labels and are not truncated: leave out --class, --classes, "
                            "--attr, --attr-walk and --truncation")
        frames, keyframes = latent_walk(G, load_latents(latents, G, "--latents")[0], steps, mode=mode, loop=loop)
        x = render(G, frames)
    else:
        labels = walk_labels(cfg, cls, classes, attrs, attr_walk)
        path = interpolation_path(G, seeds, steps, space=space, mode=mode, loop=loop, truncation_psi=truncation_psi,
                                  labels=labels)
        x, keyframes = render_path(G, path), path.keyframes
    written: dict[str, Any] = {"frames": len(x), "keyframes": keyframes}
    if out_dir is not None:
        written["files"] = [str(p) for p in save_images(x, Path(out_dir), prefix="frame-", overwrite=overwrite)]
    if grid is not None:
        written["grid"] = str(save_grid(x, Path(grid), nrow=nrow or steps, upscale=upscale))
    if gif is not None:
        written["gif"] = str(save_gif(x, Path(gif), duration_ms, upscale))
    if mp4 is not None:
        written["mp4"] = str(save_mp4(x, Path(mp4), 1000.0 / duration_ms, upscale))
    return written
