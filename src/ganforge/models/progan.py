"""Progressive growing of GANs (ProGAN; Karras et al. 2018) at 32, 64 and 128 pixels.

The full network is built up front, so parameter shapes, checkpoints and optimizer states are the
same in every phase; `set_stage(level, alpha)` picks how much of it runs. Level 0 is 4x4 and level
`levels - 1` the target resolution; alpha fades in the block at `level` (1 = fully in). The stage
lives in float buffers (`stage_level`, `stage_alpha`), so it is saved with the weights and an EMA copy
of G that copies buffers follows it.

Images cross the G/D boundary at the target resolution at every stage: G nearest-upsamples its
current image by the exact integer factor and D average-pools it back by the same factor, which
recovers it exactly. The trainer therefore never resizes anything.

Layout as in the paper's Table 2 and the official code (networks.py G_paper / D_paper): equalized
learning rate everywhere, pixel norm after every G conv, linear toRGB (no tanh), leaky ReLU 0.2,
minibatch stddev before D's last conv, nearest-neighbour 2x up and 2x2 average-pool down.
Channels at resolution r: min(nf * resolution / r, nf_max).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ganforge.models.equalized import EqualizedConv2d, EqualizedLinear, MinibatchStd, pixel_norm
from ganforge.models.layers import Projection, head_logits, label_vector
from ganforge.models.registry import MODELS, ModelFamily, num_labels

SLOPE = 0.2


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, SLOPE)


def num_levels(resolution: int) -> int:
    """Levels from 4x4 up to `resolution` (a power of two >= 8): log2(resolution) - 1."""
    if resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"progan needs a power-of-two resolution >= 8, got {resolution}")
    return int(math.log2(resolution)) - 1


def level_channels(resolution: int, nf: int, nf_max: int) -> list[int]:
    """Channels per level: min(nf * resolution / r, nf_max) at r = 4, 8, ..., resolution."""
    return [min(nf * (resolution // (4 * 2**k)), nf_max) for k in range(num_levels(resolution))]


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling by an integer factor (each pixel becomes a factor x factor block)."""
    return x if factor == 1 else F.interpolate(x, scale_factor=factor, mode="nearest")


def downsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average pooling by an integer factor: the exact inverse of `upsample`."""
    return x if factor == 1 else F.avg_pool2d(x, factor)


def fade_image(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """lerp(up2(avgpool2(x)), x, alpha): the detail above the previous resolution scaled by alpha.

    The official code applies this to the reals while a resolution fades in, so that they are as
    blurry as what a half-faded-in G can produce."""
    return torch.lerp(upsample(downsample(x, 2), 2), x, alpha)


class _Staged(nn.Module):
    """The growth stage (level, alpha) as buffers, with a validating setter."""

    levels: int
    resolution: int

    def _init_stage(self) -> None:
        # default: the finished network, so a fresh or loaded model is a plain full-resolution one
        self.register_buffer("stage_level", torch.tensor(float(self.levels - 1)))
        self.register_buffer("stage_alpha", torch.tensor(1.0))

    @torch.no_grad()
    def set_stage(self, level: int, alpha: float = 1.0) -> None:
        """Run levels 0..`level`, the one at `level` faded in by `alpha` (ignored, stored as 1, at level 0)."""
        if isinstance(level, bool) or not isinstance(level, numbers.Integral):
            raise ValueError(f"stage level must be an int, got {level!r} ({type(level).__name__})")
        if not 0 <= level < self.levels:
            raise ValueError(
                f"stage level must be in 0..{self.levels - 1} (4x4 .. {self.resolution}x{self.resolution}), got {level}"
            )
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"stage alpha must be a number in [0, 1], got {alpha!r}")
        self.stage_level.fill_(float(level))
        self.stage_alpha.fill_(1.0 if level == 0 else float(alpha))

    @property
    def stage(self) -> tuple[int, float]:
        """(level, alpha) from the buffers; checked, since a loaded state_dict bypasses set_stage."""
        level, alpha = int(self.stage_level), float(self.stage_alpha)
        if not 0 <= level < self.levels or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"invalid stored stage (level={level}, alpha={alpha}) for {self.levels} levels")
        return level, alpha

    @property
    def stage_resolution(self) -> int:
        """Resolution the current stage really produces / looks at."""
        return 4 * 2 ** self.stage[0]


class GInput(nn.Module):
    """4x4 block: latent -> dense to c x 4 x 4 -> lrelu, PN -> conv3x3 -> lrelu, PN."""

    def __init__(self, in_dim: int, c: int) -> None:
        super().__init__()
        # gain sqrt(2)/4 and a per-channel bias after the reshape, as the official code (which matches
        # the original Theano implementation): the dense acts like a 4x4 transposed conv from 1x1
        self.dense = EqualizedLinear(in_dim, c * 16, bias=False, gain=2.0 / 16)
        self.bias = nn.Parameter(torch.zeros(c))
        self.conv = EqualizedConv2d(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dense(x).view(x.shape[0], -1, 4, 4) + self.bias.view(1, -1, 1, 1)
        h = pixel_norm(_lrelu(h))
        return pixel_norm(_lrelu(self.conv(h)))


class GBlock(nn.Module):
    """2x nearest upsample -> (conv3x3 -> lrelu -> PN) x 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(c_in, c_out, 3)
        self.conv1 = EqualizedConv2d(c_out, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = pixel_norm(_lrelu(self.conv0(upsample(x, 2))))
        return pixel_norm(_lrelu(self.conv1(h)))


class ProGANGenerator(_Staged):
    """G(z, labels=None) -> (N, channels, resolution, resolution), linear output (no tanh, as the paper).

    Conditional: the label vector (one-hot class or multi-hot attributes) goes through a learned
    EqualizedLinear embedding of size z_dim; z and the embedding are pixel-normalized separately and
    concatenated. (The official code concatenates the raw one-hot to z and pixel-normalizes the
    whole, which leaves the label 1/(z_dim + 1) of the input's energy; separate normalization gives
    it half.)"""

    def __init__(
        self, z_dim: int, resolution: int, channels: int, nf: int = 64, nf_max: int = 512,
        labels: int | None = None,
    ) -> None:
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.num_labels = z_dim, resolution, channels, labels
        self.levels = num_levels(resolution)
        ch = level_channels(resolution, nf, nf_max)
        self.label_embed = EqualizedLinear(labels, z_dim, bias=False, gain=1.0) if labels else None
        blocks: list[nn.Module] = [GInput(z_dim * (2 if labels else 1), ch[0])]
        blocks += [GBlock(ch[k - 1], ch[k]) for k in range(1, self.levels)]
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = nn.ModuleList(EqualizedConv2d(c, channels, 1, gain=1.0) for c in ch)
        self._init_stage()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        level, alpha = self.stage
        x = pixel_norm(z.flatten(1))
        if self.label_embed is not None:
            if labels is None:
                raise ValueError("this generator is conditional: pass labels")
            y = self.label_embed(label_vector(labels, self.num_labels).to(x.dtype))
            x = torch.cat([x, pixel_norm(y)], dim=1)
        h = self.blocks[0](x)
        prev = h
        for k in range(1, level + 1):  # levels above the stage are never run
            prev, h = h, self.blocks[k](h)
        img = self.to_rgb[level](h)
        if level > 0 and alpha < 1.0:
            img = torch.lerp(upsample(self.to_rgb[level - 1](prev), 2), img, alpha)
        return upsample(img, 2 ** (self.levels - 1 - level))


class DBlock(nn.Module):
    """conv3x3 -> lrelu -> conv3x3 (to the next level's width) -> lrelu -> 2x2 average pool."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0 = EqualizedConv2d(c_in, c_in, 3)
        self.conv1 = EqualizedConv2d(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return downsample(_lrelu(self.conv1(_lrelu(self.conv0(x)))), 2)


class DOutput(nn.Module):
    """4x4 block: minibatch stddev -> conv3x3 -> lrelu -> flatten, dense -> lrelu: features (N, c)."""

    def __init__(self, c: int, mbstd_group: int) -> None:
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group, 1)
        self.conv = EqualizedConv2d(c + 1, c, 3)
        self.dense = EqualizedLinear(c * 16, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = _lrelu(self.conv(self.mbstd(x)))
        return _lrelu(self.dense(h.flatten(1)))


class ProGANDiscriminator(_Staged):
    """D(x, labels=None) -> logits (N,); x at the target resolution whatever the stage.

    While a level fades in (0 < level, alpha < 1), D must not be able to tell reals from fakes by
    sharpness alone while G cannot yet produce full detail. As in the official code, the trainer blends
    the reals (`fade_reals`); G's own fade already scales the new detail of fakes by alpha.
    `blend_inputs=True` blends every input inside D instead (fakes then get alpha**2).
    """

    def __init__(
        self, resolution: int, channels: int, nf: int = 64, nf_max: int = 512, mbstd_group: int = 4,
        labels: int | None = None, blend_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.resolution, self.channels, self.num_labels = resolution, channels, labels
        self.blend_inputs = blend_inputs
        self.levels = num_levels(resolution)
        ch = level_channels(resolution, nf, nf_max)
        self.from_rgb = nn.ModuleList(EqualizedConv2d(channels, c, 1) for c in ch)
        blocks: list[nn.Module] = [DOutput(ch[0], mbstd_group)]
        blocks += [DBlock(ch[k], ch[k - 1]) for k in range(1, self.levels)]
        self.blocks = nn.ModuleList(blocks)
        self.head = EqualizedLinear(ch[0], 1, gain=1.0)
        self.projection = Projection(labels, ch[0]) if labels else None
        self._init_stage()

    def fade_reals(self, x: torch.Tensor) -> torch.Tensor:
        """Real images as D should see them at the current stage (target size): during a fade-in, their
        detail above the previous resolution scaled by alpha, like G's output."""
        level, alpha = self.stage
        if level == 0 or alpha >= 1.0:
            return x
        f = 2 ** (self.levels - 1 - level)
        return upsample(fade_image(downsample(x, f), alpha), f)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"D takes {self.resolution}x{self.resolution} images at every stage, got {tuple(x.shape)}")
        level, alpha = self.stage
        x = downsample(x, 2 ** (self.levels - 1 - level))
        fading = level > 0 and alpha < 1.0
        if fading and self.blend_inputs:
            x = fade_image(x, alpha)
        h = self.blocks[level](_lrelu(self.from_rgb[level](x)))
        if fading:
            h = torch.lerp(_lrelu(self.from_rgb[level - 1](downsample(x, 2))), h, alpha)
        for k in range(level - 1, -1, -1):
            h = self.blocks[k](h)
        return head_logits(self.head, self.projection, h, labels)


def _g(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return ProGANGenerator(m["z_dim"], d["resolution"], d["channels"], m["nf"], m["nf_max"], num_labels(cfg))


def _d(cfg: dict[str, Any]) -> nn.Module:
    m, d = cfg["model"], cfg["data"]
    return ProGANDiscriminator(d["resolution"], d["channels"], m.get("d_nf") or m["nf"], m["nf_max"],
                               m["mbstd_group"], num_labels(cfg))


MODELS.register("progan")(
    ModelFamily(_g, _d, resolutions=(32, 64, 128), description="Progressive growing GAN (Karras et al. 2018)")
)
