"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

Every image D sees (real and fake) goes through the same random, differentiable augmentations, each
applied per sample with probability p; p follows D's overfitting: r_t = E[sign(D(real))] above the target
means D is too sure of the reals, so p goes up, and down otherwise. Below p ~ 0.8 these augmentations do
not leak into G's output (the paper's "non-leaking" argument holds for exactly these distributions), which
is why they are drawn and composed as in stylegan2-ada-pytorch's `AugmentPipe`.

Transform groups ('b', 'g', 'c' in `pipeline`), in the official order and with the official distributions:

- b (blit): xflip, rotate90 (k quarter turns, k uniform in 0..3), xint (integer shift, up to 1/8 of the side);
- g (geometric): scale (factor 2^N(0, 0.2)), rotate (uniform angle, as a pre- and a post-rotation around the
  anisotropic scaling, each with p_rot = 1 - sqrt(1 - p) so that P(any rotation) = p), aniso (2^N(0, 0.2)
  along x, its inverse along y), xfrac (shift N(0, 0.125) of the side);
- c (colour): brightness (+N(0, 0.2)), contrast (2^N(0, 0.5), around 0), lumaflip (Householder reflection
  of the luma axis), hue (rotation around the luma axis, uniform angle), saturation (2^N(0, 1)).
Images are expected in about [-1, 1] (contrast and lumaflip act around 0).

xflip and lumaflip, once selected, flip with probability 1/2 and rotate90 draws k = 0 with probability 1/4,
as in the official code; `last_applied` counts selected samples.

Execution: all blit and geometric transforms compose into one 3x3 matrix per sample (output pixel -> input
pixel) and are resampled once. When no sample of the batch drew a continuous geometric transform (and the
image is square) the matrix maps pixel centres onto pixel centres and is applied as one exact index gather
(pixel values are copied bit for bit); otherwise one bilinear `grid_sample` with reflection about the border pixel centres (`align_corners=True`,
the same reflection as the gather and as the official `F.pad(mode='reflect')`) does the whole batch, and
samples that drew nothing geometric are passed through unchanged. Unlike the paper, there is no 2x
anti-aliasing upsample / sym6 wavelet filter around the resampling: at 32x32 on a CPU it would cost more than
everything else, and bilinear is what most reimplementations use. All colour transforms compose into one
4x4 matrix per sample applied once; for 1-channel images the matrix is reduced the official way (average of
the RGB rows, applied to a gray pixel), so brightness and contrast act as usual, lumaflip becomes x -> -x,
and hue and saturation, which leave gray pixels unchanged, are not applied (their count stays 0).

Randomness: each call with p > 0 draws exactly one (N, 21) uniform and one (N, 7) normal tensor from the
caller's generator, whatever the pipeline, p or channel count; a call with p == 0 returns `x` itself and
draws nothing. Parameters are built in float32 on the generator's device, so results are bit-reproducible
and resumable, and with a CPU generator the only host/device traffic is the final small matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ganforge.errors import UserError

_GROUPS = {
    "b": ("xflip", "rotate90", "xint"),
    "g": ("scale", "rotate", "aniso", "xfrac"),
    "c": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
}
ADA_TRANSFORMS: tuple[str, ...] = tuple(name for names in _GROUPS.values() for name in names)

# Columns of the per-call uniform draw: 13 selection gates (rotate has a pre and a post gate), then values.
_GATES = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "rotate", "xfrac",
          "brightness", "contrast", "lumaflip", "hue", "saturation")
_U_FLIP, _U_ROT90, _U_XINT, _U_PRE, _U_POST, _U_LUMA, _U_HUE = 13, 14, 15, 17, 18, 19, 20
_N_UNIFORM = 21
# Columns of the per-call normal draw.
_Z_SCALE, _Z_ANISO, _Z_XFRAC, _Z_BRIGHT, _Z_CONTRAST, _Z_SAT = 0, 1, 2, 4, 5, 6
_N_NORMAL = 7

_SCALE_STD, _ANISO_STD, _XFRAC_STD, _XINT_MAX = 0.2, 0.2, 0.125, 0.125
_BRIGHTNESS_STD, _CONTRAST_STD, _SATURATION_STD = 0.2, 0.5, 1.0
_LUMA = 1.0 / math.sqrt(3.0)  # each component of the unit luma axis (1, 1, 1) / sqrt(3)


