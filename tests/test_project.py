"""Projection (GAN inversion): own samples recovered, every family and space, conditional labels, determinism, the
official noise regulariser and schedule, the loss networks (LPIPS in its official layout), the CLI's files (bitwise
reloadable), one-line errors with nothing written, and interpolation through projected latents."""

from __future__ import annotations

import copy
import io
import math
import struct
import zlib

import numpy as np
import pytest
import torch
from conftest import tiny_runs
from PIL import Image
from test_cli import assert_one_line_error, run_cli

from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.generate import load_generator
from ganforge.images import to_uint8
from ganforge.latent.core import load_latent, noise_layers, render
from ganforge.latent.perceptual import (
    LPIPSVGG16,
    FeatureDistance,
    ProjectionLoss,
    build_network,
)
from ganforge.latent.project import (
    LR,
    ProjectionCancelled,
    lr_at,
    noise_regularizer,
    output_stems,
    project,
)
from ganforge.latent.targets import load_targets
from ganforge.models import build_generator
from ganforge.models.sampling import sample

STEPS = 60


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    return tiny_runs(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def gens(runs):
    return {k: load_generator(runs[k])[0] for k in runs}


def with_batch_statistics(G, labels=None):
    """A copy whose BatchNorm running statistics are those of its own activations: a 4-step DCGAN's still hold
    their initial values, which squash every sample to nearly the same image, and nothing to recover."""
    G = copy.deepcopy(G)
    for m in G.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batch
    G.train()
    with torch.no_grad():
        G(torch.randn(512, G.z_dim, generator=torch.Generator().manual_seed(0)), labels)
    return G.eval()


@pytest.fixture(scope="module")
def varied(gens):
    """Generators whose samples differ from each other (the projection tests' subjects)."""
    return {"dcgan": with_batch_statistics(gens["dcgan"]), "stylegan2": gens["stylegan2"],
            "classes": with_batch_statistics(gens["classes"], torch.arange(512) % 10)}


def nearest_random_mse(G, targets: torch.Tensor, n: int = 500, labels=None) -> torch.Tensor:
    pool = sample(G, n, seed=999, labels=labels)
    return (targets[:, None] - pool[None]).square().flatten(2).mean(2).min(1).values


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).square().flatten(1).mean(1)


# --- recovering the generator's own samples ------------------------------------------------------------------------


@pytest.mark.parametrize("name,space", [("dcgan", "z"), ("stylegan2", "w"), ("stylegan2", "w+")])
def test_own_samples_are_recovered_far_closer_than_the_nearest_random_sample(varied, name, space):
    G = varied[name]
    targets = sample(G, 3, seed=123)
    p = project(G, targets, space=space, steps=STEPS if name == "dcgan" else 2 * STEPS, restarts=2)
    got = mse(p.images, targets)
    nearest = nearest_random_mse(G, targets)
    assert torch.all(got < 0.5 * nearest) and got.mean() < 0.2 * nearest.mean(), (got, nearest)
    assert p.latent.space == space and p.images.shape == targets.shape
    assert [set(d) for d in p.losses] == [{"pixel", "feature", "total"}] * 3
    assert np.allclose([d["pixel"] for d in p.losses], got.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", ["fashion_mnist_mlp", "fashion_mnist_sngan", "fashion_mnist32_progan"])
def test_every_family_projects_its_own_images(family):
    """Untrained generators of the other families (mlp, sngan, progan at its final stage): the fit beats chance."""
    torch.manual_seed(0)
    cfg = load_config(family, ["model.nf=8"] if "mlp" not in family else [])
    G = build_generator(cfg).eval()
    targets = sample(G, 2, seed=5)
    p = project(G, targets, steps=40, restarts=1)
    assert torch.all(mse(p.images, targets) < 0.5 * nearest_random_mse(G, targets, 200))


def test_z_stays_on_the_gaussian_shell(gens):
    G = gens["dcgan"]
    p = project(G, sample(G, 2, seed=1), steps=10, restarts=2)
    assert torch.allclose(p.latent.values.norm(dim=1), torch.full((2,), math.sqrt(G.z_dim)), rtol=1e-5)


def test_stylegan2_noise_is_optimised_and_renormalised(gens):
    G = gens["stylegan2"]
    p = project(G, sample(G, 2, seed=1), steps=10, restarts=1)
    assert p.latent.noise is not None and len(p.latent.noise) == len(noise_layers(G))
    for m, layer in zip(p.latent.noise, noise_layers(G), strict=True):
        assert m.shape == (2, 1, *layer.noise_const.shape)
        assert torch.allclose(m.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
        assert torch.allclose(m.square().mean(dim=(1, 2, 3)), torch.ones(2), atol=1e-4)
    assert torch.equal(render(G, p.latent, batch_size=1), p.images)


def test_the_noise_regulariser_and_learning_rate_follow_the_official_formulas():
    """A constant 16x16 map of c: each of 2 shifts at 2 octaves (16, 8) adds (c*c)^2; white noise scores ~0."""
    c = 1.5
    assert torch.allclose(noise_regularizer([torch.full((1, 1, 16, 16), c)]), torch.tensor([4 * c**4]))
    white = noise_regularizer([torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))])
    assert white.item() < 1e-3
    assert lr_at(0.0) == 0.0 and lr_at(0.5) == LR
    assert math.isclose(lr_at(0.9), LR * (0.5 - 0.5 * math.cos(0.4 * math.pi)))
    assert math.isclose(lr_at(0.025), LR * 0.5)


