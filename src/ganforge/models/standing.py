"""Standing statistics: BatchNorm running statistics recomputed for the weights they will be used with.

G_ema's weights are an average of G's, but its BatchNorm buffers are copied from G (training/ema.py): statistics of
other weights. Recomputing them from G_ema's own forward passes (StudioGAN's "standing statistics", after Brock et
al.'s BigGAN) fixes that; measured on fashion-mnist (benchmarks/standing_stats.py, 3 seeds) it lowers FID for dcgan
and mlp, so it is on by default wherever ganforge samples or evaluates G_ema. The pass is seeded and its size fixed,
so the same checkpoint always gives the same statistics (they are also stored in checkpoints written during training).
"""

from __future__ import annotations

import torch
from torch import nn

from ganforge.data.pipeline import seeded_generator
from ganforge.errors import warn
from ganforge.models.sampling import random_labels

BATCHES = 16  # forward passes averaged (cumulative moving average: every batch weighs the same)
BATCH_SIZE = 64
SEED = 0x5EED
META_KEY = "standing_stats"  # checkpoint metadata: {"batches", "batch_size", "seed"} when G_ema's stats are standing


def batchnorms(G: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers with running statistics (the ones standing statistics recompute)."""
    return [m for m in G.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def settings() -> dict[str, int]:
    return {"batches": BATCHES, "batch_size": BATCH_SIZE, "seed": SEED}


@torch.no_grad()
def apply_standing_stats(
    G: nn.Module, batches: int = BATCHES, batch_size: int = BATCH_SIZE, seed: int = SEED, label_kind: str | None = None
) -> bool:
    """Reset G's BatchNorm running statistics and re-estimate them as the plain average over `batches` seeded
    batches of G's own train-mode forward passes. G is changed in place and left in eval mode; its weights are not
    touched. Conditional generators get labels as evaluation draws them (models/sampling.random_labels: uniform
    classes, or fair attribute bits for `label_kind` "attributes"). Returns False (and does nothing) without BatchNorm."""
    bns = batchnorms(G)
    if not bns:
        return False
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the passes
    device = next(G.parameters()).device
    gen = seeded_generator(seed, 0)
    G.train()
    try:
        for i in range(batches):
            z = torch.randn(batch_size, G.z_dim, generator=gen).to(device)
            labels = random_labels(G, batch_size, label_kind, seed + i)
            G(z, labels.to(device)) if labels is not None else G(z)
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        G.eval()
    return True


def prepare_loaded(
    G: nn.Module, prefix: str, meta: dict, enabled: bool = True, tensors: dict[str, torch.Tensor] | None = None,
    label_kind: str | None = None,
) -> bool | None:
    """After loading generator `prefix` of a checkpoint with metadata `meta` (and `tensors`): give G_ema standing
    statistics (unless the checkpoint already stores them), or with `enabled` false the statistics copied from G, as
    EMA keeps them (taken from the checkpoint's G tensors when it stored standing ones). Returns what the protocol
    records: None when it does not apply (G, or no BatchNorm), else whether G's statistics are standing ones."""
    if prefix != "G_ema" or not batchnorms(G):
        return None
    if enabled:
        return True if meta.get(META_KEY) else apply_standing_stats(G, label_kind=label_kind)
    if not meta.get(META_KEY):
        return False
    bn_ids = {id(m) for m in batchnorms(G)}
    names = {n for n, m in G.named_modules() if id(m) in bn_ids}
    stats = {k[2:]: v for k, v in (tensors or {}).items()
             if k.startswith("G.") and k[2:].rpartition(".")[0] in names
             and k.rpartition(".")[2] in ("running_mean", "running_var", "num_batches_tracked")}
    if not stats:  # e.g. a bundle published with --g-ema-only: the copied statistics are not there
        warn("this checkpoint stores G_ema with standing statistics and no G to take the copied ones from; "
             "using the stored standing statistics")
        return True
    G.load_state_dict(stats, strict=False)
    return False
