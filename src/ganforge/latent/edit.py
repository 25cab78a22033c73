"""Editing latents along a direction: the images of seeds or latent files moved by given strengths.

A strength is in standard deviations of the latent along the (unit) direction, InterFaceGAN's scale: in z that
std is 1, in w it is measured from samples of the mapping when the direction is computed (`Directions.scale`).
Strength 0 renders the unedited latent through the same calls as `ganforge sample` (seeds) or `core.render`
(latent files), so it is that image bit for bit. Style models may edit only some layers (w+ then).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ganforge.errors import UserError
from ganforge.latent.core import Latent, check_space, is_style, render
from ganforge.latent.directions import Directions
from ganforge.models.sampling import seed_latents

MAX_STRENGTH = 10.0
MAX_STRENGTHS = 64


def check_strengths(strengths: Sequence[float]) -> list[float]:
    values = [float(s) for s in strengths]
    if not values or len(values) > MAX_STRENGTHS:
        raise UserError(f"give 1 to {MAX_STRENGTHS} strengths, e.g. --strengths -3,-1.5,0,1.5,3; got {len(values)}")
    bad = [s for s in values if not math.isfinite(s) or abs(s) > MAX_STRENGTH]
    if bad:
        raise UserError(f"strength {bad[0]:g} is out of range: strengths are standard deviations of the latent along "
                        f"the direction, in [-{MAX_STRENGTH:g}, {MAX_STRENGTH:g}] (typically -3 to 3)")
    return values


def seeds_latent(G: nn.Module, seeds: Sequence[int], labels: torch.Tensor | None = None) -> Latent:
    """The z of each seed, exactly as `ganforge sample` draws it (`seed_latents`)."""
    if getattr(G, "num_labels", None) and labels is None:
        raise UserError("this generator is conditional: give labels for the seeds (--class or --attr)")
    return Latent(seed_latents(G, list(seeds)), "z", labels)


def layer_indices(G: nn.Module, layers: str | Sequence[int] | None) -> list[int] | None:
    if layers is None:
        return None
    if not is_style(G):
        raise UserError(f"--layers needs a style-based model; this run's generator is {type(G).__name__}")
    from ganforge.generate import style_layers

    return style_layers(G, layers) if isinstance(layers, str) else [int(i) for i in layers]


def _repeat(t: torch.Tensor | None, times: int) -> torch.Tensor | None:
    return None if t is None else t.repeat_interleave(times, 0)


@torch.no_grad()
def edited_latents(
    G: nn.Module, latent: Latent, directions: Directions, name_or_index: str | int, strengths: Sequence[float],
    layers: str | Sequence[int] | None = None,
) -> Latent:
    """Every latent at every strength (latent-major: row i holds latent i at each strength in turn). z directions
    move z; w directions move every ws of a style model (or those of `layers`), so the result is in w+."""
    from ganforge.latent.core import fingerprint

    if directions.fingerprint != fingerprint(G):
        raise UserError(f"these directions were computed for another generator (fingerprint {directions.fingerprint}, "
                        f"this run's is {fingerprint(G)}); compute them again for this run")
    k = directions.index(name_or_index)
    values = check_strengths(strengths)
    idx = layer_indices(G, layers)
    check_space(G, latent.space)
    s = torch.tensor(values, dtype=torch.float32) * float(directions.scale[k])
    v = directions.vectors[k].float()
    reps = len(values)
    noise = None if latent.noise is None else [n if n.shape[0] == 1 else _repeat(n, reps) for n in latent.noise]
    if directions.space == "z":
        if latent.space != "z":
            raise UserError(f"a z direction cannot edit a {latent.space} latent; use directions of this run's "
                            f"{latent.space} space (style models: w)")
        if idx is not None:
            raise UserError("--layers applies to w directions of style models; this direction is in z")
        z = latent.values.float().repeat_interleave(reps, 0)
        moved = z + (s.repeat(len(latent))[:, None] * v).to(z)
        return Latent(moved, "z", _repeat(latent.labels, reps), noise, dict(latent.info))
    ws = torch.cat([latent_ws(G, latent, i) for i in range(len(latent))]).repeat_interleave(reps, 0)
    delta = (s.repeat(len(latent))[:, None] * v).to(ws)
    target = list(range(ws.shape[1])) if idx is None else idx
    ws[:, target] = ws[:, target] + delta[:, None, :]
    return Latent(ws, "w+", _repeat(latent.labels, reps), noise, dict(latent.info))


def latent_ws(G: nn.Module, latent: Latent, i: int) -> torch.Tensor:
    """The ws of latent i on the CPU, one at a time: `ganforge sample` maps a seed alone, and CPU matmuls round
    differently per batch size, so this keeps strength 0 bitwise equal to the seed's image."""
    one = Latent(latent.values[i : i + 1], latent.space, None if latent.labels is None else latent.labels[i : i + 1])
    return one.ws(G).cpu()


