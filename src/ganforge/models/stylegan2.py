"""StyleGAN2 (Karras et al. 2020), config F layout at 32, 64 and 128 pixels, laid out like NVlabs'
stylegan2-ada-pytorch (`training/networks.py`) so that ws indices and layer names mean the same thing.

Generator: a mapping network z -> w (with a tracked average w for truncation), a synthesis network
of modulated/demodulated 3x3 convolutions with per-layer noise from a learned 4x4 constant, and a
"skip" output: every resolution adds its toRGB to the upsampled image so far. Discriminator: the
residual architecture with minibatch-stddev and (conditional) a projection head.

Up-sampling is the paper's: a stride-2 transposed modulated conv, then the [1,3,3,1] FIR blur (a
depthwise conv). Modulated convs run fused (batch folded into the groups of one conv) in eval mode on
GPUs, and per-activation otherwise, as stylegan2-ada does in training; on CPUs the grouped conv is
2-3x slower, and the per-activation form exports to ONNX with a dynamic batch size.

Simplifications relative to the paper, all to stay in plain PyTorch ops (CPU, ONNX):
- The toRGB image is up-sampled bilinearly: zero insertion + the same [1,3,3,1] filter, so this
  differs from the paper's upsample2d only at the image border (edge replication vs. zero padding).
- D down-samples with a 2x2 average pool (box filter) instead of the [1,3,3,1] blur; its second conv
  runs after the pool (the cost of the paper's stride-2 conv), its skip is pool + 1x1 conv.
- No activation clamping and no per-layer fp16 (the official code's conv_clamp and num_fp16_res); mixed precision
  is the trainer's `train.amp` (autocast over the whole forward pass, fp16 with a loss scaler, or bf16).
- The sqrt(2) gain of the mapping and D layers is in the weight scale (EqualizedLinear/Conv2d's
  He constant lr_mul * sqrt(2 / fan_in)) instead of after the leaky ReLU: lrelu(a x) = a lrelu(x)
  for a > 0, so it is the same function (biases start at zero; only the bias step size differs by
  sqrt(2)). Demodulated synthesis convs have no weight scale to put it in, so they keep lrelu * sqrt(2).
- The conditional D embeds labels with a 2-layer mapping (stylegan2-ada uses 8).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.config import Key, extend_schema
from ganforge.models.equalized import EqualizedConv2d, EqualizedLinear, MinibatchStd, pixel_norm
from ganforge.models.layers import label_vector
from ganforge.models.registry import MODELS, ModelFamily, num_labels

extend_schema("model", {
    "w_dim": Key(None, int, "stylegan2: size of the intermediate latent w (null = z_dim)", min=1, max=4096, nullable=True),
    "mapping_layers": Key(8, int, "stylegan2: fully connected layers of the mapping network", min=1, max=32),
    "mapping_lr_mult": Key(0.01, float, "stylegan2: learning-rate multiplier of the mapping network", min=1e-6, max=1.0),
    "style_mixing": Key(0.9, float, "stylegan2: probability of style mixing regularization per batch", min=0.0, max=1.0),
    "w_avg_beta": Key(0.995, float, "stylegan2: decay of the tracked average w (truncation centre)", min=0.0, max=1.0),
}, owner="stylegan2")

SQRT2 = math.sqrt(2.0)
NOISE_MODES = ("random", "const", "none")


def channels_at(r: int, resolution: int, nf: int, nf_max: int) -> int:
    """Feature maps at resolution r: nf at the output resolution, doubling per halving up to nf_max."""
    return min(nf * (resolution // r), nf_max)


def _lrelu(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    x = F.leaky_relu(x, 0.2)
    return x * gain if gain != 1.0 else x


def modulated_conv2d(
    x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True, padding: int = 1,
    up: bool = False, fused: bool = True, eps: float = 1e-8,
) -> torch.Tensor:
    """Convolve each sample with the weight scaled by its styles (per input channel), optionally
    demodulated to unit L2 norm per output channel: x (N, I, H, W), weight (O, I, kh, kw), styles (N, I).

    fused=True folds the batch into the groups of one grouped convolution (one kernel call for the
    batch, plain conv2d for ONNX; the batch size becomes part of the graph). fused=False is the same
    function computed on the activations (x * s, a shared conv, * demodulation coefficients), which is
    faster on CPUs and in training; stylegan2-ada also uses it while training.
    up=True is a stride-2 transposed conv (zero insertion + conv, output 2H - 1 + kh - 2 * padding);
    the caller applies the anti-aliasing blur."""
    n = x.shape[0]
    o, i, kh, kw = weight.shape
    if fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # (N, O, I, kh, kw)
        if demodulate:
            w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + eps)
        xg = x.reshape(1, -1, *x.shape[2:])
        if up:
            out = F.conv_transpose2d(xg, w.transpose(1, 2).reshape(-1, o, kh, kw), stride=2, padding=padding, groups=n)
        else:
            out = F.conv2d(xg, w.reshape(-1, i, kh, kw), padding=padding, groups=n)
        return out.reshape(n, o, *out.shape[2:])
    x = x * styles.reshape(n, i, 1, 1).to(x.dtype)
    if up:
        out = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=padding)
    else:
        out = F.conv2d(x, weight, padding=padding)
    if demodulate:  # sum_{i,k} (w_oik s_ni)^2 = (s^2 @ sum_k w^2 .T)_no
        d = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + eps)
        out = out * d.reshape(n, o, 1, 1).to(out.dtype)
    return out


def _fir_kernel(channels: int) -> torch.Tensor:
    """The paper's [1,3,3,1] x [1,3,3,1] anti-aliasing filter, gain 4 (for 2x up-sampling), depthwise."""
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    f2 = torch.outer(f, f)
    return (f2 * (4.0 / f2.sum())).expand(channels, 1, 4, 4).contiguous()


