"""ProGAN: every stage gives target-size images and (N,) logits, fades are continuous, growing leaves
the unused levels alone, the stage travels with the state_dict, and the equalized-lr, minibatch-stddev
and pixel-norm layers do what the paper says."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.models import MODELS, build_discriminator, build_generator
from ganforge.models.equalized import EqualizedConv2d, EqualizedLinear, MinibatchStd, PixelNorm, pixel_norm
from ganforge.models.progan import (
    ProGANDiscriminator,
    ProGANGenerator,
    downsample,
    fade_image,
    level_channels,
    upsample,
)

ALPHAS = (0.0, 0.5, 1.0)


def _cfg(res: int = 32, ch: int = 1, nf: int = 4, nf_max: int = 16, z_dim: int = 16, extra: tuple = ()) -> dict:
    return load_config(None, ["model.name=progan", f"data.resolution={res}", f"data.channels={ch}", f"model.nf={nf}",
                              f"model.nf_max={nf_max}", f"model.z_dim={z_dim}", *extra])


def _pair(res: int = 32, ch: int = 1, **kw) -> tuple[ProGANGenerator, ProGANDiscriminator]:
    torch.manual_seed(0)
    cfg = _cfg(res, ch, **kw)
    return build_generator(cfg), build_discriminator(cfg)


def _stage(*nets: nn.Module, level: int, alpha: float) -> None:
    for n in nets:
        n.set_stage(level, alpha)


@pytest.mark.parametrize("res", [32, 64])
@pytest.mark.parametrize("ch", [1, 3])
@pytest.mark.parametrize("conditional", [False, True])
def test_shapes_every_stage(res, ch, conditional):
    extra = ("model.conditional=true", "model.num_labels=10") if conditional else ()
    G, D = _pair(res, ch, extra=extra)
    assert G.levels == D.levels == int(math.log2(res)) - 1
    assert G.stage == D.stage == (G.levels - 1, 1.0)  # default: the finished network
    z, y = torch.randn(4, 16), (torch.tensor([0, 3, 9, 3]) if conditional else None)
    for level in range(G.levels):
        for alpha in ALPHAS:
            _stage(G, D, level=level, alpha=alpha)
            x = G(z, y)
            assert x.shape == (4, ch, res, res) and torch.isfinite(x).all()
            f = res // (4 * 2**level)  # the stage image is nearest-upsampled by exactly f
            assert torch.equal(x, x[..., ::f, ::f].repeat_interleave(f, 2).repeat_interleave(f, 3))
            logits = D(x, y)
            assert logits.shape == (4,) and torch.isfinite(logits).all()


def test_conditional_multi_hot_and_missing_labels():
    G, D = _pair(extra=("model.conditional=true", "model.num_labels=5"))
    attrs = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    x = G(torch.randn(3, 16), attrs)
    assert x.shape == (3, 1, 32, 32) and torch.isfinite(D(x, attrs)).all()
    z = torch.randn(1, 16).repeat(3, 1)  # same z, different class: the label must matter
    out = G(z, torch.tensor([0, 0, 1]))
    assert torch.equal(out[0], out[1]) and not torch.allclose(out[0], out[2])
    with pytest.raises(ValueError, match="conditional"):
        G(torch.randn(3, 16))
    with pytest.raises(ValueError, match="conditional"):
        D(x)


def test_output_std_bounded_at_init():
    """Linear toRGB (no tanh) on pixel-normalized features: a sane, non-degenerate scale at every stage."""
    G, _ = _pair(nf=16, nf_max=64, z_dim=64)
    z = torch.randn(32, 64)
    for level in range(G.levels):
        for alpha in ALPHAS:
            G.set_stage(level, alpha)
            s = G(z).std().item()
            assert 0.05 < s < 5, (level, alpha, s)


def test_channels_per_level():
    assert level_channels(32, 32, 128) == [128, 128, 64, 32]
    assert level_channels(128, 16, 512) == [512, 256, 128, 64, 32, 16]
    G, D = _pair(nf=4, nf_max=12)
    assert [m.weight.shape[1] for m in G.to_rgb] == [12, 12, 8, 4]
    assert [m.weight.shape[0] for m in D.from_rgb] == [12, 12, 8, 4]


def test_fade_in_is_continuous():
    """(level k, alpha 0) is exactly (level k-1, alpha 1) for G and D; alpha 1 is something else."""
    G, D = _pair(ch=3)
    z, x = torch.randn(8, 16), torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        for k in range(1, G.levels):
            _stage(G, D, level=k - 1, alpha=1.0)
            g_prev, d_prev = G(z), D(x)
            _stage(G, D, level=k, alpha=0.0)
            g0, d0 = G(z), D(x)
            _stage(G, D, level=k, alpha=1.0)
            g1, d1 = G(z), D(x)
            assert torch.allclose(g0, g_prev, rtol=0, atol=1e-6), k
            assert torch.allclose(d0, d_prev, rtol=0, atol=1e-6), k
            assert (g1 - g0).abs().max() > 1e-3 and (d1 - d0).abs().max() > 1e-3, k


def test_d_sees_the_stage_image_and_blends_inputs():
    """D pools to the stage resolution (so a nearest-upsampled stage image is what it sees), and while
    fading it blends every input as fade_image does."""
    _, D = _pair(ch=3)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        for level in range(D.levels):
            f = 32 // (4 * 2**level)
            for alpha in ALPHAS:
                D.set_stage(level, alpha)
                assert torch.allclose(D(x), D(upsample(downsample(x, f), f)), atol=1e-5)
        D.set_stage(2, 0.3)
        blended = upsample(fade_image(downsample(x, 2), 0.3), 2)
        assert torch.allclose(D.fade_reals(x), blended, atol=1e-6)  # what the trainer does to reals
        D.blend_inputs = True
        want = D(x)
        D.blend_inputs = False
        assert torch.allclose(D(blended), want, atol=1e-5)
        assert not torch.allclose(D(x), want, atol=1e-3)
        D.set_stage(2, 1.0)
        assert torch.equal(D.fade_reals(x), x)


def test_low_levels_do_not_run_high_resolution_blocks():
    G, D = _pair()
    called: set[str] = set()
    for net, tag in ((G, "G"), (D, "D")):
        for name, m in net.named_modules():
            if re.fullmatch(r"(blocks|to_rgb|from_rgb)\.\d+", name):
                m.register_forward_hook(lambda *_, key=f"{tag}.{name}": called.add(key))
    _stage(G, D, level=1, alpha=0.5)
    D(G(torch.randn(4, 16)))
    assert called == {"G.blocks.0", "G.blocks.1", "G.to_rgb.0", "G.to_rgb.1",
                      "D.blocks.0", "D.blocks.1", "D.from_rgb.0", "D.from_rgb.1"}
    called.clear()
    _stage(G, D, level=1, alpha=1.0)  # faded in: the previous level's toRGB/fromRGB are not needed
    D(G(torch.randn(4, 16)))
    assert called == {"G.blocks.0", "G.blocks.1", "G.to_rgb.1", "D.blocks.0", "D.blocks.1", "D.from_rgb.1"}


def _level(name: str) -> int:
    m = re.match(r"(blocks|to_rgb|from_rgb)\.(\d+)\.", name)
    return int(m.group(2)) if m else 0  # head, label embedding, projection: part of the 4x4 end


def test_growing_keeps_weights_and_set_stage_keeps_parameters():
    G, D = _pair()
    before = {f"{t}.{n}": p.detach().clone() for t, net in (("G", G), ("D", D)) for n, p in net.named_parameters()}
    for level in range(G.levels):
        for alpha in ALPHAS:
            _stage(G, D, level=level, alpha=alpha)
    after = {f"{t}.{n}": p for t, net in (("G", G), ("D", D)) for n, p in net.named_parameters()}
    assert all(torch.equal(before[k], after[k]) for k in before)  # set_stage touches no parameter

    _stage(G, D, level=1, alpha=0.5)
    opt = torch.optim.Adam([*G.parameters(), *D.parameters()], lr=1e-3)
    real = torch.randn(8, 1, 32, 32)
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        loss = F.softplus(-D(real)).mean() + F.softplus(D(G(torch.randn(8, 16)))).mean()
        loss.backward()
        opt.step()
    for t, net in (("G", G), ("D", D)):
        for n, p in net.named_parameters():
            if _level(n) <= 1:
                assert not torch.equal(p, before[f"{t}.{n}"]), f"{t}.{n} did not train"
            else:
                assert p.grad is None and torch.equal(p, before[f"{t}.{n}"]), f"{t}.{n} changed at level 1"


def test_stage_travels_with_state_dict_and_buffers():
    G, D = _pair()
    G.set_stage(2, 0.3)
    D.set_stage(1, 0.7)
    sd_g, sd_d = G.state_dict(), D.state_dict()
    assert {"stage_level", "stage_alpha"} <= sd_g.keys() & sd_d.keys()
    torch.manual_seed(1)
    G2, D2 = build_generator(_cfg()), build_discriminator(_cfg())
    assert G2.stage == (3, 1.0)
    G2.load_state_dict(sd_g)
    D2.load_state_dict(sd_d)
    assert G2.stage == (2, pytest.approx(0.3)) and D2.stage == (1, pytest.approx(0.7))
    z, x = torch.randn(4, 16), torch.randn(4, 1, 32, 32)
    assert torch.equal(G2(z), G(z)) and torch.equal(D2(x), D(x))
    ema = copy.deepcopy(G)  # an EMA copy that copies buffers follows the stage
    G.set_stage(3, 0.1)
    for b_ema, b in zip(ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)
    assert ema.stage == (3, pytest.approx(0.1))


def test_set_stage_validation():
    G, D = _pair()
    G.set_stage(2, 0.25)
    for net in (G, D):
        for bad in (-1, 4, 1.5, True, "1", None):
            with pytest.raises(ValueError, match="stage level"):
                net.set_stage(bad, 0.5)
        for bad in (-0.1, 1.1, float("nan"), "0.5", True, None):
            with pytest.raises(ValueError, match="stage alpha"):
                net.set_stage(1, bad)
    assert G.stage == (2, 0.25)  # failed calls leave the stage alone
    G.set_stage(0, 0.3)
    assert G.stage == (0, 1.0)  # level 0 has no fade
    with pytest.raises(ValueError, match=r"0\.\.3 \(4x4 \.\. 32x32\)"):
        G.set_stage(4)
    with torch.no_grad():
        G.stage_level.fill_(7.0)  # a corrupt loaded stage is caught, not indexed out of range
    with pytest.raises(ValueError, match="invalid stored stage"):
        G(torch.randn(2, 16))


def _gain(net: str, name: str) -> float:
    if net == "G" and name.startswith("to_rgb.") or name in ("label_embed", "head"):
        return 1.0
    if net == "G" and name == "blocks.0.dense":
        return 2.0 / 16  # the official sqrt(2)/4
    return 2.0


def test_equalized_scales_in_the_networks():
    cfg = _cfg(extra=("model.conditional=true", "model.num_labels=10"))
    G, D = build_generator(cfg), build_discriminator(cfg)
    n = 0
    for tag, net in (("G", G), ("D", D)):
        for name, m in net.named_modules():
            if isinstance(m, (EqualizedConv2d, EqualizedLinear)):
                fan_in = m.weight[0].numel()
                assert math.isclose(m.scale, math.sqrt(_gain(tag, name) / fan_in), rel_tol=1e-12), (tag, name)
                n += 1
        plain = [name for name, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert plain == ([] if tag == "G" else ["projection.embed.proj"])  # everything else is equalized
    assert n == 2 + 2 * 3 + 4 + 3 + 2 * 3 + 4 + 1  # G: input, blocks, toRGB, embed; D: end, blocks, fromRGB, head


def _adam_relative_step(layer: nn.Module, x: torch.Tensor) -> float:
    """Relative change of the effective weight after one Adam step (~lr * sign(grad) per parameter)."""
    scale = getattr(layer, "scale", 1.0)
    w0 = layer.weight.detach().clone() * scale
    opt = torch.optim.Adam([layer.weight], lr=1e-2)
    layer(x).square().mean().backward()
    opt.step()
    return ((layer.weight.detach() * scale - w0).norm() / w0.norm()).item()


def test_equalized_learning_rate():
    """Unit-variance inputs give output variance ~gain (2) whatever the fan-in, the stored weights are
    N(0, 1) whatever the fan-in, and so an Adam step moves every layer by the same relative amount;
    with nn.Conv2d's default init the relative step grows with sqrt(fan-in)."""
    torch.manual_seed(0)
    steps_eq, steps_plain = [], []
    for c_in in (64, 256):
        conv = EqualizedConv2d(c_in, 64, 3, padding=0)
        x = torch.randn(16, c_in, 8, 8)
        assert 1.75 < conv(x).var().item() < 2.25, c_in
        assert 0.97 < conv.weight.std().item() < 1.03
        steps_eq.append(_adam_relative_step(conv, x))
        steps_plain.append(_adam_relative_step(nn.Conv2d(c_in, 64, 3, padding=0, bias=False), x))
    for f_in in (64, 1024):
        lin = EqualizedLinear(f_in, 512)
        assert 1.75 < lin(torch.randn(256, f_in)).var().item() < 2.25, f_in
    assert steps_eq[1] / steps_eq[0] == pytest.approx(1.0, rel=0.1)
    assert steps_plain[1] / steps_plain[0] == pytest.approx(2.0, rel=0.1)  # sqrt(256 / 64)


