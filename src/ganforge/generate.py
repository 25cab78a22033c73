"""Using a trained generator: load it from a run directory and sample images, grids or files.

A run directory is self-describing (config.yaml + checkpoints), so nothing else is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ganforge.data.pipeline import seeded_generator
from ganforge.device import resolve_device
from ganforge.errors import UserError
from ganforge.images import check_new_file, save_grid, save_images
from ganforge.models import build_generator
from ganforge.training import checkpoint as ckpt
from ganforge.training.run import RunDir


def load_generator(
    run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | Path | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator of a run (G_ema when the run kept one and `ema` is true), in eval mode."""
    run = RunDir.open(Path(run_dir))
    cfg = run.read_config()
    if checkpoint is not None:
        found = ckpt.read_checkpoint(Path(checkpoint))
    else:
        found = run.latest()
        if found is None:
            raise UserError(f"{run.path} has no intact checkpoint yet; train first (or wait for the first checkpoint)")
    if found.meta.get("config"):
        cfg = found.meta["config"]
    G = build_generator(cfg)
    ckpt.load_module(found.generator_prefix(ema), G, found.tensors, f" {found.path.name} ({found.describe()})")
    return G.to(resolve_device(device)).eval(), cfg


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


def style_models() -> list[str]:
    from ganforge.models import MODELS

    return [name for name in MODELS.names() if MODELS.get(name).styles]


def require_styles(G: torch.nn.Module, what: str) -> None:
    """Truncation and style mixing act on w; a model without a mapping network has none."""
    if not hasattr(G, "mapping") or not hasattr(G, "synthesis"):
        raise UserError(f"{what} needs a style-based model ({', '.join(style_models())}); "
                        f"this run's generator is {type(G).__name__}")  # fmt: skip


@torch.no_grad()
def sample(
    G: torch.nn.Module, n: int, *, seed: int = 0, batch_size: int = 256, labels: torch.Tensor | None = None,
    truncation_psi: float = 1.0,
) -> torch.Tensor:  # fmt: skip
    """n images in [-1, 1] (NCHW, CPU). The same seed gives the same images, whatever the batch size.
    `truncation_psi` < 1 trades variety for typicality on style-based models (1 = plain sampling)."""
    kwargs = {}
    if truncation_psi != 1.0:
        require_styles(G, "truncation")
        kwargs["truncation_psi"] = float(truncation_psi)
    device = next(G.parameters()).device
    z = torch.randn(n, G.z_dim, generator=seeded_generator(seed, 0))
    out = []
    for i in range(0, n, batch_size):
        zb = z[i : i + batch_size].to(device)
        lb = None if labels is None else labels[i : i + batch_size].to(device)
        # progan/stylegan2 have linear outputs (as in their papers): clamp to the image range here
        out.append(G(zb, lb, **kwargs).float().clamp_(-1.0, 1.0).cpu())
    return torch.cat(out) if out else torch.empty(0)


def seed_latents(G: torch.nn.Module, seeds: list[int]) -> torch.Tensor:
    """One z per seed, the z that `sample(G, 1, seed=s)` uses, so a seed names the same image everywhere."""
    return torch.cat([torch.randn(1, G.z_dim, generator=seeded_generator(s, 0)) for s in seeds])


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
                    f"(this model's layers drive resolutions {', '.join(map(str, res))})")  # fmt: skip


@torch.no_grad()
def style_mix(
    G: torch.nn.Module, row_seeds: list[int], col_seeds: list[int], layers: str | list[int] = "coarse",
    truncation_psi: float = 1.0, labels: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
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
) -> dict[str, Any]:  # fmt: skip
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
) -> Path:  # fmt: skip
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