# --- conditional -----------------------------------------------------------------------------------------------------


def test_conditional_projection_optimises_a_soft_label_or_keeps_a_fixed_one(gens, varied):
    G = varied["classes"]
    targets = sample(G, 2, seed=3, labels=torch.tensor([2, 7]))
    soft = project(G, targets, steps=30, restarts=2)
    assert soft.latent.labels.shape == (2, 10)
    assert torch.allclose(soft.latent.labels.sum(1), torch.ones(2), atol=1e-5)
    assert torch.all(mse(soft.images, targets) < 0.5 * nearest_random_mse(G, targets, 200, torch.arange(200) % 10))
    fixed = project(G, targets, steps=30, restarts=2, labels=torch.tensor([2, 7]))
    assert torch.equal(fixed.latent.labels, torch.tensor([2, 7]))
    assert torch.equal(render(G, fixed.latent, batch_size=1), fixed.images)

    A = gens["attrs"]
    attr = project(A, sample(A, 1, seed=3, labels=torch.tensor([[1.0, 0.0]])), steps=10, restarts=1,
                   label_kind="attributes")
    assert attr.latent.labels.shape == (1, 2) and torch.all((attr.latent.labels > 0) & (attr.latent.labels < 1))


# --- determinism, callback -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dcgan", "stylegan2"])
def test_the_same_call_gives_bitwise_the_same_projection(gens, name):
    G = gens[name]
    targets = sample(G, 2, seed=8)
    loss = ProjectionLoss(build_network("fashion-mnist-cnn"))
    a = project(G, targets, steps=8, restarts=2, seed=4, loss=loss)
    b = project(G, targets, steps=8, restarts=2, seed=4, loss=loss)
    assert torch.equal(a.images, b.images) and torch.equal(a.latent.values, b.latent.values)
    assert a.losses == b.losses
    if a.latent.noise is not None:
        assert all(torch.equal(x, y) for x, y in zip(a.latent.noise, b.latent.noise, strict=True))
    c = project(G, targets, steps=8, restarts=2, seed=5, loss=loss)
    assert not torch.equal(a.latent.values, c.latent.values)