# ---------------------------------------------------------------------------------------------------------
# Single-transform batched matrices, the definition of each transform (the closed forms below are tested
# against their products). Arguments are (N,) tensors or Python floats; results are (N, k, k).


def _matrix(rows: Sequence[Sequence[torch.Tensor | float]], like: torch.Tensor) -> torch.Tensor:
    consts: dict[float, torch.Tensor] = {}  # one tensor per distinct constant: these are tiny, the op count is not
    elems = []
    for e in (e for row in rows for e in row):
        if not isinstance(e, torch.Tensor):
            e = consts[e] if e in consts else consts.setdefault(e, torch.full_like(like, e))
        elems.append(e)
    return torch.stack(elems, dim=-1).view(like.shape[0], len(rows), len(rows[0]))


def _scale2d(sx: torch.Tensor | float, sy: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], like)


def _rotate2d(cos: torch.Tensor | float, sin: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Rotation by the angle with this cos/sin (passed separately so quarter turns stay exact integers)."""
    return _matrix([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], like)


def _translate2d(tx: torch.Tensor | float, ty: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    return _matrix([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], like)


def _brightness(b: torch.Tensor) -> torch.Tensor:
    return _matrix([[1.0, 0.0, 0.0, b], [0.0, 1.0, 0.0, b], [0.0, 0.0, 1.0, b], [0.0, 0.0, 0.0, 1.0]], b)


def _contrast(c: torch.Tensor) -> torch.Tensor:
    return _matrix([[c, 0.0, 0.0, 0.0], [0.0, c, 0.0, 0.0], [0.0, 0.0, c, 0.0], [0.0, 0.0, 0.0, 1.0]], c)


def _luma_projector(like: torch.Tensor) -> torch.Tensor:
    v = torch.tensor([_LUMA, _LUMA, _LUMA, 0.0], dtype=like.dtype, device=like.device)
    return torch.outer(v, v)


def _lumaflip(i: torch.Tensor) -> torch.Tensor:
    """Householder reflection of the luma axis where i == 1, identity where i == 0."""
    eye = torch.eye(4, dtype=i.dtype, device=i.device)
    return eye - 2 * _luma_projector(i) * i.view(-1, 1, 1)


def _hue(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by theta around the luma axis (Rodrigues' formula with v = (1, 1, 1) / sqrt(3))."""
    s, c = torch.sin(theta), torch.cos(theta)
    d, o1, o2 = c + (1 - c) / 3, (1 - c) / 3 - _LUMA * s, (1 - c) / 3 + _LUMA * s
    return _matrix([[d, o1, o2, 0.0], [o2, d, o1, 0.0], [o1, o2, d, 0.0], [0.0, 0.0, 0.0, 1.0]], theta)


def _saturation(s: torch.Tensor) -> torch.Tensor:
    """Keep the luma component, scale the chroma (the part orthogonal to the luma axis) by s."""
    vv = _luma_projector(s)
    rgb = torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=s.dtype, device=s.device))
    return vv + (rgb - vv) * s.view(-1, 1, 1) + (torch.eye(4, dtype=s.dtype, device=s.device) - rgb)


