"""Projection (GAN inversion): the latent whose image best matches a target, by gradient descent through G.

One optimiser for every family. What is optimised:
- z (every family; the default for non-style models): kept ON the Gaussian shell |z| = sqrt(z_dim) after every
  step rather than penalised off it. A d-dimensional standard Gaussian puts nearly all its mass in a thin shell of
  that radius, so latents the generator was trained on all lie there; an unconstrained z drifts off it into
  regions G never saw, where images fit the target through artefacts, and a penalty would need its weight tuned
  per model. The projection is free, weight-less, and makes slerp/edits of the result behave like a seed's z.
- w / w+ (style models; w is the default): start from the average w (over 10,000 mapped samples, as the
  stylegan2-ada projector), with Gaussian exploration noise on w that decays to zero over the first 75% of the
  steps, and every synthesis layer's noise map optimised too, under the official projector's regulariser (the
  squared autocorrelation of each map with its one-pixel shifts, at every octave down to 8x8, weight 1e5) and
  renormalised to zero mean and unit variance after every step, so the noise cannot smuggle in the image.
- labels of conditional models, unless fixed: a soft label (softmax over classes, or a sigmoid per attribute)
  optimised with the latent, so the answer says which class the generator thinks the target is.

Adam with the official projector's learning-rate ramps (up over the first 5%, cosine down over the last 25%).
Restarts run side by side in one batch (restart 0 from the mean or a seeded draw, the others from other seeded
draws) and the best per target is kept. The same call on the CPU gives bitwise the same result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.data.pipeline import seeded_generator
from ganforge.errors import UserError
from ganforge.latent.core import Latent, check_space, is_style, noise_layers, render
from ganforge.latent.perceptual import ProjectionLoss
from ganforge.models.inference import inference_copy

DEFAULT_STEPS = 100
DEFAULT_RESTARTS = 2
MAX_STEPS = 10000
MAX_RESTARTS = 64
LR = 0.1
LR_RAMPDOWN, LR_RAMPUP = 0.25, 0.05  # the stylegan2-ada projector's schedule
W_NOISE, W_NOISE_RAMP = 0.05, 0.75  # exploration noise on w (in units of w's std), gone after 75% of the steps
NOISE_REG = 1e5  # weight of the noise maps' autocorrelation penalty (official)
W_AVG_SAMPLES = 10000
LABEL_KINDS = ("class", "attributes")


@dataclass
class Projection:
    """`latent`: the best latent per target (space as asked; labels and style noise filled where optimised).
    `images`: their reconstructions (N, C, H, W) in [-1, 1], CPU, exactly what `core.render` gives the latent.
    `losses`: per target {"pixel", "feature", "total"} of those images. `frames`: with `record_every`, the chosen
    restart's image every that many steps (each (N, C, H, W)), the optimisation as a film."""

    latent: Latent
    images: torch.Tensor
    losses: list[dict[str, float]]
    frames: list[torch.Tensor] = field(default_factory=list)


class ProjectionCancelled(Exception):
    """The progress callback returned False: the projection stopped and returned nothing."""


def lr_at(t: float) -> float:
    """Learning rate at fraction t of the run: a 5% linear warm-up and a 25% cosine ramp-down (stylegan2-ada)."""
    ramp = min(1.0, (1.0 - t) / LR_RAMPDOWN)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return LR * ramp * min(1.0, t / LR_RAMPUP)


