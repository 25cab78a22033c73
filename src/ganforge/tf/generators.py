"""The one Keras graph of each generator family both rooms build: mlp and dcgan (no torch import).

The TensorFlow training backend (`ganforge.tf.train.models`) and the export (`ganforge.tf.export.mirrors`) need the
same forward pass with different layers: trainable ones with torch's BatchNorm semantics whose weights are listed
for checkpoints, or built-in Keras layers holding fixed weights (so a `.keras` file loads without ganforge). A
family's graph is therefore written once here, against a `Kit` that makes its weight-bearing layers; the ops
without weights (concatenation, activations, reshapes) are the graph's own. The architecture (widths, stages,
BatchNorm or not, conditional layers) is read off the kit's weights, a torch state dict in torch layout.

Layout: images are NHWC. The MLP computes torch's (C, H, W) output units and transposes to NHWC (exact, and its
Dense keeps torch's unit order); DCGAN's first transposed conv from 1x1 is a Dense to (base, base, c).
Inputs: `z` (N, z_dim) and, for conditional models, `labels` (N, num_labels), a float one-hot row per class or a
multi-hot row of attributes; a model with one input takes `z` bare. Output: (N, H, W, C) images in [-1, 1] (tanh).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import keras
from keras import ops

from ganforge.tf.layout import Weights, count


class Kit(Protocol):
    """Makes a graph's weight-bearing layers, each for the torch module at `key`, and applies it to `x`."""

    w: Weights  # the weights (torch layout and keys) the architecture is read off

    def linear(self, x: Any, key: str) -> Any:
        """nn.Linear."""

    def batchnorm(self, x: Any, key: str) -> Any:
        """nn.BatchNorm1d/2d, channels last."""

    def project(self, x: Any, key: str, shape: tuple[int, int, int]) -> Any:
        """A kxk nn.ConvTranspose2d from 1x1 (stride 1, no padding, no bias): (N, in) -> (N, *shape), NHWC."""

    def conv_transpose(self, x: Any, key: str, stride: int, padding: str) -> Any:
        """nn.ConvTranspose2d without bias; padding 'same' is torch's (k=4, s=2, p=1), 'valid' is p=0."""

    def norm2d(self, x: Any, key: str, y: Any | None) -> Any:
        """ganforge's Norm2d: BatchNorm2d, or conditional BatchNorm bn(x) * (1 + W_g y) + W_b y."""


def inputs(info: dict[str, Any]) -> tuple[keras.KerasTensor, keras.KerasTensor | None]:
    """The `z` and (conditional models) `labels` inputs. info: z_dim, num_labels (None or int)."""
    z = keras.Input((info["z_dim"],), name="z")
    y = keras.Input((info["num_labels"],), name="labels") if info.get("num_labels") else None
    return z, y


def with_labels(z: Any, y: Any | None) -> Any:
    return z if y is None else ops.concatenate([z, y], axis=-1)


def model_inputs(z: Any, y: Any | None, psi: Any | None = None) -> Any:
    """The model's inputs in their fixed order; a lone z is passed bare, so `model(z)` is the call."""
    ins = [t for t in (z, y, psi) if t is not None]
    return ins if len(ins) > 1 else ins[0]


def lrelu(x: Any) -> Any:
    return ops.leaky_relu(x, negative_slope=0.2)


def mlp(kit: Kit, info: dict[str, Any], name: str = "generator") -> keras.Model:
    """MLPGenerator: Linear [BatchNorm1d] LeakyReLU(0.2) ..., Linear, tanh, view (C, R, R). info: z_dim,
    resolution, channels, num_labels."""
    w = kit.w
    z, y = inputs(info)
    res, ch = info["resolution"], info["channels"]
    idx = sorted({int(k.split(".")[1]) for k in w if k.startswith("net.")})
    linears = [i for i in idx if w[f"net.{i}.weight"].ndim == 2 and f"net.{i}.running_mean" not in w]
    x = with_labels(z, y)
    for i in linears[:-1]:
        x = kit.linear(x, f"net.{i}")
        if f"net.{i + 1}.running_mean" in w:
            x = kit.batchnorm(x, f"net.{i + 1}")
        x = lrelu(x)
    x = ops.reshape(ops.tanh(kit.linear(x, f"net.{linears[-1]}")), (-1, ch, res, res))
    return keras.Model(model_inputs(z, y), ops.transpose(x, (0, 2, 3, 1)), name=name)


def dcgan(kit: Kit, info: dict[str, Any], name: str = "generator") -> keras.Model:
    """DCGANGenerator: a kxk transposed conv from 1x1 (a Dense), then per stage (conditional) BatchNorm + ReLU and
    a 4x4 stride-2 transposed conv, tanh. info: z_dim, num_labels."""
    w = kit.w
    z, y = inputs(info)
    first = w["convs.0.weight"]  # (in, c, base, base)
    x = kit.project(with_labels(z, y), "convs.0", (first.shape[2], first.shape[3], first.shape[1]))
    for i in range(count(w, "convs.{}.weight")):
        if i > 0:
            x = kit.conv_transpose(x, f"convs.{i}", 2, "same")
        x = ops.relu(kit.norm2d(x, f"norms.{i}", y))
    x = ops.tanh(kit.conv_transpose(x, "to_img", 2, "same"))
    return keras.Model(model_inputs(z, y), x, name=name)


GRAPHS: dict[str, Callable[..., keras.Model]] = {"mlp": mlp, "dcgan": dcgan}