# --- mapping -------------------------------------------------------------------------------------
class MappingNetwork(nn.Module):
    """z (+ label) -> w, broadcast to (N, num_ws, w_dim). Tracks w_avg, the centre of truncation."""

    def __init__(
        self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_mul: float = 0.01,
        w_avg_beta: float = 0.995, labels: int | None = None,
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_labels = z_dim, w_dim, num_ws, labels
        self.w_avg_beta = w_avg_beta
        # conditional (as stylegan2-ada): a linear label embedding, pixel-normalised like z and concatenated
        self.embed = EqualizedLinear(labels, w_dim, gain=1.0) if labels else None
        dims = [z_dim + (w_dim if labels else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(EqualizedLinear(dims[k], dims[k + 1], lr_mul=lr_mul) for k in range(num_layers))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None, update_w_avg: bool = True,
    ) -> torch.Tensor:
        x = pixel_norm(z.flatten(1))
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels")
            y = pixel_norm(self.embed(label_vector(labels, self.num_labels).to(x.dtype)))
            x = torch.cat([x, y], dim=1)
        for layer in self.layers:
            x = _lrelu(layer(x))  # the sqrt(2) gain is in the layer's weight scale (module docstring)
        if self.training and update_w_avg:
            with torch.no_grad():
                self.w_avg.lerp_(x.detach().mean(dim=0).to(self.w_avg.dtype), 1.0 - self.w_avg_beta)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # a real copy: callers may edit ws in place
        if truncation_psi != 1:
            avg = self.w_avg.to(ws.dtype)
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = torch.cat([avg.lerp(ws[:, :cut], truncation_psi), ws[:, cut:]], dim=1)
        return ws


# --- synthesis -----------------------------------------------------------------------------------
class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (the first of a block up-samples 2x) + noise + bias + lrelu * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False) -> None:
        super().__init__()
        self.resolution, self.up = resolution, up
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0, gain=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros(()))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        if up:
            self.register_buffer("fir", _fir_kernel(out_channels), persistent=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused: bool = True) -> torch.Tensor:
        # no weight scale: demodulation normalises the weights anyway
        styles = self.affine(w)
        if self.up:
            # as the paper: transposed conv (at the low resolution's cost), then the [1,3,3,1] blur
            x = modulated_conv2d(x, self.weight, styles, demodulate=True, padding=0, up=True, fused=fused)
            x = F.conv2d(x, self.fir.to(x.dtype), padding=1, groups=x.shape[1])  # 2H+1 -> 2H
        else:
            x = modulated_conv2d(x, self.weight, styles, demodulate=True, padding=1, fused=fused)
        if noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return _lrelu(x + self.bias.view(1, -1, 1, 1), SQRT2)

    def extra_repr(self) -> str:
        o, i = self.weight.shape[:2]
        return f"{i}, {o}, resolution={self.resolution}, up={self.up}"


