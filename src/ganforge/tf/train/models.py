"""Trainable Keras 3 generators and discriminators of the mlp and dcgan families (TensorFlow backend).

Each Keras model is translated from the torch module that `ganforge.models.build_generator(cfg)` /
`build_discriminator(cfg)` returns: the architecture (widths, stages, dropout, BatchNorm or not,
conditional layers) is read off the torch module and its initial weights are copied from it, so a
TensorFlow run and a torch run of one config start from the same weights and cannot drift apart in
architecture. Every Keras weight is listed with the torch state-dict key it is stored under
(`KeyedModel.entries`), so `torch_state` / `load_torch_state` write and read checkpoints in the torch
layout that `ganforge sample/eval/export` load unchanged. The generators are not written here: each is its
family's graph in `ganforge.tf.generators`, the same code the export builds its mirror with, on the trainable
layers of `TrainableKit`.

Semantics kept from torch, not Keras defaults: BatchNorm with eps and momentum of the torch module
(1e-5, 0.1), running variance updated with the unbiased batch variance, `num_batches_tracked`;
LeakyReLU 0.2; inverted dropout (stateless, seeded by the caller, so a step is a pure function of its
counters). Layout: images are NHWC; where torch flattens an NCHW tensor (the MLP's image input and
output, the projection head's features) the Keras model transposes to NCHW first, so the weights need
only each layer kind's transpose: Linear (out, in) <-> Dense (in, out); Conv2d (O, I, kh, kw) <->
Conv2D (kh, kw, I, O); ConvTranspose2d (I, O, kh, kw) <-> Conv2DTranspose (kh, kw, O, I) (`ganforge.tf.layout`).
DCGAN's first transposed conv from 1x1 is a Dense to (base, base, c) (a GEMM instead of a transposed convolution).

Labels enter every conditional model as a float (N, num_labels) vector: one-hot classes or multi-hot
attributes, the `models.layers.label_vector` convention (the trainer builds it).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from typing import Any  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers, ops  # noqa: E402
from torch import nn  # noqa: E402

from ganforge.errors import UserError  # noqa: E402
from ganforge.models.layers import ConditionalBatchNorm2d  # noqa: E402
from ganforge.tf import generators  # noqa: E402
from ganforge.tf.layout import Entry, Weights, from_torch_layout, layer_name, to_torch_layout  # noqa: E402

if keras.backend.backend() != "tensorflow":
    raise UserError(f"training with backend tensorflow needs Keras on TensorFlow, but Keras was started with "
                    f"{keras.backend.backend()!r}; unset KERAS_BACKEND or set it to tensorflow")


# --- layers with torch semantics -------------------------------------------------------------------------------
class TorchBatchNorm(layers.Layer):
    """torch BatchNorm1d/2d over the last axis: batch statistics (biased variance) in training, running
    statistics updated with momentum and the unbiased variance, `num_batches_tracked` counted."""

    def __init__(self, channels: int, affine: bool, eps: float, momentum: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.affine, self.eps, self.momentum = affine, eps, momentum
        if affine:
            self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="weight")
            self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="bias")
        self.running_mean = self.add_weight(
            shape=(channels,), initializer="zeros", trainable=False, name="running_mean"
        )
        self.running_var = self.add_weight(shape=(channels,), initializer="ones", trainable=False, name="running_var")
        self.num_batches_tracked = self.add_weight(shape=(), initializer="zeros", dtype="int64", trainable=False,
                                                   name="num_batches_tracked")

    def call(self, x: Any, training: bool = False) -> Any:
        if training:
            axes = list(range(len(x.shape) - 1))
            mean, var = tf.nn.moments(x, axes)
            n = tf.cast(tf.size(x) // tf.shape(x)[-1], x.dtype)
            m = self.momentum
            self.running_mean.assign((1.0 - m) * self.running_mean + m * mean)
            self.running_var.assign((1.0 - m) * self.running_var + m * var * n / tf.maximum(n - 1.0, 1.0))
            self.num_batches_tracked.assign_add(1)
        else:
            mean, var = self.running_mean, self.running_var
        y = (x - mean) * tf.math.rsqrt(var + self.eps)
        return y * self.gamma + self.beta if self.affine else y

    def entries(self, key: str) -> list[Entry]:
        out = (
            [Entry(f"{key}.weight", self.gamma, "same"), Entry(f"{key}.bias", self.beta, "same")] if self.affine else []
        )
        return out + [Entry(f"{key}.{n}", getattr(self, n), "same") for n in ("running_mean", "running_var",
                                                                             "num_batches_tracked")]


class SeededDropout(layers.Layer):
    """Inverted dropout whose mask is a function of the seed it is given (tf stateless random ops)."""

    def __init__(self, rate: float, **kw: Any) -> None:
        super().__init__(**kw)
        self.rate = rate

    def call(self, x: Any, training: bool = False, seed: Any = None) -> Any:
        if not training or self.rate <= 0.0:
            return x
        return tf.nn.experimental.stateless_dropout(x, self.rate, seed=seed)


class ConditionalBN(layers.Layer):
    """`ConditionalBatchNorm2d`: bn(x) * (1 + W_g y) + W_b y (BatchNorm without affine parameters)."""

    def __init__(self, bn: TorchBatchNorm, num_labels: int, channels: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.bn = bn
        self.gamma = layers.Dense(channels, use_bias=False, name=self.name + "_gamma")
        self.beta = layers.Dense(channels, use_bias=False, name=self.name + "_beta")
        self.gamma.build((None, num_labels))
        self.beta.build((None, num_labels))

    def call(self, x: Any, y: Any, training: bool = False) -> Any:
        g = 1.0 + self.gamma(y)
        b = self.beta(y)
        return self.bn(x, training=training) * g[:, None, None, :] + b[:, None, None, :]

    def entries(self, key: str) -> list[Entry]:
        return self.bn.entries(key + ".bn") + [Entry(f"{key}.gamma.weight", self.gamma.kernel, "linear"),
                                               Entry(f"{key}.beta.weight", self.beta.kernel, "linear")]


# --- translating torch modules -----------------------------------------------------------------------------------
def _dense_entries(layer: layers.Dense, key: str, kind: str = "linear", shape: tuple[int, ...] = ()) -> list[Entry]:
    out = [Entry(f"{key}.weight", layer.kernel, kind, shape)]
    return out + ([Entry(f"{key}.bias", layer.bias, "same")] if layer.use_bias else [])


def _bn(m: nn.BatchNorm1d | nn.BatchNorm2d, key: str) -> TorchBatchNorm:
    return TorchBatchNorm(m.num_features, m.affine, float(m.eps), float(m.momentum), name=layer_name(key))


def _same_padding(m: nn.Conv2d | nn.ConvTranspose2d, key: str) -> str:
    """The Keras padding that computes torch's: 'valid' for p=0; 'same' for (k=4, s=2, p=1) (even sizes)."""
    k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
    if p == 0:
        return "valid"
    if (k, s, p) == (4, 2, 1):
        return "same"
    raise NotImplementedError(f"{key}: no Keras padding equals torch's kernel {k}, stride {s}, padding {p}")


