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

from ganforge.errors import UserError


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