class ToRGB(nn.Module):
    """Modulated 1x1 conv without demodulation: the image contribution of one resolution (linear)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0, gain=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)  # no demodulation, so equalized lr through the styles

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        out = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=0, fused=fused)
        return out + self.bias.view(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution: [conv0 (up)], conv1, toRGB. Uses ws[:, w_index : w_index + num_conv + 1]."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 w_index: int) -> None:
        super().__init__()
        self.resolution, self.w_index = resolution, w_index
        self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True) if resolution > 4 else None
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.num_conv = 2 if self.conv0 is not None else 1

    def layers(self) -> list[tuple[int, nn.Module]]:
        """(ws index, layer) of every modulated layer; toRGB takes the w after the convs (shared with the
        next block's first conv), as in stylegan2-ada."""
        convs = [c for c in (self.conv0, self.conv1) if c is not None]
        return [(self.w_index + k, c) for k, c in enumerate(convs)] + [(self.w_index + self.num_conv, self.torgb)]

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                fused: bool) -> tuple[torch.Tensor, torch.Tensor]:
        i = self.w_index
        if self.conv0 is not None:
            x = self.conv0(x, ws[:, i], noise_mode, fused)
            i += 1
        x = self.conv1(x, ws[:, i], noise_mode, fused)
        y = self.torgb(x, ws[:, i + 1], fused)
        # bilinear 2x = zero insertion + the same [1,3,3,1] filter (the paper's upsample2d) up to the border
        img = y if img is None else F.interpolate(img, scale_factor=2.0, mode="bilinear", align_corners=False) + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws (N, num_ws, w_dim) -> images (N, channels, resolution, resolution), linear output."""

    def __init__(self, w_dim: int, resolution: int, channels: int, nf: int, nf_max: int) -> None:
        super().__init__()
        assert resolution >= 8 and resolution & (resolution - 1) == 0, resolution
        self.w_dim, self.resolution, self.channels = w_dim, resolution, channels
        c4 = channels_at(4, resolution, nf, nf_max)
        self.const = nn.Parameter(torch.randn(c4, 4, 4))
        blocks, w_index, r, c_in = [], 0, 4, c4
        while r <= resolution:
            c_out = channels_at(r, resolution, nf, nf_max)
            block = SynthesisBlock(c_in, c_out, w_dim, r, channels, w_index)
            blocks.append(block)
            w_index += block.num_conv
            r, c_in = r * 2, c_out
        self.blocks = nn.ModuleList(blocks)
        self.num_ws = w_index + 1  # every conv has its own w, plus one for the last toRGB
        # w i drives conv i; the last w only the final toRGB (the others also feed the previous block's toRGB)
        self.ws_resolutions: list[int] = [b.resolution for b in self.blocks for _ in range(b.num_conv)] + [resolution]

    def modulated_layers(self) -> list[tuple[int, nn.Module]]:
        return [pair for b in self.blocks for pair in b.layers()]

    def affines(self) -> list[tuple[int, nn.Module]]:
        """(ws index, affine) of every modulated layer in ws order: hook these to see which w each used."""
        return [(i, layer.affine) for i, layer in self.modulated_layers()]

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | None = None) -> torch.Tensor:
        """fused_modconv=None: fused in eval mode off the CPU, per-activation otherwise (see module docstring)."""
        fused = (not self.training and ws.device.type != "cpu") if fused_modconv is None else fused_modconv
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, not {noise_mode!r}")
        if ws.dim() != 3 or ws.shape[1] != self.num_ws:
            raise ValueError(f"ws must have shape (N, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1).to(ws.dtype)
        img = None
        for block in self.blocks:
            x, img = block(x, img, ws, noise_mode, fused)
        assert img is not None
        return img


class StyleGAN2Generator(nn.Module):
    """G(z, labels) = synthesis(mapping(z, labels)), with style mixing regularisation in training mode."""

    def __init__(
        self, z_dim: int, resolution: int, channels: int, w_dim: int | None = None, nf: int = 64,
        nf_max: int = 512, mapping_layers: int = 8, mapping_lr_mult: float = 0.01, style_mixing: float = 0.9,
        w_avg_beta: float = 0.995, labels: int | None = None,
    ) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim or z_dim
        self.resolution, self.channels, self.num_labels = resolution, channels, labels
        self.style_mixing = style_mixing
        self.synthesis = SynthesisNetwork(self.w_dim, resolution, channels, nf, nf_max)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, self.w_dim, self.num_ws, mapping_layers, mapping_lr_mult, w_avg_beta,
                                      labels)

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    @property
    def ws_resolutions(self) -> list[int]:
        """The resolution of the conv each ws index drives (index i also feeds the previous block's toRGB)."""
        return self.synthesis.ws_resolutions

    def forward(
        self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None, noise_mode: str | None = None,
    ) -> torch.Tensor:
        """noise_mode None: fresh noise in training, the fixed per-layer noise in eval mode, so that sampling a
        seed gives the same image every time (as stylegan2-ada's generate.py does)."""
        ws = self.mapping(z, labels, truncation_psi, truncation_cutoff)
        if self.training and self.style_mixing > 0:
            ws = self._mix(z, labels, ws, truncation_psi, truncation_cutoff)
        if noise_mode is None:
            noise_mode = "random" if self.training else "const"
        return self.synthesis(ws, noise_mode)

    def _mix(self, z: torch.Tensor, labels: torch.Tensor | None, ws: torch.Tensor, psi: float,
             cutoff: int | None) -> torch.Tensor:
        """With probability style_mixing, ws[:, k:] from a second z, k ~ U{1, ..., num_ws - 1}.

        The coin, k and the second z are drawn from the global CPU generator whatever the device, so a
        checkpointed RNG state replays the same mixing on any device."""
        if torch.rand(()).item() >= self.style_mixing:
            return ws
        k = int(torch.randint(1, self.num_ws, ()).item())
        z2 = torch.randn(z.shape, dtype=z.dtype).to(z.device)
        ws2 = self.mapping(z2, labels, psi, cutoff, update_w_avg=False)
        return torch.cat([ws[:, :k], ws2[:, k:]], dim=1)


# --- discriminator -------------------------------------------------------------------------------
class DiscriminatorBlock(nn.Module):
    """Residual block: (conv3x3, lrelu, 2x down, conv3x3, lrelu) + 1x1 conv of the pooled input, / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)
        self.skip = EqualizedConv2d(in_channels, out_channels, 1, bias=False, gain=1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(F.avg_pool2d(x, 2))
        x = _lrelu(self.conv0(x))
        x = _lrelu(self.conv1(F.avg_pool2d(x, 2)))  # pool first: the cost of the paper's stride-2 conv
        return (x + y) * (1.0 / SQRT2)


class LabelMapping(nn.Module):
    """Label -> cmap (the conditional D's projection vector): embed, pixel-normalise, 2 lrelu FC layers."""

    def __init__(self, labels: int, dim: int, lr_mul: float, num_layers: int = 2) -> None:
        super().__init__()
        self.num_labels = labels
        self.embed = EqualizedLinear(labels, dim, gain=1.0)
        self.layers = nn.ModuleList(EqualizedLinear(dim, dim, lr_mul=lr_mul) for _ in range(num_layers))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(self.embed(label_vector(labels, self.num_labels)))
        for layer in self.layers:
            x = _lrelu(layer(x))
        return x


class StyleGAN2Discriminator(nn.Module):
    """Residual D: fromRGB, blocks down to 4x4, epilogue (mbstd, conv, fc, out) -> logits (N,)."""

    def __init__(
        self, resolution: int, channels: int, nf: int = 64, nf_max: int = 512, mbstd_group: int = 4,
        labels: int | None = None, mapping_lr_mult: float = 0.01,
    ) -> None:
        super().__init__()
        assert resolution >= 8 and resolution & (resolution - 1) == 0, resolution
        self.resolution, self.channels, self.num_labels = resolution, channels, labels
        self.fromrgb = EqualizedConv2d(channels, channels_at(resolution, resolution, nf, nf_max), 1)
        blocks, r = [], resolution
        while r > 4:
            blocks.append(DiscriminatorBlock(channels_at(r, resolution, nf, nf_max),
                                             channels_at(r // 2, resolution, nf, nf_max)))
            r //= 2
        self.blocks = nn.ModuleList(blocks)
        c4 = channels_at(4, resolution, nf, nf_max)
        self.mbstd = MinibatchStd(mbstd_group, 1)
        self.conv = EqualizedConv2d(c4 + 1, c4, 3)
        self.fc = EqualizedLinear(c4 * 16, c4)
        self.cmap_dim = c4 if labels else 0
        self.out = EqualizedLinear(c4, self.cmap_dim or 1, gain=1.0)
        self.cmap = LabelMapping(labels, c4, mapping_lr_mult) if labels else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = _lrelu(self.fromrgb(x))
        for block in self.blocks:
            h = block(h)
        h = _lrelu(self.conv(self.mbstd(h)))
        h = self.out(_lrelu(self.fc(h.flatten(1))))
        if self.cmap is None:
            return h.squeeze(1)
        if labels is None:
            raise ValueError("this discriminator is conditional: pass labels")
        # projection (Miyato & Koyama 2018) in stylegan2-ada's form
        return (h * self.cmap(labels).to(h.dtype)).sum(dim=1) * (1.0 / math.sqrt(self.cmap_dim))


# --- registration --------------------------------------------------------------------------------
def _g(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return StyleGAN2Generator(
        m["z_dim"], d["resolution"], d["channels"], w_dim=m["w_dim"] or m["z_dim"], nf=m["nf"], nf_max=m["nf_max"],
        mapping_layers=m["mapping_layers"], mapping_lr_mult=m["mapping_lr_mult"], style_mixing=m["style_mixing"],
        w_avg_beta=m["w_avg_beta"], labels=num_labels(cfg),
    )


def _d(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return StyleGAN2Discriminator(
        d["resolution"], d["channels"], nf=m.get("d_nf") or m["nf"], nf_max=m["nf_max"], mbstd_group=m["mbstd_group"],
        labels=num_labels(cfg), mapping_lr_mult=m["mapping_lr_mult"],
    )


MODELS.register("stylegan2")(
    ModelFamily(
        _g,
        _d,
        resolutions=(32, 64, 128),
        description="StyleGAN2 (Karras et al. 2020), skip G / residual D",
        styles=True,
    )
)