def translate(m: nn.Module, key: str, in_shape: tuple[int, ...]) -> tuple[layers.Layer, list[Entry], tuple[int, ...]]:
    """A Keras layer computing torch module `m` (NHWC for images), its weight entries, and its output shape
    (without the batch axis). Weights are copied from `m`."""
    name = layer_name(key)
    if isinstance(m, nn.Linear):
        layer = layers.Dense(m.out_features, use_bias=m.bias is not None, name=name)
        layer.build((None, *in_shape))
        entries = _dense_entries(layer, key)
        out = (m.out_features,)
    elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        cls = layers.Conv2D if isinstance(m, nn.Conv2d) else layers.Conv2DTranspose
        layer = cls(m.out_channels, m.kernel_size, strides=m.stride, padding=_same_padding(m, key),
                    use_bias=m.bias is not None, name=name)
        layer.build((None, *in_shape))
        entries = [Entry(f"{key}.weight", layer.kernel, "conv")] + (
            [Entry(f"{key}.bias", layer.bias, "same")] if m.bias is not None else [])
        out = tuple(layer.compute_output_shape((None, *in_shape))[1:])
    elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        layer = _bn(m, key)
        entries, out = layer.entries(key), in_shape
    elif isinstance(m, nn.LeakyReLU):
        layer, entries, out = layers.LeakyReLU(negative_slope=m.negative_slope, name=name), [], in_shape
    elif isinstance(m, nn.ReLU):
        layer, entries, out = layers.ReLU(name=name), [], in_shape
    elif isinstance(m, nn.Tanh):
        layer, entries, out = layers.Activation("tanh", name=name), [], in_shape
    elif isinstance(m, nn.Dropout):
        layer, entries, out = SeededDropout(m.p, name=name), [], in_shape
    else:
        raise NotImplementedError(f"{key}: no Keras translation of torch {type(m).__name__}")
    return layer, entries, out


