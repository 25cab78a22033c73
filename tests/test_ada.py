"""ADA: the augmentations (which ones run, exactness, determinism, gradients) and the p controller."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from ganforge.augment import ADA, ADA_TRANSFORMS
from ganforge.augment.ada import (
    _brightness,
    _color_matrix,
    _color_params,
    _contrast,
    _geometric_matrix,
    _geometric_params,
    _hue,
    _lumaflip,
    _recolor,
    _rotate2d,
    _saturation,
    _scale2d,
    _translate2d,
    _warp,
)
from ganforge.errors import UserError

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 64, c: int = 3, res: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, c, res, res, generator=gen(seed)) * 2 - 1


def test_transform_names_and_export():
    assert ADA_TRANSFORMS == GEOMETRIC + COLOR
    assert set(ADA().last_applied) == set(ADA_TRANSFORMS)


@pytest.mark.parametrize("c", [1, 3])
def test_p0_returns_input_itself_and_draws_nothing(c):
    aug, g, x = ADA(p=0.0), gen(), images(c=c)
    state = g.get_state()
    assert aug(x, g) is x
    assert all(v == 0 for v in aug.last_applied.values())
    assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("c", [1, 3])
def test_p1_bgc_applies_every_transform_to_every_sample(c):
    aug, x = ADA(p=1.0), images(c=c)
    out = aug(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    assert not torch.equal(out, x)
    # p = 1 selects every transform for every sample (rotation: p_rot = 1 - sqrt(0) = 1 for pre and post) ...
    gray_skipped = ("hue", "saturation") if c == 1 else ()  # ... except those that leave gray pixels unchanged
    assert aug.last_applied == {name: 0 if name in gray_skipped else 64 for name in ADA_TRANSFORMS}


def test_selection_rates_follow_p():
    aug = ADA(p=0.3)
    aug(images(n=4096, res=4), gen())
    for name, count in aug.last_applied.items():  # binomial(4096, 0.3): sd 0.007; rotate: P(pre or post) = p too
        assert abs(count / 4096 - 0.3) < 0.04, (name, count)


@pytest.mark.parametrize(
    ("pipeline", "groups"),
    [
        ("b", ("xflip", "rotate90", "xint")),
        ("g", ("scale", "rotate", "aniso", "xfrac")),
        ("c", COLOR),
        ("gc", GEOMETRIC[3:] + COLOR),
    ],
)
def test_pipeline_selects_only_its_transforms(pipeline, groups):
    aug = ADA(p=1.0, pipeline=pipeline)
    aug(images(), gen())
    assert {k for k, v in aug.last_applied.items() if v} == set(groups)


def test_color_only_is_a_per_pixel_affine_map():
    """Pipeline 'c' never moves pixels: each output pixel is M @ rgb + t of the same input pixel (lstsq fit)."""
    x = images(n=8)
    out = ADA(p=1.0, pipeline="c")(x, gen())
    for xi, oi in zip(x, out, strict=True):
        a = torch.cat([xi.reshape(3, -1).T, torch.ones(xi[0].numel(), 1)], dim=1).double()
        sol = torch.linalg.lstsq(a, oi.reshape(3, -1).T.double()).solution
        assert (a @ sol - oi.reshape(3, -1).T).abs().max() < 1e-4
    assert not torch.allclose(out, x)


@pytest.mark.parametrize("c", [1, 3])
def test_blit_only_copies_whole_pixels_exactly(c):
    """Pipeline 'b' (flips, quarter turns, integer shifts) is a gather: every output pixel is an input pixel."""
    n, res = 64, 16
    ids = torch.stack([torch.randperm(res * res, generator=gen(i)) for i in range(n)]).float().view(n, 1, res, res)
    x = torch.cat([ids * (k + 1) - 0.5 * k for k in range(c)], dim=1)  # channels are exact functions of channel 0
    aug = ADA(p=1.0, pipeline="b")
    out = aug(x, gen())
    assert aug.last_applied["xint"] == n and not torch.equal(out, x)
    for k in range(c):
        assert torch.equal(out[:, k], out[:, 0] * (k + 1) - 0.5 * k)  # the same source pixel in every channel
    for xi, oi in zip(x, out, strict=True):
        assert torch.isin(oi[0], xi[0]).all()  # bit-exact copies, no interpolation


@pytest.mark.parametrize("k", range(4))
def test_quarter_turn_and_flip_equal_torch_ops(k):
    x, zero = images(n=4, res=9 if k % 2 else 8), torch.zeros(4)
    cos, sin = [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0)][k]
    rot = _rotate2d(cos, sin, zero)
    assert torch.equal(_warp(x, rot, exact=True), torch.rot90(x, k, dims=(2, 3)))
    torch.testing.assert_close(_warp(x, rot, exact=False), torch.rot90(x, k, dims=(2, 3)), atol=1e-5, rtol=0)
    flip = _scale2d(-1.0, 1.0, zero)
    assert torch.equal(_warp(x, flip, exact=True), x.flip(3))
    torch.testing.assert_close(_warp(x, flip, exact=False), x.flip(3), atol=1e-5, rtol=0)


def test_integer_shift_reflects_like_pad_reflect_on_both_paths():
    """Exact gather and bilinear grid_sample agree on integer moves (same border reflection)."""
    x, zero = images(n=2, res=8), torch.zeros(2)
    m = _translate2d(-3.0, 2.0, zero)  # output -> input map, i.e. content moves 3 right and 2 up
    ref = F.pad(x, [3, 3, 3, 3], mode="reflect")[:, :, 5:13, 0:8]
    assert torch.equal(_warp(x, m, exact=True), ref)
    torch.testing.assert_close(_warp(x, m, exact=False), ref, atol=1e-5, rtol=0)
    composed = _scale2d(-1.0, 1.0, zero) @ _rotate2d(0.0, 1.0, zero) @ m
    torch.testing.assert_close(_warp(x, composed, exact=False), _warp(x, composed, exact=True), atol=1e-5, rtol=0)


def test_continuous_geometry_resamples_and_keeps_structure():
    x, one = images(n=2, res=16), torch.ones(2)
    assert torch.allclose(_warp(x, _scale2d(one, one, one), exact=False), x, atol=1e-5)
    half = _rotate2d(math.cos(0.3), math.sin(0.3), one)
    out = _warp(x, half, exact=False)
    assert not torch.allclose(out, x, atol=1e-2)
    assert out.min() >= x.min() - 1e-6 and out.max() <= x.max() + 1e-6  # bilinear: convex combinations only


def test_color_matrices():
    x, n = images(n=4), 4
    b = torch.tensor([0.1, -0.2, 0.3, 0.0])
    out = _recolor(x, _brightness(b))
    torch.testing.assert_close(out - x, b.view(n, 1, 1, 1).expand_as(x))  # brightness only moves the mean
    c = torch.tensor([0.5, 2.0, 1.0, 1.5])
    torch.testing.assert_close(_recolor(x, _contrast(c)), x * c.view(n, 1, 1, 1))  # contrast scales around 0
    luma, chroma = x.mean(dim=1, keepdim=True), x - x.mean(dim=1, keepdim=True)
    flipped = _recolor(x, _lumaflip(torch.ones(n)))
    torch.testing.assert_close(flipped.mean(dim=1, keepdim=True), -luma)
    torch.testing.assert_close(flipped - flipped.mean(dim=1, keepdim=True), chroma)
    hued = _recolor(x, _hue(torch.tensor([0.5, 1.0, -2.0, 3.0])))
    torch.testing.assert_close(hued.mean(dim=1, keepdim=True), luma)  # rotation around the luma axis
    torch.testing.assert_close((hued - luma).norm(dim=1), chroma.norm(dim=1))
    assert not torch.allclose(hued, x, atol=1e-2)
    desat = _recolor(x, _saturation(torch.zeros(n)))
    torch.testing.assert_close(desat, luma.expand_as(x))


def test_gray_colour_reduction():
    """1 channel: brightness and contrast as usual, lumaflip negates, hue and saturation change nothing."""
    x, n = images(n=4, c=1), 4
    torch.testing.assert_close(_recolor(x, _brightness(torch.full((n,), 0.25))), x + 0.25)
    torch.testing.assert_close(_recolor(x, _contrast(torch.full((n,), 2.0))), 2 * x)
    torch.testing.assert_close(_recolor(x, _lumaflip(torch.ones(n))), -x)
    torch.testing.assert_close(_recolor(x, _hue(torch.full((n,), 1.0))), x)
    torch.testing.assert_close(_recolor(x, _saturation(torch.full((n,), 3.0))), x)
    with pytest.raises(UserError, match="1 or 3 channels"):
        ADA(p=1.0)(torch.zeros(2, 2, 8, 8), gen())
    assert ADA(p=1.0, pipeline="bg")(torch.zeros(2, 2, 8, 8), gen()).shape == (2, 2, 8, 8)


@pytest.mark.parametrize("pipeline", ["bgc", "b"])
def test_deterministic_given_the_generator(pipeline):
    x = images(res=16)
    a = ADA(p=0.5, pipeline=pipeline)
    out = a(x, gen(7))
    assert torch.equal(out, a(x, gen(7)))
    assert not torch.equal(out, a(x, gen(8)))
    g = gen(7)
    assert not torch.equal(a(x, g), a(x, g))  # real then fake: the generator advances between calls


@pytest.mark.parametrize("c", [1, 3])
def test_gradients_flow_to_the_input(c):
    x = images(n=16, c=c).requires_grad_()
    ADA(p=1.0)(x, gen()).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradients_flow_with_untouched_samples_and_r1_double_backward():
    """Low p takes the subset path; R1 on augmented reals needs a gradient of the gradient."""
    x = images(n=32).requires_grad_()
    aug = ADA(p=0.1)
    out = aug(x, gen())
    assert 0 < sum(aug.last_applied[k] for k in GEOMETRIC) and (out == x).all(dim=(1, 2, 3)).any()
    (grad,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def feed(aug: ADA, logits: torch.Tensor, steps: int, batch: int = 64) -> list[float | None]:
    results = []
    for _ in range(steps):
        aug.accumulate(logits)
        results.append(aug.adjust(batch))
    return results


def test_controller_raises_p_by_exactly_one_step_per_interval():
    aug = ADA(p=0.0, interval=4, speed_images=500_000)
    step = 64 * 4 / 500_000
    results = feed(aug, torch.ones(64), 12)
    assert results == [None, None, None, 1.0] * 3
    assert aug.p == pytest.approx(3 * step, abs=1e-15)
    aug.p = 0.5
    results = feed(aug, -torch.ones(64, 1), 4)  # any shape: sign() and numel count
    assert results[-1] == -1.0 and aug.p == pytest.approx(0.5 - step, abs=1e-15)


def test_controller_uses_the_mean_sign_against_target():
    aug = ADA(p=0.5, target=0.6, interval=2)
    mixed = torch.tensor([3.0, 0.5, 2.0, -1.0, 0.0])  # signs 1, 1, 1, -1, 0: mean 0.4 < 0.6
    assert feed(aug, mixed, 2) == [None, pytest.approx(0.4)]
    assert aug.p < 0.5
    aug = ADA(p=0.5, target=0.6, interval=1)
    assert aug.adjust(64) is None and aug.p == 0.5  # nothing accumulated: no evidence, no move
    feed(aug, torch.tensor([1.0, 1.0, 1.0, 1.0, -1.0]), 1)  # r_t == target: p stays
    assert aug.p == 0.5


def test_controller_clamps_p():
    aug = ADA(p=0.0005, interval=1, speed_images=1000)
    feed(aug, -torch.ones(8), 3, batch=8)
    assert aug.p == 0.0
    aug = ADA(p=0.995, interval=1, speed_images=1000)
    feed(aug, torch.ones(8), 3, batch=8)
    assert aug.p == 1.0


def test_state_dict_resumes_bit_exactly():
    a = ADA(p=0.2, interval=4, speed_images=2000)
    logits = [torch.randn(16, generator=gen(i)) + (1.5 if i < 26 else -1.5) for i in range(40)]
    for t in logits[:6]:  # stop mid-interval, accumulators not empty
        a.accumulate(t)
        a.adjust(16)
    state = json.loads(json.dumps(a.state_dict()))
    assert state["count"] == 32 and state["calls"] == 6
    b = ADA(interval=4, speed_images=2000)
    b.load_state_dict(state)
    x, ga, gb, trajectory = images(n=16, res=8), gen(3), gen(3), []
    for t in logits[6:]:
        assert torch.equal(a(x, ga), b(x, gb))
        a.accumulate(t)
        b.accumulate(t)
        assert a.adjust(16) == b.adjust(16) and a.p == b.p
        trajectory.append(a.p)
    assert len(set(trajectory)) > 4 and a.state_dict() == b.state_dict()  # p went up, then down
    with pytest.raises(UserError, match="missing"):
        b.load_state_dict({"p": 0.1})


@pytest.mark.parametrize("kwargs, says", [
    ({"pipeline": "bx"}, "unknown ADA pipeline 'bx'; use some of the letters b, g, c"),
    ({"pipeline": ""}, "unknown ADA pipeline ''"),
    ({"pipeline": "bb"}, "unknown ADA pipeline 'bb'"),
    ({"p": 1.5}, "ADA p must be in [0, 1], got 1.5"),
    ({"interval": 0}, "interval >= 1, got 500000 and 0"),
])
def test_bad_arguments(kwargs, says):
    with pytest.raises(UserError) as e:
        ADA(**kwargs)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_closed_forms_equal_the_official_matrix_products():
    """The fast compositions equal multiplying the single-transform matrices in stylegan2-ada's order."""
    n, h, w = 256, 32, 24
    g = gen(5)
    u, z = torch.rand(n, 21, generator=g), torch.randn(n, 7, generator=g)
    gf = (torch.rand(n, 13, generator=g) < 0.7).float()
    flip, k, t_int, s_iso, th_pre, s_an, th_post, t_frac = _geometric_params(u, z, gf, h, w)
    assert set(flip.tolist()) == {-1.0, 1.0} and set(k.tolist()) == {0, 1, 2, 3}
    assert torch.equal(t_int, t_int.round()) and t_int.abs().max() <= 4
    quarter = torch.tensor(math.pi / 2) * k
    ref = (
        _scale2d(flip, 1.0, flip)
        @ _rotate2d(quarter.cos().round(), quarter.sin().round(), flip)
        @ _translate2d(-t_int[:, 0], -t_int[:, 1], flip)
        @ _scale2d(1 / s_iso, 1 / s_iso, flip)
        @ _rotate2d(th_pre.cos(), th_pre.sin(), flip)
        @ _scale2d(1 / s_an, s_an, flip)
        @ _rotate2d(th_post.cos(), th_post.sin(), flip)
        @ _translate2d(-t_frac[:, 0], -t_frac[:, 1], flip)
    )
    torch.testing.assert_close(_geometric_matrix(flip, k, t_int, s_iso, th_pre, s_an, th_post, t_frac), ref)
    b, c, i, theta, s = _color_params(u, z, gf)
    assert set(i.tolist()) == {0.0, 1.0}
    ref = _saturation(s) @ _hue(theta) @ _lumaflip(i) @ _contrast(c) @ _brightness(b)
    torch.testing.assert_close(_color_matrix(b, c, i, theta, s), ref)


def test_blit_only_matrices_are_exact_integers():
    """What lets the gather path copy pixels: blit-only draws give integer matrices without rounding error."""
    g = gen(6)
    u, z = torch.rand(64, 21, generator=g), torch.randn(64, 7, generator=g)
    gf = torch.zeros(64, 13)
    gf[:, :3] = 1.0
    m = _geometric_matrix(*_geometric_params(u, z, gf, 32, 32))
    assert torch.equal(m, m.round()) and m.abs()[:, :2, :2].sum(dim=(1, 2)).eq(2).all()