def test_a_callback_sees_every_step_and_can_cancel_leaving_G_as_it_was(gens):
    G = gens["stylegan2"]
    before = [m.noise_const for m in noise_layers(G)]
    seen = []
    project(G, sample(G, 1), steps=5, restarts=1, callback=lambda i, n: seen.append((i, n)))
    assert seen == [(i, 5) for i in range(1, 6)]
    with pytest.raises(ProjectionCancelled):
        project(G, sample(G, 1), steps=5, restarts=1, callback=lambda i, n: i < 3)
    assert all(a is b for a, b in zip(before, [m.noise_const for m in noise_layers(G)], strict=True))
    assert all(p.requires_grad for p in G.parameters()) and not G.training


def test_batched_targets_match_projecting_them_one_at_a_time(varied):
    """The loss is a sum over items and Adam is elementwise, so batching changes nothing but float rounding."""
    G = varied["dcgan"]
    targets = sample(G, 3, seed=2)
    both = project(G, targets, steps=20, restarts=1)
    one = project(G, targets[1:2], steps=20, restarts=1)
    # same start for target 1? restarts draw per batch position, so compare quality, not values
    assert abs(both.losses[1]["pixel"] - one.losses[0]["pixel"]) < 0.5 * max(one.losses[0]["pixel"], 1e-4) + 1e-4


# --- loss networks ----------------------------------------------------------------------------------------------------


def test_feature_distance_is_the_lpips_formula():
    fx = [torch.randn(2, 4, 3, 3), torch.randn(2, 5)]
    fy = [torch.randn(2, 4, 3, 3), torch.randn(2, 5)]

    def unit(t):
        return t / (t.square().sum(1, keepdim=True).sqrt() + 1e-10)

    want = (unit(fx[0]) - unit(fy[0])).square().sum(1).mean((1, 2)) + (unit(fx[1]) - unit(fy[1])).square().sum(1)
    assert torch.allclose(FeatureDistance().distance(fx, fy), want, atol=1e-6)