def numpy_state(module: nn.Module) -> dict[str, np.ndarray]:
    """A torch module's state dict as NumPy arrays."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


class KeyedModel(keras.Model):
    """A Keras model whose weights are listed with their torch state-dict keys (`entries`)."""

    entries: list[Entry]

    def _sequence(self, seq: nn.Sequential, key: str, in_shape: tuple[int, ...]) -> tuple[list[layers.Layer],
                                                                                          tuple[int, ...]]:
        out = []
        for i, m in enumerate(seq):
            layer, entries, in_shape = translate(m, f"{key}.{i}", in_shape)
            out.append(layer)
            self.entries += entries
        return out, in_shape

    def finish(self, module: nn.Module) -> None:
        """Copy the torch module's weights in; every sublayer is built, so the model is too."""
        load_torch_state(self, numpy_state(module))
        self.built = True

    @staticmethod
    def _run(seq: list[layers.Layer], x: Any, training: bool, seed: Any = None) -> Any:
        for i, layer in enumerate(seq):
            if isinstance(layer, TorchBatchNorm):
                x = layer(x, training=training)
            elif isinstance(layer, SeededDropout):
                x = layer(x, training=training, seed=None if seed is None else fold(seed, i))
            else:
                x = layer(x)
        return x


def fold(seed: Any, i: int) -> Any:
    """A distinct stateless seed for the i-th random op of a call."""
    return tf.random.experimental.stateless_fold_in(seed, i)