def noise_regularizer(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per item (B,): sum over maps and octaves (down to 8x8) of the squared mean products of each map with its
    one-pixel roll along x and along y -- zero for white noise, large when a map carries structure (official)."""
    total = torch.zeros(maps[0].shape[0], device=maps[0].device)
    for m in maps:
        x = m
        while True:
            total = total + (x * torch.roll(x, 1, dims=3)).mean(dim=(1, 2, 3)).square()
            total = total + (x * torch.roll(x, 1, dims=2)).mean(dim=(1, 2, 3)).square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total


@torch.no_grad()
def _renormalise(maps: list[torch.Tensor]) -> None:
    for m in maps:
        m.sub_(m.mean(dim=(1, 2, 3), keepdim=True))
        m.mul_(m.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt())


@contextmanager
def _frozen(G: nn.Module, maps: list[torch.Tensor] | None) -> Iterator[None]:
    """G in eval mode with its weights out of autograd, and (style models) the batch's noise maps in place of the
    layers' fixed noise; all restored afterwards, whatever happens."""
    grads = [p.requires_grad for p in G.parameters()]
    training = G.training
    layers = noise_layers(G) if maps is not None else []
    saved = [m.noise_const for m in layers]
    G.eval()
    for p in G.parameters():
        p.requires_grad_(False)
    try:
        for layer, m in zip(layers, maps or [], strict=True):
            layer.noise_const = m  # (B, 1, r, r) broadcasts over the layer's (B, C, r, r) activations
        yield
    finally:
        for layer, s in zip(layers, saved, strict=True):
            layer.noise_const = s
        for p, g in zip(G.parameters(), grads, strict=True):
            p.requires_grad_(g)
        G.train(training)


def _check(G: nn.Module, targets: torch.Tensor, steps: int, restarts: int, label_kind: str) -> None:
    want = (int(G.channels), int(G.resolution), int(G.resolution))
    if targets.dim() != 4 or tuple(targets.shape[1:]) != want or len(targets) == 0:
        raise UserError(f"projection targets must be (N, {want[0]}, {want[1]}, {want[2]}) images in [-1, 1] (this "
                        f"generator's size), got {tuple(targets.shape)}; convert them with latent.targets.load_targets")
    if not torch.isfinite(targets).all():
        raise UserError("projection targets contain NaN or infinite values")
    if not 1 <= steps <= MAX_STEPS:
        raise UserError(f"--steps must be 1 to {MAX_STEPS}, got {steps}")
    if not 1 <= restarts <= MAX_RESTARTS:
        raise UserError(f"--restarts must be 1 to {MAX_RESTARTS}, got {restarts}")
    if label_kind not in LABEL_KINDS:
        raise UserError(f"label kind must be one of {', '.join(LABEL_KINDS)}, got {label_kind!r}")


def _fixed_labels(G: nn.Module, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if labels is None:
        return None
    if not getattr(G, "num_labels", None):
        raise UserError("this generator is not conditional; --class/--attr need a conditional run")
    labels = torch.as_tensor(labels)
    if len(labels) == 1:
        labels = labels.expand(n, *labels.shape[1:])
    if len(labels) != n:
        raise UserError(f"{len(labels)} labels for {n} targets: give one, or one per target")
    return labels.clone()


def _w_stats(G: nn.Module, labels: torch.Tensor | None, label_kind: str, seed: int) -> tuple[torch.Tensor, float]:
    """(w_avg (N or 1, w_dim), w_std): the mean of W_AVG_SAMPLES mapped draws (per fixed label when given) and the
    root mean squared distance of a draw from it, in units for the exploration noise."""
    device = next(G.parameters()).device
    gen = seeded_generator(seed, 7)
    z = torch.randn(W_AVG_SAMPLES, G.z_dim, generator=gen).to(device)
    num = getattr(G, "num_labels", None)
    if not num:
        w = G.mapping(z, None, update_w_avg=False)[:, 0]
        avg = w.mean(0, keepdim=True)
        return avg, float((w - avg).square().sum(1).mean().sqrt())
    if labels is None:  # no label given: the average over random labels of the kind the run was trained with
        if label_kind == "class":
            y = F.one_hot(torch.randint(num, (W_AVG_SAMPLES,), generator=gen), num).float()
        else:
            y = (torch.rand(W_AVG_SAMPLES, num, generator=gen) < 0.5).float()
        w = G.mapping(z, y.to(device), update_w_avg=False)[:, 0]
        avg = w.mean(0, keepdim=True)
        return avg, float((w - avg).square().sum(1).mean().sqrt())
    avgs, var = [], []
    for lb in labels:
        w = G.mapping(z, lb[None].expand(W_AVG_SAMPLES, *lb.shape).to(device), update_w_avg=False)[:, 0]
        avgs.append(w.mean(0, keepdim=True))
        var.append((w - avgs[-1]).square().sum(1).mean())
    return torch.cat(avgs), float(torch.stack(var).mean().sqrt())


def project(
    G: nn.Module, targets: torch.Tensor, *, space: str | None = None, steps: int = DEFAULT_STEPS,
    restarts: int = DEFAULT_RESTARTS, seed: int = 0, loss: ProjectionLoss | None = None,
    labels: torch.Tensor | None = None, callback: Callable[[int, int], bool | None] | None = None,
    label_kind: str = "class", record_every: int = 0,
) -> Projection:
    """Project targets (N, C, H, W) in [-1, 1], at the generator's resolution and channels, into its latent space:
    all targets and restarts in one batch. `space`: z, w or w+ (default w for style models, else z). `loss`:
    default pixel MSE only (see latent/perceptual.py; `ganforge project` uses the run's domain network too).
    `labels`: fix a conditional model's labels (one, or one per target) instead of optimising soft ones, of
    `label_kind` "class" or "attributes". `callback(step_done, steps)` runs after every step; False cancels
    (ProjectionCancelled). Deterministic for a seed on the CPU."""
    space = check_space(G, space or ("w" if is_style(G) else "z"))
    _check(G, targets, steps, restarts, label_kind)
    loss = loss or ProjectionLoss(None)
    device = next(G.parameters()).device
    loss.to(device)
    n, R = len(targets), restarts
    B = n * R  # restart-major: item r * n + i is restart r of target i
    gen = seeded_generator(seed, 11)
    num = getattr(G, "num_labels", None) or 0
    fixed = _fixed_labels(G, labels, n)
    style = is_style(G)
    target_b = targets.to(device).float().repeat(R, 1, 1, 1)
    target_feats = loss.target_features(target_b)

    params: list[torch.Tensor] = []
    if space == "z":
        z0 = torch.randn(B, G.z_dim, generator=gen)
        lat = (z0 * math.sqrt(G.z_dim) / z0.norm(dim=1, keepdim=True)).to(device).requires_grad_(True)
        lat_std = 1.0
    else:
        with torch.no_grad():
            avg, lat_std = _w_stats(G, fixed, label_kind, seed)
            starts = avg.expand(n, -1).repeat(R, 1)
            if R > 1:  # restarts 1..R-1 from seeded draws of the mapping, pulled halfway to the average
                z = torch.randn(B - n, G.z_dim, generator=gen).to(device)
                lb = None
                if num:
                    lb = fixed.repeat(R - 1, *[1] * (fixed.dim() - 1)).to(device) if fixed is not None else \
                        torch.full((B - n, num), 1.0 / num if label_kind == "class" else 0.5, device=device)
                drawn = G.mapping(z, lb, update_w_avg=False)[:, 0]
                starts = torch.cat([starts[:n], avg.expand(n, -1).repeat(R - 1, 1).lerp(drawn, 0.5)])
        lat = starts.clone()
        if space == "w+":
            lat = lat[:, None].repeat(1, G.num_ws, 1)
        lat = lat.contiguous().requires_grad_(True)
    params.append(lat)

    logits = None
    if num and fixed is None and not (style and space != "z"):  # style models read the label through w
        logits = torch.zeros(B, num)
        if R > 1 and label_kind == "class":  # restart r leans towards class (r - 1): different basins per restart
            for r in range(1, R):
                logits[r * n : (r + 1) * n, (r - 1) % num] = 2.0
        logits = logits.to(device).requires_grad_(True)
        params.append(logits)

    maps = None
    if style:
        maps = [torch.randn(B, 1, *m.noise_const.shape[-2:], generator=gen).to(device).requires_grad_(True)
                for m in noise_layers(G)]
        params += maps

    def soft_labels() -> torch.Tensor | None:
        if logits is not None:
            return logits.softmax(1) if label_kind == "class" else logits.sigmoid()
        return None if fixed is None else fixed.repeat(R, *[1] * (fixed.dim() - 1)).to(device)

    # conv models optimise through an inference copy (BatchNorm folded, channels-last: same maps to round-off,
    # faster on CPUs); the answer is scored and rendered with G itself, so files reproduce it exactly
    fast = G if style else inference_copy(G)

    def synth(x: torch.Tensor) -> torch.Tensor:
        if not style:
            return fast(x, soft_labels())
        if space == "z":
            ws = G.mapping(x, soft_labels(), update_w_avg=False)
        else:
            ws = x[:, None].repeat(1, G.num_ws, 1) if space == "w" else x
        return G.synthesis(ws, noise_mode="const")

    opt = torch.optim.Adam(params, lr=LR, betas=(0.9, 0.999))
    frames: list[torch.Tensor] = []
    with _frozen(G, maps):
        for step in range(steps):
            t = step / steps
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
            noise_scale = lat_std * W_NOISE * max(0.0, 1.0 - t / W_NOISE_RAMP) ** 2
            jitter = torch.randn(lat.shape, generator=gen).to(device) * noise_scale
            # clamped as rendered: a linear-output model's pixel beyond [-1, 1] shows as the bound, so it matches a
            # saturated target pixel instead of being pulled back into range
            images = synth(lat + jitter).clamp(-1.0, 1.0)
            parts = loss(images, target_b, target_feats)
            total = parts["total"]
            if maps is not None:
                total = total + NOISE_REG * noise_regularizer(maps)
            opt.zero_grad(set_to_none=True)
            total.sum().backward()  # a sum: each item's gradient is its own, whatever the batch
            opt.step()
            with torch.no_grad():
                if space == "z":
                    lat.mul_(math.sqrt(G.z_dim) / lat.norm(dim=1, keepdim=True))
                if maps is not None:
                    _renormalise(maps)
            if record_every and (step % record_every == 0 or step == steps - 1):
                frames.append(images.detach().float().clamp(-1, 1).cpu())
            if callback is not None and callback(step + 1, steps) is False:
                raise ProjectionCancelled(f"projection cancelled after {step + 1} of {steps} steps")

    with torch.no_grad():
        final = Latent(lat.detach().cpu(), space, None if soft_labels() is None else soft_labels().detach().cpu(),
                       None if maps is None else [m.detach().cpu() for m in maps])
        everything = render(G, final, batch_size=1)
        scores = loss(everything.to(device), target_b, target_feats)["total"].view(R, n)
        best = scores.argmin(dim=0).cpu()  # per target, the restart with the lowest final loss
        pick = best * n + torch.arange(n)
        latent = Latent(final.values[pick].clone(), space,
                        None if final.labels is None else final.labels[pick].clone(),
                        None if final.noise is None else [m[pick].clone() for m in final.noise],
                        {"restart": best.tolist(), "steps": steps, "restarts": R, "seed": seed})
        images = everything[pick].clone()
        parts = loss(
            images.to(device),
            targets.to(device).float(),
            None if target_feats is None else [f[:n] for f in target_feats],
        )
        losses = [{k: float(v[i]) for k, v in parts.items()} for i in range(n)]
    if latent.labels is not None and fixed is not None:
        latent.labels = fixed.clone()
    return Projection(latent, images, losses, [f[pick] for f in frames])


# --- `ganforge project`: targets in, latent files and PNGs out ------------------------------------------------------

GIF_FRAMES = 50  # frames of the --gif film, whatever the number of steps


def output_stems(targets: list[str], suffixes: tuple[str, ...]) -> list[str]:
    """A distinct file stem per target: its own name, then -2, -3, ... when another target (from another folder, or
    whose name is this one's output, like x-compare.png next to x.png) would claim the same files."""
    taken: set[str] = set()
    stems = []
    for t in targets:
        base = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(t).stem) or "target"
        stem, k = base, 1
        while any(stem + s in taken for s in suffixes):
            k += 1
            stem = f"{base}-{k}"
        taken.update(stem + s for s in suffixes)
        stems.append(stem)
    return stems


def project_to_files(
    run_dir: str | Path, targets: Sequence[str | Path], out_dir: str | Path, *, space: str | None = None,
    steps: int | None = None, restarts: int | None = None, network: str | None = None,
    network_weights: str | None = None, cls: str | None = None, attrs: str | None = None, gif: bool = False,
    seed: int = 0, ema: bool = True, device: str = "cpu", overwrite: bool = False,
) -> dict[str, Any]:
    """`ganforge project`: per target, OUT/<stem>.npz (the latent, its space, the generator's fingerprint, the final
    losses), <stem>.png (the reconstruction, as `ganforge sample` writes images), <stem>-compare.png (target |
    reconstruction) and, with `gif`, <stem>.gif (the optimisation). Every target and output name is checked, and
    every image decoded, before the first step; nothing is written unless all of it can be."""
    from ganforge.generate import load_generator, make_labels, save_gif
    from ganforge.images import make_grid, save_png, to_uint8
    from ganforge.latent.core import save_latent
    from ganforge.latent.perceptual import build_network, default_network_name
    from ganforge.latent.targets import load_targets

    steps = DEFAULT_STEPS if steps is None else steps
    restarts = DEFAULT_RESTARTS if restarts is None else restarts
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file; give a folder")
    suffixes = (".npz", ".png", "-compare.png") + ((".gif",) if gif else ())
    stems = output_stems([str(t) for t in targets], suffixes)
    clash = [folder / (s + x) for s in stems for x in suffixes if (folder / (s + x)).exists()]
    if clash and not overwrite:
        raise UserError(f"{clash[0]} already exists; choose an empty --out folder or pass --overwrite")
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    space = check_space(G, space or ("w" if is_style(G) else "z"))
    _check(G, torch.zeros(1, int(G.channels), int(G.resolution), int(G.resolution)), steps, restarts, "class")
    x, notes = load_targets(list(targets), cfg)
    labels = make_labels(cfg, len(x), cls, attrs) if (cls is not None or attrs is not None) else None
    name = network or default_network_name(cfg)
    loss = ProjectionLoss(build_network(name, network_weights))
    kind = "attributes" if cfg["model"].get("label_kind") == "attributes" else "class"
    p = project(G, x, space=space, steps=steps, restarts=restarts, seed=seed, loss=loss, labels=labels,
                label_kind=kind, record_every=max(1, steps // GIF_FRAMES) if gif else 0)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (stem, target) in enumerate(zip(stems, targets, strict=True)):
        one = Latent(p.latent.values[i : i + 1], p.latent.space,
                     None if p.latent.labels is None else p.latent.labels[i : i + 1],
                     None if p.latent.noise is None else [m[i : i + 1] for m in p.latent.noise])
        save_latent(folder / f"{stem}.npz", one, G, losses=p.losses[i], target=str(target), network=name,
                    steps=steps, restarts=restarts, seed=seed, restart=p.latent.info["restart"][i])
        save_png(to_uint8(p.images[i : i + 1])[0], folder / f"{stem}.png")
        save_png(make_grid(torch.cat([x[i : i + 1], p.images[i : i + 1]]), nrow=2), folder / f"{stem}-compare.png")
        if gif:
            film = torch.cat([torch.cat([x[i : i + 1], f[i : i + 1]], dim=-1) for f in p.frames])
            save_gif(film, folder / f"{stem}.gif", duration_ms=80)
        written.append({"target": str(target), "stem": stem, **p.losses[i]})
    return {"notes": notes, "network": name, "space": space, "projections": written}
