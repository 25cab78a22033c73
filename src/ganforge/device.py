"""Device selection, one rule for every command: `auto` is CUDA when a GPU is visible, else CPU."""

from __future__ import annotations

import torch

from ganforge.errors import UserError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name.split(":")[0] not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    return torch.device(name)