class TrainableKit:
    """The layers of the shared generator graphs (`ganforge.tf.generators`, the ones the export mirrors) as trainable
    layers with torch semantics, translated from the torch generator `module` and listed in `entries`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.w: Weights = numpy_state(module)
        self.entries: list[Entry] = []

    def _layer(self, x: Any, key: str) -> layers.Layer:
        layer, entries, _ = translate(self.module.get_submodule(key), key, tuple(x.shape[1:]))
        self.entries += entries
        return layer

    def linear(self, x: Any, key: str) -> Any:
        return self._layer(x, key)(x)

    def batchnorm(self, x: Any, key: str) -> Any:
        return self._layer(x, key)(x)

    def project(self, x: Any, key: str, shape: tuple[int, int, int]) -> Any:
        m = self.module.get_submodule(key)
        if m.stride[0] != 1 or m.padding[0] != 0:
            raise NotImplementedError(f"{key}: expected the DCGAN projection from 1x1 (stride 1, padding 0)")
        layer = layers.Dense(int(np.prod(shape)), use_bias=False, name=layer_name(key))
        layer.build((None, m.in_channels))
        self.entries += _dense_entries(layer, key, "first", shape)
        return ops.reshape(layer(x), (-1, *shape))

    def conv_transpose(self, x: Any, key: str, stride: int, padding: str) -> Any:
        layer = self._layer(x, key)
        if (layer.strides[0], layer.padding) != (stride, padding):
            raise NotImplementedError(f"{key}: the torch module is not the {stride}-strided {padding!r} transposed "
                                      "conv of the shared graph")
        return layer(x)

    def norm2d(self, x: Any, key: str, y: Any | None) -> Any:
        key += ".norm"
        m = self.module.get_submodule(key)
        if not isinstance(m, ConditionalBatchNorm2d):
            return self.batchnorm(x, key)
        layer = ConditionalBN(_bn(m.bn, key + ".bn"), m.num_labels, int(x.shape[-1]), name=layer_name(key))
        self.entries += layer.entries(key)
        return layer(x, y)


class KerasGenerator(KeyedModel):
    """A trainable mlp/dcgan generator: its family's graph in `ganforge.tf.generators` (the one the export builds)
    on `TrainableKit` layers. Called as `G(z, labels, training=...)`; images NHWC."""

    def __init__(self, G: nn.Module, family: str, name: str = "G") -> None:
        super().__init__(name=name)
        kit = TrainableKit(G)
        self.num_labels = G.num_labels
        info = {"z_dim": G.z_dim, "resolution": G.resolution, "channels": G.channels, "num_labels": G.num_labels}
        self.graph = generators.GRAPHS[family](kit, info, name=f"{name}_graph")
        self.entries = kit.entries
        self.finish(G)

    def call(self, z: Any, labels: Any = None, training: bool = False) -> Any:
        return self.graph([z, labels] if self.num_labels else z, training=training)


class MLPDiscriminator(KeyedModel):
    """models/mlp.py MLPDiscriminator: [flatten(NCHW x), y] -> (Linear LeakyReLU Dropout) x 3, Linear -> (N,)."""

    def __init__(self, D: nn.Module, in_shape: tuple[int, int, int], name: str = "D") -> None:
        super().__init__(name=name)
        self.entries = []
        self.num_labels = D.num_labels
        self.flat = int(np.prod(in_shape))
        self.net, _ = self._sequence(D.net, "net", (self.flat + (D.num_labels or 0),))
        self.finish(D)

    def call(self, x: Any, labels: Any = None, training: bool = False, seed: Any = None) -> Any:
        h = ops.reshape(ops.transpose(x, (0, 3, 1, 2)), (-1, self.flat))
        if self.num_labels:
            h = ops.concatenate([h, labels], axis=-1)
        return ops.reshape(self._run(self.net, h, training, seed), (-1,))


class MinibatchStd(layers.Layer):
    """models/equalized.py MinibatchStd with one map, in NHWC: the mean over positions and features of the
    per-group standard deviation, appended as a last channel; groups are the same strided images as torch's."""

    def __init__(self, group_size: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.group_size = group_size

    def call(self, x: Any) -> Any:
        n, h, w, c = x.shape
        if n is None:
            raise NotImplementedError("minibatch stddev needs a batch size known when the graph is traced")
        g = min(self.group_size, n)
        g = n if n % g else g
        y = ops.reshape(x, (g, n // g, h, w, c))
        y = ops.mean(ops.square(y - ops.mean(y, axis=0)), axis=0)
        y = ops.mean(ops.sqrt(y + 1e-8), axis=(1, 2, 3))  # (n // g,)
        y = ops.tile(ops.reshape(y, (1, n // g, 1, 1, 1)), (g, 1, h, w, 1))
        return ops.concatenate([x, ops.reshape(y, (n, h, w, 1))], axis=-1)


class DCGANDiscriminator(KeyedModel):
    """models/dcgan.py DCGANDiscriminator: conv features (4x4 stride 2, [BatchNorm], LeakyReLU, [Dropout]), [a
    minibatch-stddev map], a base x base conv head, plus the projection <embed(y), flatten(NCHW h)> when
    conditional."""

    def __init__(self, D: nn.Module, in_shape: tuple[int, int, int], name: str = "D") -> None:
        super().__init__(name=name)
        self.entries = []
        self.features, shape = self._sequence(D.features, "features", in_shape)
        self.mbstd = None
        if getattr(D, "mbstd", None) is not None:
            self.mbstd = MinibatchStd(D.mbstd.group_size, name="mbstd")
            shape = (*shape[:-1], shape[-1] + 1)
        self.head, entries, _ = translate(D.head, "head", shape)
        self.entries += entries
        self.projection = None
        if D.projection is not None:
            proj = D.projection.embed.proj
            if not isinstance(proj, nn.Linear) or hasattr(proj, "parametrizations"):
                raise NotImplementedError("projection.embed.proj: spectral norm has no TensorFlow translation")
            self.projection, entries, _ = translate(proj, "projection.embed.proj", (proj.in_features,))
            self.entries += entries
        self.flat = int(np.prod(shape))
        self.finish(D)

    def call(self, x: Any, labels: Any = None, training: bool = False, seed: Any = None) -> Any:
        h = self._run(self.features, x, training, seed)
        out = ops.reshape(self.head(h if self.mbstd is None else self.mbstd(h)), (-1,))
        if self.projection is not None:
            flat = ops.reshape(ops.transpose(h, (0, 3, 1, 2)), (-1, self.flat))
            out = out + ops.sum(self.projection(labels) * flat, axis=1)
        return out


# --- public API ---------------------------------------------------------------------------------------------------
def keras_generator(G: nn.Module, name: str = "G") -> KeyedModel:
    """The trainable Keras twin of a torch mlp/dcgan generator, with its current weights."""
    kind = type(G).__name__
    family = {"MLPGenerator": "mlp", "DCGANGenerator": "dcgan"}.get(kind)
    if family is not None:
        return KerasGenerator(G, family, name)
    raise NotImplementedError(f"no trainable Keras translation of {kind}")


def keras_discriminator(D: nn.Module, in_shape: tuple[int, int, int], name: str = "D") -> KeyedModel:
    """The trainable Keras twin of a torch mlp/dcgan discriminator; in_shape = (H, W, C) of its images."""
    for m in D.modules():
        if hasattr(m, "parametrizations"):
            raise NotImplementedError("spectral norm has no TensorFlow translation")
    kind = type(D).__name__
    if kind == "MLPDiscriminator":
        return MLPDiscriminator(D, in_shape, name)
    if kind == "DCGANDiscriminator":
        return DCGANDiscriminator(D, in_shape, name)
    raise NotImplementedError(f"no trainable Keras translation of {kind}")


def torch_state(model: KeyedModel) -> dict[str, np.ndarray]:
    """The model's weights as a torch state dict of NumPy arrays (torch layout and keys)."""
    # np.array(order="C"), not ascontiguousarray: num_batches_tracked must stay 0-d
    return {e.key: np.array(to_torch_layout(e, np.asarray(e.var.numpy())), order="C") for e in model.entries}


def load_torch_state(model: KeyedModel, state: dict[str, np.ndarray], what: str = "") -> None:
    """Set the model's weights from a torch-layout state dict (keys without a prefix); a missing key or a
    shape mismatch is a UserError naming it."""
    for e in model.entries:
        if e.key not in state:
            raise UserError(f"checkpoint{what} has no {e.key}; it does not fit this model")
        a = from_torch_layout(e, np.asarray(state[e.key]))
        if tuple(a.shape) != tuple(e.var.shape):
            raise UserError(f"checkpoint{what}: {e.key} has shape {tuple(np.asarray(state[e.key]).shape)}, which "
                            "does not fit this model")
        e.var.assign(a.astype(e.var.dtype))
