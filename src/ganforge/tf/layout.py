"""What both Keras rooms agree on about torch weights (NumPy only: no torch, no TensorFlow import).

- Layer names: a Keras layer is named after the torch module path it stands for (`layer_name`).
- Weight layouts: a Keras variable is stored under its torch state-dict key (`Entry`), converted by the layout of
  its layer kind (`to_torch_layout` / `from_torch_layout`): Linear (out, in) <-> Dense (in, out); Conv2d
  (O, I, kh, kw) <-> Conv2D (kh, kw, I, O); ConvTranspose2d (I, O, kh, kw) <-> Conv2DTranspose (kh, kw, O, I);
  DCGAN's first transposed conv from 1x1 (in, c, base, base) <-> a Dense (in, base * base * c) in NHWC order.
- Architecture from a state dict: `count` of indexed submodules, so a Keras graph is read off weight shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

Weights = dict[str, np.ndarray]  # a torch state dict (or `numpy_weights`) as NumPy arrays, torch layout


def layer_name(key: str) -> str:
    """A Keras layer name from a torch module path (Keras names may not hold every character)."""
    return re.sub(r"[^0-9A-Za-z_]", "_", key)


def count(w: Weights, pattern: str) -> int:
    """How many indexed submodules (e.g. `convs.{}.weight`) the state dict has."""
    n = 0
    while pattern.format(n) in w:
        n += 1
    return n


@dataclass(frozen=True)
class Entry:
    """One Keras variable and where it lives in the torch state dict. kind: how the layouts differ."""

    key: str
    var: Any  # keras.Variable
    kind: str  # "same" | "linear" | "conv" | "first"
    shape: tuple[int, ...] = ()  # "first": (base, base, c) of the Dense's output


def to_torch_layout(e: Entry, a: np.ndarray) -> np.ndarray:
    if e.kind == "linear":
        return a.T
    if e.kind == "conv":  # HWIO -> OIHW, and (kh, kw, O, I) -> (I, O, kh, kw) for transposed convs
        return a.transpose(3, 2, 0, 1)
    if e.kind == "first":  # Dense (in, base*base*c) in NHWC order -> ConvTranspose2d (in, c, base, base)
        return a.reshape(a.shape[0], *e.shape).transpose(0, 3, 1, 2)
    return a


def from_torch_layout(e: Entry, a: np.ndarray) -> np.ndarray:
    if e.kind == "linear":
        return a.T
    if e.kind == "conv":
        return a.transpose(2, 3, 1, 0)
    if e.kind == "first":
        return a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1)
    return a