def test_lpips_weights_in_the_official_layout_load_and_measure(tmp_path):
    torch.manual_seed(0)
    state = LPIPSVGG16().state_dict()
    for key in ("scaling_layer.shift", "net.slice1.0.weight", "net.slice2.5.weight", "net.slice5.28.bias",
                "lin0.model.1.weight", "lin4.model.1.weight"):
        assert key in state
    assert state["lin2.model.1.weight"].shape == (1, 256, 1, 1)
    state = {k: v.abs() if k.startswith("lin") else v for k, v in state.items()}
    state.update({k.replace("lin", "lins.", 1): v for k, v in state.items() if k.startswith("lin")})  # newer lpips
    torch.save(state, tmp_path / "lpips.pth")
    net = build_network("lpips-vgg16", str(tmp_path / "lpips.pth"))
    assert torch.equal(net.lin0.model[1].weight, state["lin0.model.1.weight"])
    x, y = torch.rand(2, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.allclose(net.distance(net.features(x), net.features(x)), torch.zeros(2))
    assert torch.all(net.distance(net.features(x), net.features(y)) > 0)
    torch.save({"net.slice1.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not lpips.LPIPS"):
        build_network("lpips-vgg16", str(tmp_path / "bad.pth"))
    with pytest.raises(UserError, match="needs its weights"):
        build_network("lpips-vgg16")
    with pytest.raises(UserError, match="unknown projection network"):
        build_network("vgg19")


# --- targets --------------------------------------------------------------------------------------------------------


def png_bomb(size: int = 100_000) -> bytes:
    """A valid PNG header claiming size x size pixels, with a few bytes of data: what a decompression bomb looks like
    to a reader that trusts it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_targets_are_converted_as_the_training_data_was():
    cfg = {"data": {"resolution": 32, "channels": 1}}
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[:, :, 0] = 200
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    x, notes = load_targets([buf.getvalue()], cfg)
    assert x.shape == (1, 1, 32, 32)
    assert torch.allclose(x, torch.full_like(x, round(0.299 * 200) / 127.5 - 1))
    assert notes == ["upload #1: cropped 64x48 to the centre square 48x48, resized 48x48 -> 32x32, converted RGB -> L"]
    for data, word in [(b"", "empty"), (b"hello", "not a readable image"), (png_bomb(), "too many pixels")]:
        with pytest.raises(UserError, match=word):
            load_targets([data], cfg)


def test_output_stems_never_collide():
    assert output_stems(["a/x.png", "b/x.png", "x-compare.png", "c/x.jpg"], (".npz", ".png", "-compare.png")) == [
        "x", "x-2", "x-compare-2", "x-3"]


# --- the CLI ----------------------------------------------------------------------------------------------------------


def write_targets(G, folder, n=2, labels=None) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, arr in enumerate(to_uint8(sample(G, n, seed=40, labels=labels))):
        paths.append(folder / f"t{i}.png")
        Image.fromarray(arr[..., 0]).save(paths[-1])
    return paths


def test_cli_writes_latents_pngs_comparisons_and_gif_that_reload_bit_for_bit(runs, gens, tmp_path, capsys):
    G = gens["dcgan"]
    a = write_targets(G, tmp_path / "a")
    big = tmp_path / "b" / "t0.png"  # same stem from another folder, another size and mode
    big.parent.mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(big)
    out = tmp_path / "out"
    rc, text, err = run_cli(["project", runs["dcgan"], "--target", *a, big, "--out", out, "--steps", "12",
                             "--restarts", "2", "--gif"], capsys)
    assert rc == 0, err
    assert "resized 64x64 -> 32x32, converted RGB -> L" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{x}" for s in ("t0", "t1", "t0-2") for x in (".npz", ".png", "-compare.png", ".gif"))
    for stem in ("t0", "t1", "t0-2"):
        latent = load_latent(out / f"{stem}.npz", G)
        assert latent.space == "z" and set(latent.info["losses"]) == {"pixel", "feature", "total"}
        assert latent.info["network"] == "fashion-mnist-cnn"
        png = np.asarray(Image.open(out / f"{stem}.png"))
        assert png.shape == (32, 32) and np.array_equal(to_uint8(render(G, latent))[0, ..., 0], png)
        compare = np.asarray(Image.open(out / f"{stem}-compare.png"))
        assert compare.shape == (36, 70) and np.array_equal(compare[2:34, 36:68], png)
        gif = Image.open(out / f"{stem}.gif")
        assert gif.n_frames > 1 and gif.size == (64, 32)
    target = np.asarray(Image.open(a[0]))
    assert np.array_equal(np.asarray(Image.open(out / "t0-compare.png"))[2:34, 2:34], target)
    rc, _, err = run_cli(["project", runs["dcgan"], "--target", a[0], "--out", out, "--steps", "2"], capsys)
    assert_one_line_error(rc, err, "already exists")


def test_cli_conditional_and_style_spaces(runs, gens, tmp_path, capsys):
    G = gens["classes"]
    t = write_targets(G, tmp_path / "c", 1, torch.tensor([4]))
    rc, _, err = run_cli(["project", runs["classes"], "--target", *t, "--out", tmp_path / "o1", "--steps", "3",
                          "--class", "4"], capsys)
    assert rc == 0, err
    assert torch.equal(load_latent(tmp_path / "o1" / "t0.npz", G).labels, torch.tensor([4]))
    S = gens["stylegan2"]
    t = write_targets(S, tmp_path / "s", 1)
    rc, _, err = run_cli(["project", runs["stylegan2"], "--target", *t, "--out", tmp_path / "o2", "--steps", "3",
                          "--space", "w+", "--network", "none"], capsys)
    assert rc == 0, err
    latent = load_latent(tmp_path / "o2" / "t0.npz", S)
    assert latent.space == "w+" and latent.values.shape == (1, S.num_ws, S.w_dim) and latent.noise is not None
    png = np.asarray(Image.open(tmp_path / "o2" / "t0.png"))
    assert np.array_equal(to_uint8(render(S, latent))[0, ..., 0], png)
    rc, _, err = run_cli(["project", runs["dcgan"], "--target", *t, "--out", tmp_path / "o3", "--space", "w"], capsys)
    assert_one_line_error(rc, err, "--space w")


@pytest.mark.parametrize("bad,word", [(b"", "empty"), (b"not an image at all", "not a readable image"),
                                      (png_bomb(), "too many pixels")])
def test_cli_bad_targets_fail_in_one_line_and_write_nothing(runs, gens, tmp_path, capsys, bad, word):
    good = write_targets(gens["dcgan"], tmp_path / "g", 1)
    (tmp_path / "bad.png").write_bytes(bad)
    out = tmp_path / "out"
    rc, _, err = run_cli(["project", runs["dcgan"], "--target", *good, tmp_path / "bad.png", "--out", out,
                          "--steps", "2"], capsys)
    assert_one_line_error(rc, err, word, "bad.png")
    assert not out.exists()


def test_cli_flags_are_checked(runs, tmp_path, capsys):
    t = tmp_path / "t.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(t)
    for args, word in [(["--steps", "0"], "--steps"), (["--restarts", "0"], "--restarts"),
                       (["--network", "vgg19"], "unknown projection network"), (["--class", "3"], "not conditional"),
                       (["--network", "lpips-vgg16"], "needs its weights")]:
        rc, _, err = run_cli(["project", runs["dcgan"], "--target", t, "--out", tmp_path / "o", *args], capsys)
        assert_one_line_error(rc, err, word)
        assert not (tmp_path / "o").exists()


# --- interpolation through projected latents -------------------------------------------------------------------------


def test_interpolate_walks_through_projected_latents_and_refuses_foreign_ones(runs, gens, tmp_path, capsys):
    S = gens["stylegan2"]
    t = write_targets(S, tmp_path / "s", 2)
    rc, _, err = run_cli(["project", runs["stylegan2"], "--target", *t, "--out", tmp_path / "p", "--steps", "3",
                          "--restarts", "1"], capsys)
    assert rc == 0, err
    keys = f"{tmp_path / 'p' / 't0.npz'},{tmp_path / 'p' / 't1.npz'}"
    rc, text, err = run_cli(["interpolate", runs["stylegan2"], "--latents", keys, "--steps", "4",
                             "--out", tmp_path / "frames"], capsys)
    assert rc == 0, err
    frames = sorted((tmp_path / "frames").iterdir())
    assert len(frames) == 5 and "keyframes at 0, 4" in text
    for frame, stem in [(frames[0], "t0"), (frames[-1], "t1")]:  # a keyframe is its projection's image
        assert np.array_equal(np.asarray(Image.open(frame)), np.asarray(Image.open(tmp_path / "p" / f"{stem}.png")))
    middle = np.asarray(Image.open(frames[2])).astype(int)
    assert not np.array_equal(middle, np.asarray(Image.open(frames[0])))

    rc, _, err = run_cli(["interpolate", runs["dcgan"], "--latents", keys, "--gif", tmp_path / "x.gif"], capsys)
    assert_one_line_error(rc, err, "another generator")
    rc, _, err = run_cli(["project", runs["stylegan2"], "--target", t[0], "--out", tmp_path / "q", "--steps", "2",
                          "--restarts", "1", "--space", "w+"], capsys)
    assert rc == 0, err
    mixed = f"{tmp_path / 'p' / 't0.npz'},{tmp_path / 'q' / 't0.npz'}"
    rc, _, err = run_cli(["interpolate", runs["stylegan2"], "--latents", mixed, "--gif", tmp_path / "y.gif"], capsys)
    assert_one_line_error(rc, err, "--latents files in different spaces")
    rc, _, err = run_cli(["interpolate", runs["stylegan2"], "--latents", keys, "--seeds", "1,2",
                          "--gif", tmp_path / "z.gif"], capsys)
    assert_one_line_error(rc, err, "--seeds")
    assert not any((tmp_path / n).exists() for n in ("x.gif", "y.gif", "z.gif"))


def test_generate_re_exports_the_projection_api():
    import ganforge.generate as generate
    import ganforge.latent.project as latent_project

    assert generate.project is latent_project.project and generate.Projection is latent_project.Projection