def edit(
    G: nn.Module, latent_or_seeds: Latent | Sequence[int], directions: Directions, name_or_index: str | int,
    strengths: Sequence[float], layers: str | Sequence[int] | None = None, labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Images (NCHW, CPU, [-1, 1]) of each latent (or seed) at each strength, latent-major; see `edited_latents`.
    Style models render one image at a time so that strength 0 is the seed's (or latent's) image bit for bit."""
    latent = latent_or_seeds if isinstance(latent_or_seeds, Latent) else seeds_latent(G, latent_or_seeds, labels)
    moved = edited_latents(G, latent, directions, name_or_index, strengths, layers)
    return render(G, moved, batch_size=1 if is_style(G) else 64)


def load_latents(paths: Sequence[str | Path], G: nn.Module, flag: str = "--latent") -> tuple[Latent, list[str]]:
    """Latent files (from `ganforge project`) joined into one Latent, and a label per latent ("FILE#i"); `flag`
    names the option in errors."""
    from ganforge.latent.core import load_latent

    parts = [load_latent(Path(p), G) for p in paths]
    spaces = {x.space for x in parts}
    if len(spaces) > 1:
        raise UserError(f"{flag} files in different spaces ({', '.join(sorted(spaces))}); use files of one space")
    if len({x.labels is None for x in parts}) > 1 or len({x.noise is None for x in parts}) > 1:
        raise UserError(f"{flag} files differ in carrying labels or noise maps; use files made the same way")
    labels = None if parts[0].labels is None else torch.cat([x.labels for x in parts])  # type: ignore[misc]
    noise = None
    if parts[0].noise is not None:
        noise = [torch.cat([x.noise[j].expand(len(x), *x.noise[j].shape[1:]) for x in parts])  # type: ignore[index]
                 for j in range(len(parts[0].noise))]
    names = [f"{p}#{i}" for p, x in zip(paths, parts, strict=True) for i in range(len(x))]
    return Latent(torch.cat([x.values for x in parts]), parts[0].space, labels, noise), names


def split_direction(text: str) -> tuple[Path, str]:
    path, sep, name = str(text).rpartition(":")
    if not sep or not path or not name.strip():
        raise UserError(f"--direction {text!r}: write FILE.npz:NAME or FILE.npz:INDEX (from ganforge directions)")
    return Path(path), name.strip()


def _tag(strength: float) -> str:
    return f"{strength:+g}".replace(".", "p")


def edit_to_files(
    run_dir: str | Path, direction: str, strengths: Sequence[float], *, seeds: Sequence[int] | None = None,
    latents: Sequence[str | Path] | None = None, out_dir: str | Path | None = None, grid: str | Path | None = None,
    gif: str | Path | None = None, layers: str | None = None, cls: str | None = None, attrs: str | None = None,
    upscale: int = 1, duration_ms: int = 200, ema: bool = True, device: str = "cpu", overwrite: bool = False,
) -> dict[str, object]:
    """`ganforge edit`: seeds or latent files moved along one direction, as one PNG per (latent, strength) with a
    manifest.json, a grid (a row per latent, a column per strength) and/or a GIF (a frame per strength). Every
    input and target is checked before anything is rendered; no file is replaced without `overwrite`."""
    import json

    from ganforge.fileio import atomic_write_bytes
    from ganforge.generate import check_suffix, load_generator, make_labels, save_gif
    from ganforge.images import check_new_file, save_grid, save_png, to_uint8

    if (seeds is None) == (latents is None):
        raise UserError("give either --seeds 1,2,3 or --latent FILE.npz (from ganforge project)")
    if out_dir is None and grid is None and gif is None:
        raise UserError("say where the edits go: --out FOLDER, --grid FILE.png or --gif FILE.gif")
    if not 1 <= upscale <= 16:
        raise UserError(f"--upscale must be 1 to 16, got {upscale}")
    values = check_strengths(strengths)
    if len(set(values)) != len(values) or (seeds is not None and len(set(seeds)) != len(seeds)):
        raise UserError("a strength or seed is given twice; list each once")
    path, name = split_direction(direction)
    for p, flag, suffix in [(grid, "--grid", ".png"), (gif, "--gif", ".gif")]:
        if p is not None:
            check_new_file(check_suffix(p, flag, suffix), overwrite)
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    dirs = Directions.load(path, G)
    k = dirs.index(name)
    if seeds is not None:
        latent = seeds_latent(G, seeds, make_labels(cfg, len(seeds), cls, attrs))
        keys, tags = [{"seed": s} for s in seeds], [f"seed{s}" for s in seeds]
    else:
        latent, names = load_latents(list(latents or []), G)
        keys, tags = [{"latent": n} for n in names], [f"latent{i}" for i in range(len(names))]
    files: list[Path] = []
    if out_dir is not None:
        folder = Path(out_dir)
        if folder.exists() and not folder.is_dir():
            raise UserError(f"--out {folder} is a file; give a folder")
        files = [folder / f"{t}_{_tag(s)}.png" for t in tags for s in values]
        clash = [p for p in [*files, folder / "manifest.json"] if p.exists()]
        if clash and not overwrite:
            raise UserError(f"{clash[0]} already exists; choose an empty --out folder or pass --overwrite")
    x = edit(G, latent, dirs, k, values, layers)
    written: dict[str, object] = {"direction": dirs.names[k], "images": len(x)}
    if out_dir is not None:
        folder.mkdir(parents=True, exist_ok=True)
        for p, arr in zip(files, to_uint8(x), strict=True):
            save_png(arr, p)
        manifest = [{**key, "direction": dirs.names[k], "strength": s, "file": files[i * len(values) + j].name}
                    for i, key in enumerate(keys) for j, s in enumerate(values)]
        atomic_write_bytes(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
        written["files"] = [str(p) for p in files]
        written["manifest"] = str(folder / "manifest.json")
    if grid is not None:
        written["grid"] = str(save_grid(x, Path(grid), nrow=len(values), upscale=upscale))
    if gif is not None:
        frames = x.view(len(latent), len(values), *x.shape[1:]).transpose(0, 1)  # (strength, latent, C, H, W)
        frames = torch.cat(frames.unbind(1), dim=-1)  # the latents side by side in each frame
        written["gif"] = str(save_gif(frames, Path(gif), duration_ms, upscale))
    return written