# ---------------------------------------------------------------------------------------------------------
# Execution.


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Fold integer indices into [0, size) by mirroring about the first and last pixel centres."""
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    i = i.remainder(period)
    return torch.where(i >= size, period - i, i)


def _warp(x: torch.Tensor, g_inv: torch.Tensor, exact: bool) -> torch.Tensor:
    """Resample x through g_inv (N, 3, 3): output pixel -> input pixel, in pixel units about the image centre.

    exact=True needs integer matrices that map pixel centres onto pixel centres (flips, quarter turns of a
    square image, integer shifts) and copies values with one gather; otherwise one bilinear grid_sample.
    """
    n, c, h, w = x.shape
    if exact:
        dev = g_inv.device
        # Doubled centred coordinates are integers for both even and odd sides; the homogeneous 2 doubles t.
        u = torch.arange(w, device=dev) * 2 - (w - 1)
        v = torch.arange(h, device=dev) * 2 - (h - 1)
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        base = torch.stack([uu.flatten(), vv.flatten(), torch.full_like(uu.flatten(), 2)])  # (3, HW)
        m = g_inv[:, :2, :].round().long()
        src = (m.unsqueeze(-1) * base).sum(dim=2)  # (N, 2, HW)
        sj = _reflect(torch.div(src[:, 0] + (w - 1), 2, rounding_mode="floor"), w)
        si = _reflect(torch.div(src[:, 1] + (h - 1), 2, rounding_mode="floor"), h)
        idx = (si * w + sj).to(x.device)
        return x.reshape(n, c, h * w).gather(2, idx.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)
    # align_corners=True: normalised -1 and 1 are the outer pixel centres, so pixel -> normalised is 2 / (side - 1).
    s = torch.tensor([2 / max(w - 1, 1), 2 / max(h - 1, 1), 1.0], dtype=g_inv.dtype, device=g_inv.device)
    theta = (g_inv[:, :2, :] * (s[:2].view(2, 1) / s.view(1, 3))).to(x.device, x.dtype)
    # The affine_grid(theta, align_corners=True) grid built by broadcasting: several times faster on a CPU.
    gx = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w)
    gy = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype).view(1, 1, h)
    rows = theta[:, :, 1:2] * gy + theta[:, :, 2:3]  # (N, 2, H)
    grid = torch.addcmul(rows.unsqueeze(-1), theta[:, :, 0, None, None], gx).permute(0, 2, 3, 1)  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _recolor(x: torch.Tensor, cm: torch.Tensor) -> torch.Tensor:
    """Apply per-sample homogeneous colour matrices cm (N, 4, 4) to RGB or (reduced the official way) L images."""
    n, c, h, w = x.shape
    if c == 3:
        cm = cm.to(x.device, x.dtype)
        return torch.baddbmm(cm[:, :3, 3:], cm[:, :3, :3], x.reshape(n, 3, h * w)).view(n, c, h, w)
    if c == 1:
        row = cm[:, :3, :].mean(dim=1)  # what a gray pixel (l, l, l) becomes, averaged back to one channel
        gain = row[:, :3].sum(dim=1).to(x.device, x.dtype).view(n, 1, 1, 1)
        return x * gain + row[:, 3].to(x.device, x.dtype).view(n, 1, 1, 1)
    raise UserError(f"ADA colour transforms need 1 or 3 channels, got {c}; use ada_pipeline 'bg' for other images")


# ---------------------------------------------------------------------------------------------------------
# Parameters from one call's draws (unselected transforms get identity parameters: value * gate), and their
# composition in closed form: the same matrices as multiplying the single-transform helpers above in the
# official order (the tests check this), in a few dozen elementwise ops instead of ~100 tiny tensor ops.


def _geometric_params(u: torch.Tensor, z: torch.Tensor, gf: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """flip (+-1), k (quarter turns), integer shift (N, 2) px, iso scale, pre angle, aniso, post angle, shift px."""
    flip = 1 - 2 * torch.floor(u[:, _U_FLIP] * 2) * gf[:, 0]
    k = (torch.floor(u[:, _U_ROT90] * 4) * gf[:, 1]).long()
    side = torch.tensor([w, h], dtype=u.dtype, device=u.device)
    t_int = torch.round((u[:, _U_XINT : _U_XINT + 2] * 2 - 1) * _XINT_MAX * gf[:, 2:3] * side)
    s_iso = torch.exp2(z[:, _Z_SCALE] * _SCALE_STD * gf[:, 3])
    th_pre = (u[:, _U_PRE] * 2 - 1) * math.pi * gf[:, 4]
    s_an = torch.exp2(z[:, _Z_ANISO] * _ANISO_STD * gf[:, 5])
    th_post = (u[:, _U_POST] * 2 - 1) * math.pi * gf[:, 6]
    t_frac = z[:, _Z_XFRAC : _Z_XFRAC + 2] * _XFRAC_STD * gf[:, 7:8] * side
    return flip, k, t_int, s_iso, th_pre, s_an, th_post, t_frac


def _geometric_matrix(
    flip: torch.Tensor,
    k: torch.Tensor,
    t_int: torch.Tensor,
    s_iso: torch.Tensor,
    th_pre: torch.Tensor,
    s_an: torch.Tensor,
    th_post: torch.Tensor,
    t_frac: torch.Tensor,
) -> torch.Tensor:
    """Output -> input map: xflip^-1 rot90^-1 xint^-1 scale^-1 pre^-1 aniso^-1 post^-1 xfrac^-1 (official order).

    The inverse rotation by -theta is a rotation by theta, as in the official code (the angle is symmetric).
    """
    c9 = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=flip.dtype, device=flip.device)[k]  # exact quarter turns
    s9 = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=flip.dtype, device=flip.device)[k]
    b00, b01, b10, b11 = flip * c9, -flip * s9, s9, c9  # blit part: diag(flip, 1) @ rot(k)
    c1, s1, c2, s2 = torch.cos(th_pre), torch.sin(th_pre), torch.cos(th_post), torch.sin(th_post)
    p, q = 1 / (s_iso * s_an), s_an / s_iso  # diag(1/s, 1/s) @ rot(pre) @ diag(1/a, a) @ rot(post) below
    m00, m01 = p * c1 * c2 - q * s1 * s2, -p * c1 * s2 - q * s1 * c2
    m10, m11 = p * s1 * c2 + q * c1 * s2, -p * s1 * s2 + q * c1 * c2
    l00, l01 = b00 * m00 + b01 * m10, b00 * m01 + b01 * m11
    l10, l11 = b10 * m00 + b11 * m10, b10 * m01 + b11 * m11
    tx, ty = -t_int[:, 0], -t_int[:, 1]
    fx, fy = -t_frac[:, 0], -t_frac[:, 1]
    t0 = b00 * tx + b01 * ty + l00 * fx + l01 * fy
    t1 = b10 * tx + b11 * ty + l10 * fx + l11 * fy
    return _matrix([[l00, l01, t0], [l10, l11, t1], [0.0, 0.0, 1.0]], flip)


def _color_params(u: torch.Tensor, z: torch.Tensor, gf: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """brightness offset, contrast, lumaflip (0/1), hue angle, saturation."""
    b = z[:, _Z_BRIGHT] * _BRIGHTNESS_STD * gf[:, 8]
    c = torch.exp2(z[:, _Z_CONTRAST] * _CONTRAST_STD * gf[:, 9])
    i = torch.floor(u[:, _U_LUMA] * 2) * gf[:, 10]
    theta = (u[:, _U_HUE] * 2 - 1) * math.pi * gf[:, 11]
    s = torch.exp2(z[:, _Z_SAT] * _SATURATION_STD * gf[:, 12])
    return b, c, i, theta, s


def _color_matrix(
    b: torch.Tensor, c: torch.Tensor, i: torch.Tensor, theta: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """saturation @ hue @ lumaflip @ contrast @ brightness (official order) as one 4x4 matrix.

    With P the projector on the luma axis, Q = I - P and K its cross-product matrix (KP = 0, QK = K), every
    factor is a combination of P, Q, K, so the product is a P + b Q + g K with a = c (1 - 2i) on luma and
    c s (cos, sin) theta on chroma; brightness adds b (1, 1, 1), which only the luma part sees.
    """
    luma = c * (1 - 2 * i)
    cos, sin = c * s * torch.cos(theta), c * s * torch.sin(theta)
    proj = torch.full((3, 3), 1 / 3, dtype=b.dtype, device=b.device)
    cross = _LUMA * torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=b.dtype, device=b.device)
    lin = luma.view(-1, 1, 1) * proj + cos.view(-1, 1, 1) * (torch.eye(3, dtype=b.dtype, device=b.device) - proj)
    lin = lin + sin.view(-1, 1, 1) * cross
    top = torch.cat([lin, (luma * b).view(-1, 1, 1).expand(-1, 3, 1)], dim=2)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=b.dtype, device=b.device).expand(b.shape[0], 1, 4)
    return torch.cat([top, bottom], dim=1)


# ---------------------------------------------------------------------------------------------------------


class ADA:
    """Callable `aug(x, generator) -> x'` whose probability p tracks D's overfitting (see module docstring).

    The trainer calls `aug` on every D input, `accumulate(D(aug(real)))` after each D step and `adjust(batch)`
    after every D step; `state_dict` holds everything that changes during training.
    """

    def __init__(
        self, p: float = 0.0, pipeline: str = "bgc", target: float = 0.6, speed_images: int = 500_000, interval: int = 4
    ) -> None:
        if not pipeline or set(pipeline) - set(_GROUPS) or len(set(pipeline)) != len(pipeline):
            raise UserError(f"unknown ADA pipeline {pipeline!r}; use some of the letters b, g, c (e.g. 'bgc')")
        if not 0.0 <= p <= 1.0:
            raise UserError(f"ADA p must be in [0, 1], got {p}")
        if speed_images <= 0 or interval < 1:
            raise UserError(f"ADA needs speed_images > 0 and interval >= 1, got {speed_images} and {interval}")
        self.p = float(p)
        self.pipeline = pipeline
        self.target = float(target)
        self.speed_images = int(speed_images)
        self.interval = int(interval)
        self.enabled = frozenset(name for letter in pipeline for name in _GROUPS[letter])
        self.last_applied: dict[str, int] = dict.fromkeys(ADA_TRANSFORMS, 0)
        self._sign_sum: torch.Tensor | float = 0.0  # sum of sign(D(real)) since the last adjustment
        self._count = 0  # logits accumulated since the last adjustment (numel is known on the host: no sync)
        self._calls = 0  # adjust() calls so far
        self.r_t: float | None = None  # the last measured E[sign(D(real))]

    # --- augmentation --------------------------------------------------------------------------------------

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.p <= 0.0:
            self.last_applied = dict.fromkeys(ADA_TRANSFORMS, 0)
            return x
        n, c, h, w = x.shape
        dev = g.device
        u = torch.rand(n, _N_UNIFORM, generator=g, device=dev, dtype=torch.float32)
        z = torch.randn(n, _N_NORMAL, generator=g, device=dev, dtype=torch.float32)

        p_rot = 1.0 - math.sqrt(max(0.0, 1.0 - self.p))  # P(pre or post rotation) = p
        thresholds = []
        for col, name in enumerate(_GATES):
            on = name in self.enabled and not (c == 1 and name in ("hue", "saturation"))
            thresholds.append(0.0 if not on else p_rot if col in (4, 6) else self.p)
        gate = u[:, : len(_GATES)] < torch.tensor(thresholds, device=dev)
        applied = torch.cat([gate[:, :4], gate[:, 4:5] | gate[:, 6:7], gate[:, 5:6], gate[:, 7:]], dim=1)
        counts = applied.sum(dim=0).tolist()  # one sync at most (none with a CPU generator)
        self.last_applied = dict(zip(ADA_TRANSFORMS, counts, strict=True))
        gf = gate.float()

        if sum(counts[:7]):
            exact = h == w and not sum(counts[3:7])
            touched = applied[:, :7].any(dim=1)
            if bool(touched.all()):
                x = _warp(x, _geometric_matrix(*_geometric_params(u, z, gf, h, w)), exact)
            else:  # resample only the samples that drew something (untouched ones stay bit-exact, less work)
                idx = touched.nonzero().squeeze(1)
                g_inv = _geometric_matrix(*_geometric_params(u[idx], z[idx], gf[idx], h, w))
                idx = idx.to(x.device)
                x = x.index_copy(0, idx, _warp(x.index_select(0, idx), g_inv, exact))
        if sum(counts[7:]):
            x = _recolor(x, _color_matrix(*_color_params(u, z, gf)))
        return x

    # --- controller ----------------------------------------------------------------------------------------

    def accumulate(self, d_real: torch.Tensor) -> None:
        """Add D's logits on (augmented) reals of one D step; stays on D's device, no host sync."""
        self._sign_sum = self._sign_sum + d_real.detach().sign().sum(dtype=torch.float32)
        self._count += d_real.numel()

    def adjust(self, batch_size: int) -> float | None:
        """Every `interval`th call: move p by sign(r_t - target) * batch * interval / speed, return r_t."""
        self._calls += 1
        if self._calls % self.interval or not self._count:
            return None
        r_t = float(self._sign_sum) / self._count
        step = ((r_t > self.target) - (r_t < self.target)) * batch_size * self.interval / self.speed_images
        p = min(1.0, max(0.0, self.p + step))
        self.p = 0.0 if p < 1e-12 else p  # no 1e-18 residue from +step -step in floating point
        self._sign_sum, self._count = 0.0, 0
        self.r_t = r_t
        return r_t

    def state_dict(self) -> dict[str, float | int]:
        """JSON-serialisable: p, the pending accumulators and the adjust() call counter."""
        return {
            "p": self.p,
            "sign_sum": float(self._sign_sum),
            "count": self._count,
            "calls": self._calls,
            "r_t": self.r_t,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = {"p", "sign_sum", "count", "calls"} - set(state)
        if missing:
            raise UserError(f"ADA state is missing {', '.join(sorted(missing))}; the checkpoint is not from ADA")
        self.p = float(state["p"])
        self._sign_sum = float(state["sign_sum"])
        self._count = int(state["count"])
        self._calls = int(state["calls"])
        self.r_t = None if state.get("r_t") is None else float(state["r_t"])
