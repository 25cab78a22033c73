"""Keras 3 mirrors of ganforge's generators, built from NumPy weights in torch's layout (no torch import).

Each family's eval-mode forward pass is rebuilt from built-in Keras layers and `keras.ops` only, so a
saved `.keras` file loads with a bare `keras.saving.load_model(path)` (no ganforge, no custom objects,
no `safe_mode=False`), and SavedModel/TFLite conversion sees ordinary TensorFlow ops. Weights come from
`ganforge.tf.export.from_torch.numpy_weights` (spectral norm, equalized-lr scales already baked in); the
architecture (number of stages, widths) is read off the weight shapes, so it cannot drift from the
torch module that produced them. The mlp and dcgan graphs are not written here: they are the shared ones of
`ganforge.tf.generators` (which the TensorFlow training backend trains), built with this module's layers
(`FixedKit`).

Layout: images are NHWC. Torch Linear -> reshape(C, H, W) is reordered to (H, W, C) by permuting the
Linear's output units (sngan, progan; the mlp transposes its (C, H, W) output instead); conv kernels go OIHW -> HWIO, transposed-conv kernels (I, O, kh, kw) ->
(kh, kw, O, I) (both frameworks compute the adjoint of cross-correlation, so no spatial flip).
BatchNorm runs as Keras BatchNormalization in inference mode with torch's eps and running statistics.
StyleGAN2 uses the per-activation ("non-fused") modulated convolution: x * styles, one shared conv,
outputs * demodulation coefficients (a matmul of squared styles with the summed squared kernel), the
[1,3,3,1] blur as a depthwise conv, and its per-layer noise fixed as in eval mode (noise_mode="const").

Inputs (names are part of the contract): `z` (N, z_dim); `labels` (N, num_labels) for conditional models,
a float one-hot row per class or a multi-hot row of attributes; StyleGAN2 also `psi` (N, 1), the
truncation (1 = none). Output: (N, H, W, C) float images clamped to [-1, 1] like `generate.sample`.
StyleGAN2's generator nests two models, `get_layer("mapping")` ([z, (labels,) psi] -> ws (N, num_ws,
w_dim)) and `get_layer("synthesis")` (ws -> image), for style mixing and w-space interpolation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from ganforge.tf import generators
from ganforge.tf.generators import inputs, lrelu, model_inputs, with_labels
from ganforge.tf.layout import Entry, Weights, count, from_torch_layout, layer_name

SQRT2 = math.sqrt(2.0)


def _set(layer: layers.Layer, *arrays: np.ndarray) -> None:
    layer.set_weights([np.ascontiguousarray(a, np.float32) for a in arrays])


def _nhwc_units(a: np.ndarray, c: int, h: int, w: int) -> np.ndarray:
    """Reorder a Linear's output units (first axis) from torch's (C, H, W) view to (H, W, C)."""
    rest = a.shape[1:]
    return a.reshape(c, h, w, *rest).transpose(1, 2, 0, *range(3, 3 + len(rest))).reshape(c * h * w, *rest)


def linear(
    x: Any, w: Weights, key: str, nhwc: tuple[int, int, int] | None = None, bias: np.ndarray | None = None
) -> Any:
    """torch nn.Linear `key` (weight (out, in), optional bias); `nhwc=(C, H, W)` reorders the outputs for a
    following reshape to NHWC. `bias` overrides the stored bias (ProGAN adds a per-channel bias after its view)."""
    weight = w[key + ".weight"]
    b = w.get(key + ".bias") if bias is None else bias
    if nhwc is not None:
        weight = _nhwc_units(weight, *nhwc)
        b = None if b is None else _nhwc_units(b, *nhwc)
    layer = layers.Dense(weight.shape[0], use_bias=b is not None, name=layer_name(key))
    y = layer(x)
    _set(layer, weight.T, *([] if b is None else [b]))
    return y


def conv(x: Any, w: Weights, key: str, weight: np.ndarray | None = None, bias: np.ndarray | None = None,
         name: str | None = None) -> Any:
    """torch nn.Conv2d `key` with 'same' padding (k // 2, odd k), stride 1; `weight`/`bias` override the
    stored ones (with `weight` given, only `bias` is used)."""
    k = w[key + ".weight"] if weight is None else weight
    b = (w.get(key + ".bias") if weight is None else None) if bias is None else bias
    layer = layers.Conv2D(k.shape[0], k.shape[2], padding="same", use_bias=b is not None, name=name or layer_name(key))
    y = layer(x)
    _set(layer, k.transpose(2, 3, 1, 0), *([] if b is None else [b]))
    return y


def conv_transpose(x: Any, w: Weights, key: str, stride: int, padding: str, weight: np.ndarray | None = None) -> Any:
    """torch nn.ConvTranspose2d `key` (weight (in, out, kh, kw), no bias). padding='same' is torch's
    (k=4, s=2, p=1); 'valid' is p=0 (output (H - 1) * s + k)."""
    k = w[key + ".weight"] if weight is None else weight
    layer = layers.Conv2DTranspose(k.shape[1], k.shape[2], strides=stride, padding=padding, use_bias=False,
                                   name=layer_name(key))
    y = layer(x)
    _set(layer, k.transpose(2, 3, 1, 0))
    return y


def batchnorm(x: Any, w: Weights, key: str) -> Any:
    """torch BatchNorm1d/2d in eval mode (affine or not), channels last."""
    affine = key + ".weight" in w
    layer = layers.BatchNormalization(epsilon=float(w[key + ".eps"]), center=affine, scale=affine, name=layer_name(key))
    y = layer(x, training=False)
    stats = [w[key + ".running_mean"], w[key + ".running_var"]]
    _set(layer, *([w[key + ".weight"], w[key + ".bias"]] if affine else []), *stats)
    return y


def norm2d(x: Any, w: Weights, key: str, y: Any | None) -> Any:
    """ganforge's Norm2d `key`: BatchNorm2d, or conditional BatchNorm bn(x) * (1 + W_g y) + W_b y."""
    if key + ".norm.bn.running_mean" not in w:
        return batchnorm(x, w, key + ".norm")
    h = batchnorm(x, w, key + ".norm.bn")
    gamma = linear(y, w, key + ".norm.gamma", bias=np.ones(w[key + ".norm.gamma.weight"].shape[0], np.float32))
    beta = linear(y, w, key + ".norm.beta")
    return h * ops.expand_dims(ops.expand_dims(gamma, 1), 1) + ops.expand_dims(ops.expand_dims(beta, 1), 1)


def constant(anchor: Any, value: np.ndarray, name: str) -> Any:
    """A stored constant broadcast to the batch: ones (N, 1) through a bias-free Dense whose kernel is the
    value (1 * v is exact), reshaped to (N, *value.shape). Built-in layers only, so .keras files need no
    custom objects; anchor is any (N, ...) tensor of the graph."""
    ones = ops.ones_like(ops.reshape(anchor, (-1, int(np.prod(anchor.shape[1:]))))[:, :1])
    layer = layers.Dense(value.size, use_bias=False, name=name)
    out = layer(ones)
    _set(layer, value.reshape(1, -1))
    return ops.reshape(out, (-1, *value.shape))


def upsample(x: Any, name: str, interpolation: str = "nearest") -> Any:
    """2x up-sampling as a resize to the static doubled size: UpSampling2D's nearest mode (tf.repeat) loses the
    static height in TFLite conversion, after which its Conv2D cannot be lowered. For a factor of 2, nearest with
    half-pixel centres picks pixel i // 2 (torch's nearest) and bilinear is torch's align_corners=False."""
    h, w = int(x.shape[1]), int(x.shape[2])
    return layers.Resizing(2 * h, 2 * w, interpolation=interpolation, name=name)(x)


def pixel_norm(x: Any, eps: float = 1e-8) -> Any:
    """ProGAN/StyleGAN's x / sqrt(mean(x^2) + eps) over the last (channel or feature) axis."""
    return x * ops.rsqrt(ops.mean(ops.square(x), axis=-1, keepdims=True) + eps)


def clamp_image(x: Any) -> Any:
    """progan/stylegan2 have linear outputs and `generate.sample` clamps every family: so do the mirrors."""
    return ops.clip(x, -1.0, 1.0)


# --- families ---------------------------------------------------------------------------------------------------
class FixedKit:
    """The layers of the shared mlp/dcgan graphs (`ganforge.tf.generators`, the ones the TensorFlow backend trains)
    as built-in Keras layers holding the weights `w` (eval mode: BatchNorm with its running statistics)."""

    def __init__(self, w: Weights) -> None:
        self.w = w

    def linear(self, x: Any, key: str) -> Any:
        return linear(x, self.w, key)

    def batchnorm(self, x: Any, key: str) -> Any:
        return batchnorm(x, self.w, key)

    def project(self, x: Any, key: str, shape: tuple[int, int, int]) -> Any:
        layer = layers.Dense(int(np.prod(shape)), use_bias=False, name=layer_name(key))
        y = layer(x)
        _set(layer, from_torch_layout(Entry(key, None, "first", shape), self.w[key + ".weight"]))
        return ops.reshape(y, (-1, *shape))

    def conv_transpose(self, x: Any, key: str, stride: int, padding: str) -> Any:
        return conv_transpose(x, self.w, key, stride, padding)

    def norm2d(self, x: Any, key: str, y: Any | None) -> Any:
        return norm2d(x, self.w, key, y)


def mlp(w: Weights, info: dict[str, Any]) -> keras.Model:
    return generators.mlp(FixedKit(w), info)


def dcgan(w: Weights, info: dict[str, Any]) -> keras.Model:
    return generators.dcgan(FixedKit(w), info)


def sngan(w: Weights, info: dict[str, Any]) -> keras.Model:
    """SNGANGenerator: Linear to 4x4, residual up-blocks (BN, ReLU, nearest 2x, conv3x3, BN, ReLU, conv3x3
    + a 1x1 conv of the up-sampled input), BN, ReLU, conv3x3, tanh."""
    z, y = inputs(info)
    w0 = w["fc.weight"].shape[0] // 16
    x = ops.reshape(linear(with_labels(z, y), w, "fc", nhwc=(w0, 4, 4)), (-1, 4, 4, w0))
    for b in range(count(w, "blocks.{}.c1.weight")):
        key = f"blocks.{b}"
        h = upsample(ops.relu(norm2d(x, w, key + ".n1", y)), layer_name(key + ".up1"))
        h = conv(ops.relu(norm2d(conv(h, w, key + ".c1"), w, key + ".n2", y)), w, key + ".c2")
        x = h + conv(upsample(x, layer_name(key + ".up2")), w, key + ".sc")
    x = ops.tanh(conv(ops.relu(batchnorm(x, w, "bn")), w, "to_img"))
    return keras.Model(model_inputs(z, y), x, name="generator")


def progan(w: Weights, info: dict[str, Any]) -> keras.Model:
    """ProGANGenerator at its final stage (top level, alpha = 1): pixel-normalised z (and label embedding),
    dense to 4x4 + per-channel bias, then nearest 2x + two conv3x3 per level, each lrelu + pixel norm,
    and the top level's linear 1x1 toRGB."""
    z, y = inputs(info)
    x = pixel_norm(z)
    if y is not None:
        x = ops.concatenate([x, pixel_norm(linear(y, w, "label_embed"))], axis=-1)
    c = w["blocks.0.bias"].shape[0]
    bias = np.repeat(w["blocks.0.bias"][:, None], 16, axis=1).reshape(-1)  # the per-channel bias after the view
    x = ops.reshape(linear(x, w, "blocks.0.dense", nhwc=(c, 4, 4), bias=bias), (-1, 4, 4, c))
    x = pixel_norm(lrelu(conv(pixel_norm(lrelu(x)), w, "blocks.0.conv")))
    levels = count(w, "to_rgb.{}.weight")
    for k in range(1, levels):
        x = upsample(x, f"blocks_{k}_up")
        x = pixel_norm(lrelu(conv(x, w, f"blocks.{k}.conv0")))
        x = pixel_norm(lrelu(conv(x, w, f"blocks.{k}.conv1")))
    x = clamp_image(conv(x, w, f"to_rgb.{levels - 1}"))
    return keras.Model(model_inputs(z, y), x, name="generator")


def _stylegan2_mapping(w: Weights, info: dict[str, Any], num_ws: int) -> keras.Model:
    z, y = inputs(info)
    psi = keras.Input((1,), name="psi")
    x = pixel_norm(z)
    if y is not None:
        x = ops.concatenate([x, pixel_norm(linear(y, w, "mapping.embed"))], axis=-1)
    for k in range(count(w, "mapping.layers.{}.weight")):
        x = lrelu(linear(x, w, f"mapping.layers.{k}"))
    # truncation: w_avg + psi * (w - w_avg), every ws (torch's lerp; cutoff None)
    avg = constant(z, w["mapping.w_avg"], "mapping_w_avg")
    x = avg + psi * (x - avg)
    ws = ops.repeat(ops.expand_dims(x, 1), num_ws, axis=1)
    return keras.Model(model_inputs(z, y, psi), ws, name="mapping")


def _modulated(x: Any, w: Weights, key: str, s: Any, demodulate: bool, up: bool) -> Any:
    """modulated_conv2d(fused=False): x * styles, shared conv (stride-2 transposed when up), * demod."""
    weight = w[key + ".weight"]  # (O, I, k, k)
    x = x * ops.expand_dims(ops.expand_dims(s, 1), 1)
    if up:  # torch: conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0) -> 2H + 1
        out = conv_transpose(x, w, key + ".conv", 2, "valid", weight=weight.transpose(1, 0, 2, 3))
    else:  # toRGB (no demodulation) adds its bias straight after the conv
        out = conv(x, w, key, weight=weight, bias=None if demodulate else w[key + ".bias"], name=layer_name(key + ".conv"))
    if demodulate:  # rsqrt(styles^2 @ sum_k w^2 .T + eps)
        dense = layers.Dense(weight.shape[0], use_bias=False, name=layer_name(key + ".demod"))
        d = ops.rsqrt(dense(ops.square(s)) + 1e-8)
        _set(dense, np.square(weight).sum(axis=(2, 3)).T)
        out = out * ops.expand_dims(ops.expand_dims(d, 1), 1)
    return out


def _synthesis_layer(x: Any, ws: Any, i: int, w: Weights, key: str) -> Any:
    """SynthesisLayer `key` driven by ws[:, i]: modulated conv (+ blur when up), const noise, bias, lrelu*sqrt2."""
    s = linear(ws[:, i], w, key + ".affine")
    up = key + ".fir" in w
    x = _modulated(x, w, key, s, demodulate=True, up=up)
    if up:  # the [1,3,3,1] blur: depthwise 4x4, padding 1 -> 2H
        fir = w[key + ".fir"]  # (C, 1, 4, 4)
        blur = layers.DepthwiseConv2D(4, padding="valid", use_bias=False, name=layer_name(key + ".blur"))
        x = blur(layers.ZeroPadding2D(1, name=layer_name(key + ".pad"))(x))
        _set(blur, fir.transpose(2, 3, 0, 1))
    noise = w[key + ".noise_const"] * w[key + ".noise_strength"]
    x = x + constant(ws, noise[:, :, None], layer_name(key + ".noise"))
    x = x + constant(ws, w[key + ".bias"].reshape(1, 1, -1), layer_name(key + ".bias"))
    return lrelu(x) * SQRT2


def _stylegan2_synthesis(w: Weights, info: dict[str, Any]) -> tuple[keras.Model, int]:
    const = w["synthesis.const"]  # (C, 4, 4)
    blocks = count(w, "synthesis.blocks.{}.conv1.weight")
    num_ws = 2 * blocks  # block 0 has one conv, the others two, plus the final toRGB's w
    w_dim = w["synthesis.blocks.0.conv1.affine.weight"].shape[1]
    ws = keras.Input((num_ws, w_dim), name="ws")
    x = constant(ws, const.transpose(1, 2, 0), "synthesis_const")
    img, i = None, 0
    for b in range(blocks):
        key = f"synthesis.blocks.{b}"
        if b > 0:
            x = _synthesis_layer(x, ws, i, w, key + ".conv0")
            i += 1
        x = _synthesis_layer(x, ws, i, w, key + ".conv1")
        s = linear(ws[:, i + 1], w, key + ".torgb.affine") * float(w[key + ".torgb.weight_gain"])
        rgb = _modulated(x, w, key + ".torgb", s, demodulate=False, up=False)
        if img is not None:
            img = upsample(img, f"synthesis_blocks_{b}_img_up", "bilinear")
        img = rgb if img is None else img + rgb
        i += 1  # the next block starts at the w after this block's convs (its toRGB's w, shared as in torch)
    return keras.Model(ws, clamp_image(img), name="synthesis"), num_ws


def stylegan2(w: Weights, info: dict[str, Any]) -> keras.Model:
    """StyleGAN2Generator: synthesis(mapping(z, labels, psi)), with both as nested, reachable models."""
    synthesis, num_ws = _stylegan2_synthesis(w, info)
    mapping = _stylegan2_mapping(w, info, num_ws)
    z, y = inputs(info)
    psi = keras.Input((1,), name="psi")
    ins = model_inputs(z, y, psi)
    return keras.Model(ins, synthesis(mapping(ins)), name="generator")


BUILDERS: dict[str, Callable[[Weights, dict[str, Any]], keras.Model]] = {
    "mlp": mlp, "dcgan": dcgan, "sngan": sngan, "progan": progan, "stylegan2": stylegan2,
}


def build(model: str, w: Weights, info: dict[str, Any]) -> keras.Model:
    """The Keras mirror of a ganforge generator. info: z_dim, resolution, channels, num_labels (None or int)."""
    return BUILDERS[model](w, info)
