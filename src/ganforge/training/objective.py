"""The objective of a run: its adversarial loss plus the parts the config turns on (see losses.Part).

`Objective.from_config` builds every registered part whose `from_config` says it is on, in `order`;
the trainer only calls the hooks below, so a new regularizer, augmentation or schedule never touches it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ganforge.losses import PARTS, DStep, GANLoss, GStep, Part, Terms, build_loss

# modules whose import registers parts in PARTS: one line per module that defines parts
PART_MODULES = ["ganforge.regularizers", "ganforge.augment.part", "ganforge.training.schedule"]

# checkpoints written before parts existed kept these states under their own meta keys
_LEGACY_META = {"augment": lambda meta: meta.get("ada"), "path_length": lambda meta: {"pl_mean": meta.get("pl_mean", 0.0)}}


class Objective:
    def __init__(self, loss: GANLoss, parts: dict[str, Part]) -> None:
        self.loss, self.parts = loss, parts

    @classmethod
    def from_config(cls, cfg: dict[str, Any], G: nn.Module, D: nn.Module) -> Objective:
        for m in PART_MODULES:
            importlib.import_module(m)
        names = sorted(PARTS.names(), key=lambda n: (PARTS.get(n).order, n))
        made = {name: PARTS.get(name).from_config(cfg, G, D) for name in names}
        parts = {name: p for name, p in made.items() if p is not None}
        return cls(build_loss(cfg["loss"]["name"]), parts)

    # --- hooks, each a loop over the parts --------------------------------------------------------
    def prepare_batch(self, images_seen: int, models: tuple[nn.Module, ...]) -> int | None:
        sizes = [b for p in self.parts.values() if (b := p.prepare_batch(images_seen, models)) is not None]
        return sizes[-1] if sizes else None

    def reals(self, real: torch.Tensor, D: nn.Module) -> torch.Tensor:
        for p in self.parts.values():
            real = p.reals(real, D)
        return real

    def augment(self, x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
        for p in self.parts.values():
            x = p.augment(x, rng)
        return x

    def d_total(self, loss_d: torch.Tensor, s: DStep, logged: dict[str, torch.Tensor]) -> torch.Tensor:
        """loss_d plus every part's weighted D terms; unweighted values of `logged` terms go into `logged`."""
        return self._add(loss_d, lambda p: p.d_terms(s), logged)

    def g_total(self, loss_g: torch.Tensor, s: GStep, logged: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._add(loss_g, lambda p: p.g_terms(s), logged)

    def _add(self, total: torch.Tensor, terms: Callable[[Part], Terms], logged: dict[str, torch.Tensor]) -> torch.Tensor:
        for p in self.parts.values():
            for name, (w, v) in terms(p).items():
                total = total + w * v
                if name in p.logged:
                    logged[name] = v.detach()
        return total

    def after_d_step(self, s: DStep) -> None:
        for p in self.parts.values():
            p.after_d_step(s)

    def progress(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for p in self.parts.values():
            out.update(p.progress())
        return out

    # --- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {name: st for name, p in self.parts.items() if (st := p.state_dict()) is not None}

    def load_state_dict(self, state: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        """Restore part states from a checkpoint's meta["parts"] (or the older per-part meta keys);
        each part decides whether a missing state is fine (stateless, fresh) or an error (ADA)."""
        for name, p in self.parts.items():
            if state is not None:
                p.load_state_dict(state.get(name))
            else:
                legacy = _LEGACY_META.get(name)
                p.load_state_dict(legacy(meta) if legacy else None)
