"""Augmentation as a part of the objective: every image D sees, real and fake, goes through it.

DiffAugment is stateless; ADA adapts its probability p to D's overfitting (after each D step) and
checkpoints it, so a resume continues with the same p.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ganforge.augment.ada import ADA
from ganforge.augment.diffaugment import DiffAugment
from ganforge.errors import UserError
from ganforge.losses import PARTS, DStep, Part


@PARTS.register("augment")
class Augmentation(Part):
    order = 0

    def __init__(self, fn: DiffAugment | ADA) -> None:
        self.fn = fn

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Part | None:
        a = cfg["augment"]
        if a["name"] == "diffaugment":
            return cls(DiffAugment(a["policy"]))
        if a["name"] == "ada":
            return cls(ADA(a["ada_p"], a["ada_pipeline"], a["ada_target"], a["ada_speed"], a["ada_interval"]))
        return None

    def augment(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        return self.fn(x, rng)

    @property
    def adaptive(self) -> bool:
        return isinstance(self.fn, ADA)

    def after_d_step(self, s: DStep) -> None:
        if self.adaptive:  # ADA: p follows the overfitting heuristic E[sign(D(real))]
            self.fn.accumulate(s.d_real.detach())
            self.fn.adjust(s.real.shape[0])

    def progress(self) -> dict[str, float]:
        if not self.adaptive:
            return {}
        out = {"ada_p": float(self.fn.p)}
        if self.fn.r_t is not None:
            out["ada_rt"] = float(self.fn.r_t)
        return out

    def state_dict(self) -> dict[str, Any] | None:
        return dict(self.fn.state_dict()) if self.adaptive else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if not self.adaptive:
            return
        if state is None:
            raise UserError("this checkpoint was saved without ADA state (augment.name differs); resume with the "
                            "augment settings the run was started with")
        self.fn.load_state_dict(state)
