"""Using a trained generator: load it from a run directory and sample images, grids or files.

A run directory is self-describing (config.yaml + checkpoints), so nothing else is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ganforge.data.pipeline import seeded_generator
from ganforge.errors import UserError
from ganforge.images import check_new_file, save_grid, save_images
from ganforge.models import build_generator
from ganforge.training import checkpoint as ckpt
from ganforge.training.run import RunDir
from ganforge.training.trainer import resolve_device


def load_generator(
    run_dir: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | Path | None = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The generator of a run (G_ema when the run kept one and `ema` is true), in eval mode."""
    run = RunDir.open(Path(run_dir))
    cfg = run.read_config()
    if checkpoint is not None:
        found = ckpt.read_checkpoint(Path(checkpoint))
    else:
        found, _ = ckpt.latest_checkpoint(run.checkpoints)
        if found is None:
            raise UserError(f"{run.path} has no intact checkpoint yet; train first (or wait for the first checkpoint)")
    if found.meta.get("config"):
        cfg = found.meta["config"]
    G = build_generator(cfg)
    prefix = "G_ema" if ema and any(k.startswith("G_ema.") for k in found.tensors) else "G"
    ckpt.load_module(prefix, G, found.tensors, f" {found.path.name} ({found.describe()})")
    return G.to(resolve_device(device)).eval(), cfg


def make_labels(cfg: dict[str, Any], n: int, cls: str | int | None = None, attrs: str | None = None) -> torch.Tensor | None:
    """Labels for n samples of a conditional run: one class (by index or name, case-insensitive), every
    class in turn (default), or attribute values like "Smiling=1,Male=0" (unnamed attributes are 0)."""
    m = cfg["model"]
    if not m.get("conditional"):
        if cls is not None or attrs is not None:
            raise UserError("this run's model is not conditional; --class/--attr need a run trained with model.conditional=true")
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


@torch.no_grad()
def sample(
    G: torch.nn.Module, n: int, *, seed: int = 0, batch_size: int = 256, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """n images in [-1, 1] (NCHW, CPU). The same seed gives the same images, whatever the batch size."""
    device = next(G.parameters()).device
    z = torch.randn(n, G.z_dim, generator=seeded_generator(seed, 0))
    out = []
    for i in range(0, n, batch_size):
        zb = z[i : i + batch_size].to(device)
        lb = None if labels is None else labels[i : i + batch_size].to(device)
        out.append(G(zb, lb).float().cpu())
    return torch.cat(out) if out else torch.empty(0)


def sample_to_files(
    run_dir: str | Path, *, n: int = 64, seed: int = 0, grid: str | Path | None = None,
    out_dir: str | Path | None = None, ema: bool = True, device: str = "cpu", nrow: int | None = None,
    overwrite: bool = False, cls: str | int | None = None, attrs: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """`ganforge sample`: a grid PNG and/or one PNG per image. Defaults to RUN_DIR/sample-grid.png."""
    if grid is None and out_dir is None:
        grid = Path(run_dir) / f"sample-seed{seed}.png"
    if grid is not None:
        check_new_file(Path(grid), overwrite, own_dir=Path(run_dir))
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    labels = make_labels(cfg, n, cls, attrs)
    x = sample(G, n, seed=seed, labels=labels)
    if nrow is None and labels is not None and cls is None and attrs is None and len(cfg["model"]["label_names"]) <= 16:
        nrow = len(cfg["model"]["label_names"])  # one class per column
    written: dict[str, Any] = {}
    if out_dir is not None:
        written["files"] = [str(p) for p in save_images(x, Path(out_dir), overwrite=overwrite)]
    if grid is not None:
        written["grid"] = str(save_grid(x, Path(grid), nrow=nrow))
    return written
