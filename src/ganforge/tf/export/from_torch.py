"""Torch side of the export: a generator's weights as plain NumPy arrays, keyed like its state dict.

The Keras mirrors (`ganforge.tf.export.mirrors`) never import torch: they read this dict. Everything that is a
run-time transformation of a stored tensor in torch is applied here, so the mirrors see the weights the
eval-mode forward pass really multiplies with:
- spectral norm: the parametrized module's `.weight` (W / sigma from the stored power-iteration vectors);
- equalized learning rate: `weight * scale`, `bias * lr_mul` (EqualizedLinear / EqualizedConv2d);
- StyleGAN2's toRGB `weight_gain` (a constant factor on its styles) is stored as `<name>.weight_gain`;
- BatchNorm's eps (a module attribute, not a tensor) is stored as `<name>.eps`;
- non-persistent buffers (StyleGAN2's FIR blur kernels) are included.
Layouts stay torch's (OIHW convs, (out, in) linears); the mirrors transpose.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ganforge.models.equalized import EqualizedConv2d, EqualizedLinear


@torch.no_grad()
def numpy_weights(G: nn.Module) -> dict[str, np.ndarray]:
    """Every tensor the eval-mode forward of `G` uses, baked and as float32 NumPy arrays (see module doc)."""
    out: dict[str, np.ndarray] = {}
    for name, t in list(G.named_parameters()) + list(G.named_buffers()):
        if ".parametrizations." in name:
            continue  # spectral norm's original weight and u, v: replaced by the effective weight below
        out[name] = t.detach().cpu().float().numpy().copy()
    for name, m in G.named_modules():
        pre = f"{name}." if name else ""
        if hasattr(m, "parametrizations") and "weight" in m.parametrizations:
            out[pre + "weight"] = m.weight.detach().cpu().float().numpy().copy()  # eval: W / sigma
        if isinstance(m, EqualizedLinear):
            out[pre + "weight"] = (m.weight * m.scale).float().numpy()
            if m.bias is not None:
                out[pre + "bias"] = (m.bias * m.lr_mul).float().numpy()
        elif isinstance(m, EqualizedConv2d):
            out[pre + "weight"] = (m.weight * m.scale).float().numpy()
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out[pre + "eps"] = np.array(m.eps, np.float32)
        if hasattr(m, "weight_gain"):
            out[pre + "weight_gain"] = np.array(m.weight_gain, np.float32)
    return out
