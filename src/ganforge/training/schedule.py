"""The progressive-growing schedule (Karras et al. 2018): which resolution trains, how far its fade-in
has gone, and with which batch size, as a pure function of the number of real images shown so far.

4x4 trains for `stable` images; every later resolution first fades in over `fade` images (alpha rising
linearly from 0 to 1) and then stabilizes for `stable` images; the target resolution then trains until
the run ends. A pure function of one counter is what makes a resume in the middle of a fade exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ganforge.errors import UserError
from ganforge.losses import PARTS, Part


@dataclass(frozen=True)
class Stage:
    level: int  # 0 = 4x4, levels - 1 = the target resolution
    alpha: float  # fade-in of `level` in [0, 1]
    batch_size: int

    @property
    def resolution(self) -> int:
        return 4 * 2**self.level


@dataclass(frozen=True)
class GrowSchedule:
    levels: int
    fade: int
    stable: int
    batch_sizes: tuple[int, ...]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> GrowSchedule:
        res = cfg["data"]["resolution"]
        levels = int(math.log2(res)) - 1
        g = cfg["grow"]
        sizes = g["batch_sizes"]
        if sizes is None:
            sizes = [cfg["train"]["batch_size"]] * levels
        if len(sizes) != levels or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in sizes):
            raise UserError(
                f"grow.batch_sizes must list {levels} positive integers, one per resolution "
                f"{', '.join(str(4 * 2**i) for i in range(levels))}; got {sizes!r}"
            )
        return cls(levels, g["fade_images"], g["stable_images"], tuple(sizes))

    def stage(self, images_seen: int) -> Stage:
        t = images_seen - self.stable  # 4x4 has no fade-in
        level, alpha = 0, 1.0
        while t >= 0 and level < self.levels - 1:
            level += 1
            if t < self.fade:
                alpha = t / self.fade
                break
            alpha = 1.0
            t -= self.fade + self.stable
        return Stage(level, alpha, self.batch_sizes[level])


@PARTS.register("grow")
class Growing(Part):
    """Progressive growing as a part of the objective: before each batch the models (G, D, G_ema) are put
    at the stage of `images_seen`, the batch size follows the stage, and reals are faded like G's output."""

    def __init__(self, schedule: GrowSchedule) -> None:
        self.schedule = schedule
        self.stage = schedule.stage(0)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        return cls(GrowSchedule.from_config(cfg)) if hasattr(G, "set_stage") else None

    def prepare_batch(self, images_seen: int, models: tuple[nn.Module, ...]) -> int:
        self.stage = self.schedule.stage(images_seen)
        for m in models:
            m.set_stage(self.stage.level, self.stage.alpha)
        return self.stage.batch_size

    def reals(self, real: torch.Tensor, D: nn.Module) -> torch.Tensor:
        return D.fade_reals(real)  # reals as blurry as G can be mid-fade

    def progress(self) -> dict[str, float]:
        return {"resolution": float(self.stage.resolution), "alpha": float(self.stage.alpha)}