def test_minibatch_stddev():
    torch.manual_seed(0)
    x = torch.randn(8, 5, 4, 4) * torch.linspace(0.5, 2, 8).view(8, 1, 1, 1)
    out = MinibatchStd(group_size=4)(x)
    assert out.shape == (8, 6, 4, 4) and torch.equal(out[:, :5], x)
    n_groups = 8 // 4  # groups are strided: image i is grouped with i + 2, i + 4, i + 6
    for i in range(8):
        group = x[i % n_groups :: n_groups]
        want = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(out[i, 5], want.expand(4, 4), atol=1e-6), i
    same = MinibatchStd(group_size=4)(torch.randn(1, 5, 4, 4).repeat(8, 1, 1, 1))[:, 5]
    assert torch.allclose(same, torch.full_like(same, 1e-4), atol=1e-6)  # only sqrt(eps) left
    _, D = _pair(extra=("model.mbstd_group=2",))
    assert D.blocks[0].mbstd.group_size == 2 and D.blocks[0].conv.weight.shape[1] == 16 + 1


def test_pixel_norm():
    x = torch.randn(4, 16, 5, 5) * 7 + 3
    for y in (pixel_norm(x), PixelNorm()(x)):
        assert torch.allclose(y.square().mean(dim=1), torch.ones(4, 5, 5), atol=1e-5)
    G, _ = _pair()
    G.set_stage(3, 0.5)
    feats = []
    for block in G.blocks:
        block.register_forward_hook(lambda _m, _i, out: feats.append(out))
    z = torch.randn(4, 16)
    out = G(z)
    assert len(feats) == 4
    for h in feats:  # every G feature map is pixel-normalized
        assert torch.allclose(h.square().mean(dim=1), torch.ones_like(h[:, 0]), atol=1e-4)
    assert torch.allclose(G(5 * z), out, atol=1e-4)  # z is pixel-normalized too


def test_registry_and_128():
    assert MODELS.get("progan").resolutions == (32, 64, 128)
    with pytest.raises(UserError, match="does not support data.resolution=28"):
        build_generator(_cfg(28))
    G, D = _pair(128, 3, nf=2, nf_max=8)
    assert G.levels == 6
    x = G(torch.randn(2, 16))
    assert x.shape == (2, 3, 128, 128) and D(x).shape == (2,)
