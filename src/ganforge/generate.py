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
    overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """`ganforge sample`: a grid PNG and/or one PNG per image. Defaults to RUN_DIR/sample-grid.png."""
    if grid is None and out_dir is None:
        grid = Path(run_dir) / f"sample-seed{seed}.png"
    if grid is not None:
        check_new_file(Path(grid), overwrite, own_dir=Path(run_dir))
    G, cfg = load_generator(run_dir, ema=ema, device=device)
    x = sample(G, n, seed=seed)
    written: dict[str, Any] = {}
    if out_dir is not None:
        written["files"] = [str(p) for p in save_images(x, Path(out_dir), overwrite=overwrite)]
    if grid is not None:
        written["grid"] = str(save_grid(x, Path(grid), nrow=nrow))
    return written
