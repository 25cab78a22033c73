"""Latent walks (`generate.interpolate`, `ganforge interpolate`): keyframes are exactly `sample` of their seeds,
latents move monotonically away from the start, slerp keeps z's norm where lerp shrinks it, class and attribute
walks move the label only, and the GIF/grid/frames/MP4 outputs have the frames asked for."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import need_extra, tiny_runs
from PIL import Image

from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.generate import (
    interpolate,
    interpolation_path,
    load_generator,
    make_labels,
    render_path,
    sample,
    seed_latents,
    slerp,
    walk_labels,
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    return tiny_runs(tmp_path_factory.mktemp("interp"))


@pytest.fixture(scope="module")
def dcgan(runs):
    return load_generator(runs["dcgan"])


@pytest.fixture(scope="module")
def sg(runs):
    G, cfg = load_generator(runs["stylegan2"])
    G.w_avg.copy_(torch.randn_like(G.w_avg))  # 4 steps leave w_avg near 0: make truncation visible
    return G, cfg


def test_walk_keyframes_are_sample_of_their_seeds_exactly(dcgan):
    G, _ = dcgan
    x = interpolate(G, [1, 7, 42], steps=5)
    assert x.shape == (11, 1, 32, 32)
    for frame, seed in zip([0, 5, 10], [1, 7, 42], strict=True):
        assert torch.equal(x[frame], sample(G, 1, seed=seed)[0])
    assert not torch.equal(x[1], x[0]) and not torch.equal(x[4], x[5])  # the frames between are new images


def test_style_walk_keyframes_exact_in_z_and_w(sg):
    G, _ = sg
    for space, psi in [("z", 1.0), ("z", 0.6), ("w", 1.0), ("w", 0.6)]:
        path = interpolation_path(G, [3, 9], steps=4, space=space, truncation_psi=psi)
        z = seed_latents(G, [3, 9])
        want = z if space == "z" else torch.cat([G.mapping(z[i : i + 1], None, truncation_psi=psi) for i in (0, 1)])
        assert path.keyframes == [0, 4]
        assert torch.equal(path.latents[0], want[0]) and torch.equal(path.latents[4], want[1])
        # one frame per batch, as `sample(G, 1)` renders: bit-identical (CPU matmuls differ in the last bit
        # between batch sizes, so a batched walk agrees to float rounding only)
        one_by_one, batched = render_path(G, path, batch_size=1), render_path(G, path)
        for frame, seed in [(0, 3), (4, 9)]:
            ref = sample(G, 1, seed=seed, truncation_psi=psi)[0]
            assert torch.equal(one_by_one[frame], ref), (space, psi)
            torch.testing.assert_close(batched[frame], ref, atol=1e-5, rtol=0)
    plain = interpolate(G, [3, 9], steps=4)
    assert (interpolate(G, [3, 9], steps=4, truncation_psi=0.0) - plain).abs().max() > 1e-3


def test_latents_move_monotonically_away_from_the_start(dcgan, sg):
    G, _ = dcgan
    for mode in ("slerp", "lerp"):
        lat = interpolation_path(G, [1, 2], steps=16, mode=mode).latents
        dist = (lat - lat[0]).norm(dim=1)
        angle = torch.acos(torch.nn.functional.cosine_similarity(lat, lat[:1]).clamp(-1, 1))
        assert (dist.diff() > 0).all() and (angle[1:].diff() > 0).all(), mode
    w = interpolation_path(sg[0], [1, 2], steps=16, space="w").latents
    dist = (w - w[0]).flatten(1).norm(dim=1)
    assert (dist.diff() > 0).all()
    torch.testing.assert_close(dist, dist[-1] * torch.linspace(0, 1, 17), atol=1e-5, rtol=1e-4)  # lerp: even steps


def test_slerp_keeps_the_norm_that_lerp_loses():
    a, b = torch.randn(512, generator=torch.Generator().manual_seed(0)), torch.randn(512)
    mid_s, mid_l = slerp(a, b, 0.5), (a + b) / 2
    assert abs(mid_s.norm() / (a.norm() * b.norm()).sqrt() - 1) < 0.01  # stays on the Gaussian shell
    assert mid_l.norm() < 0.8 * min(a.norm(), b.norm())  # a straight line dips inside it (~1/sqrt 2)
    assert torch.equal(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, a * 2, 0.25), a * 1.25)  # parallel: falls back to lerp


def test_loop_closes_the_path(dcgan):
    G, _ = dcgan
    path = interpolation_path(G, [1, 2, 3], steps=4, loop=True)
    assert len(path.latents) == 12 and path.keyframes == [0, 4, 8]
    z = seed_latents(G, [1, 2, 3])
    torch.testing.assert_close(path.latents[-1], slerp(z[2], z[0], 0.75))  # on the way back to the first seed


def test_walk_is_deterministic(dcgan, sg):
    for G, space in [(dcgan[0], "z"), (sg[0], "w")]:
        a = interpolate(G, [4, 5, 6], steps=3, space=space, loop=True)
        assert torch.equal(a, interpolate(G, [4, 5, 6], steps=3, space=space, loop=True))


def test_wrong_space_mode_or_model_is_a_user_error(dcgan, sg):
    G, _ = dcgan
    with pytest.raises(UserError, match=r"interpolation in w \(--space w\) needs a style-based model"):
        interpolation_path(G, [1, 2], space="w")
    with pytest.raises(UserError, match="truncation needs a style-based model"):
        interpolation_path(G, [1, 2], truncation_psi=0.5)
    with pytest.raises(UserError, match="slerp has no meaning there"):
        interpolation_path(sg[0], [1, 2], space="w", mode="slerp")
    with pytest.raises(UserError, match="at least two keyframes"):
        interpolation_path(G, [1])
    with pytest.raises(UserError, match="2 seeds and 3 keyframe labels"):
        interpolation_path(G, [1, 2], labels=torch.tensor([0, 1, 2]))


def test_class_walk_holds_z_and_blends_one_hot_labels(runs):
    G, cfg = load_generator(runs["classes"])
    labels = walk_labels(cfg, classes=["0", "3", "7"])
    path = interpolation_path(G, [5], steps=4, labels=labels)
    assert torch.equal(path.latents, seed_latents(G, [5]).expand(9, -1))  # z never moves
    y = path.labels
    torch.testing.assert_close(y[2], torch.eye(10)[0] * 0.5 + torch.eye(10)[3] * 0.5)  # half-way: a soft label
    torch.testing.assert_close(y.sum(dim=1), torch.ones(9))
    x = render_path(G, path)
    for frame, cls in [(0, 0), (4, 3), (8, 7)]:
        assert torch.equal(x[frame], sample(G, 1, seed=5, labels=torch.tensor([cls]))[0])
    assert not torch.equal(x[0], x[2])
    with pytest.raises(UserError, match="--classes needs a class-conditional run"):
        walk_labels(load_generator(runs["dcgan"])[1], classes=["1", "2"])
    with pytest.raises(UserError, match="unknown class 'dog'"):
        walk_labels(cfg, classes=["1", "dog"])


def test_attribute_walk_moves_one_attribute_from_0_to_1(runs):
    G, cfg = load_generator(runs["attrs"])
    labels = walk_labels(cfg, attrs="Male=1", attr_walk="smiling")
    path = interpolation_path(G, [2], steps=4, labels=labels)
    torch.testing.assert_close(path.labels[:, 0], torch.linspace(0, 1, 5))  # Smiling 0 -> 1
    assert torch.equal(path.labels[:, 1], torch.ones(5))  # Male held at 1
    x = render_path(G, path)
    assert torch.equal(x[-1], sample(G, 1, seed=2, labels=make_labels(cfg, 1, attrs="Smiling=1,Male=1"))[0])
    with pytest.raises(UserError, match="--attr-walk 'Bald': choose one of Smiling, Male"):
        walk_labels(cfg, attr_walk="Bald")


# --- the command line ---------------------------------------------------------------------------------------------
def test_cli_gif_has_the_requested_frames_and_loops(runs, tmp_path, capsys):
    gif = tmp_path / "walk.gif"
    rc = main(["interpolate", str(runs["dcgan"]), "--seeds", "1,7,42", "--steps", "6", "--gif", str(gif),
               "--duration", "50", "--device", "cpu"])
    assert rc == 0 and "13 frames (keyframes at 0, 6, 12)" in capsys.readouterr().out
    with Image.open(gif) as im:
        assert im.n_frames == 13 and im.info["loop"] == 0 and im.info["duration"] == 50 and im.size == (32, 32)
        G, _ = load_generator(runs["dcgan"])
        first = np.asarray(im.convert("L"))
        want = ((sample(G, 1, seed=1)[0, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        assert np.array_equal(first, want)  # grayscale frames survive the GIF palette exactly
    looped = tmp_path / "loop.gif"
    assert main(["interpolate", str(runs["dcgan"]), "--seeds", "1,7,42", "--steps", "6", "--loop", "--gif",
                 str(looped), "--upscale", "2"]) == 0
    with Image.open(looped) as im:
        assert im.n_frames == 18 and im.size == (64, 64)
    again = tmp_path / "walk2.gif"
    main(["interpolate", str(runs["dcgan"]), "--seeds", "1,7,42", "--steps", "6", "--gif", str(again),
          "--duration", "50"])
    assert again.read_bytes() == gif.read_bytes()  # deterministic on CPU, byte for byte


def test_cli_grid_and_frame_folder(runs, tmp_path):
    grid, out = tmp_path / "walk.png", tmp_path / "frames"
    rc = main(["interpolate", str(runs["stylegan2"]), "--seeds", "3,4", "--steps", "5", "--space", "w",
               "--truncation", "0.7", "--grid", str(grid), "--out", str(out)])
    assert rc == 0
    files = sorted(out.glob("frame-*.png"))
    assert [f.name for f in files] == [f"frame-{i:06d}.png" for i in range(6)]
    with Image.open(grid) as im:
        assert im.size == (5 * 34 + 2, 2 * 34 + 2)  # 5 frames per row (--steps), 2 px padding
    G, _ = load_generator(runs["stylegan2"])
    # the seed-4 keyframe as written, against `sample` (to 1/255: a batched CPU walk agrees to float rounding)
    png = np.asarray(Image.open(files[5])).astype(int)
    want = ((sample(G, 1, seed=4, truncation_psi=0.7)[0, 0] + 1) * 127.5).round().numpy()
    assert np.abs(png - want).max() <= 1


def test_cli_class_and_attribute_walks(runs, tmp_path):
    gif = tmp_path / "classes.gif"
    assert main(["interpolate", str(runs["classes"]), "--seeds", "5", "--classes", "0,3,7", "--steps", "3",
                 "--gif", str(gif)]) == 0
    with Image.open(gif) as im:
        assert im.n_frames == 7
    assert main(["interpolate", str(runs["attrs"]), "--seeds", "5", "--attr-walk", "Smiling", "--steps", "4",
                 "--out", str(tmp_path / "attr")]) == 0
    assert len(list((tmp_path / "attr").glob("*.png"))) == 5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds", "1,2"], "say where the walk goes"),
        (["--space", "w", "--grid", "{tmp}/a.png"], "needs a style-based model (stylegan2)"),
        (["--classes", "1,2", "--grid", "{tmp}/a.png"], "--classes needs a class-conditional run"),
        (["--attr-walk", "Smiling", "--grid", "{tmp}/a.png"], "--attr-walk needs an attribute-conditional run"),
        (["--seeds", "3", "--grid", "{tmp}/a.png"], "at least two keyframes"),
        (["--steps", "0", "--grid", "{tmp}/a.png"], "--steps must be 1 to 1000"),
        (["--gif", "{tmp}/a.png"], "--gif {tmp}/a.png: the file name must end in .gif"),
        (["--grid", "{tmp}/exists.png"], "exists.png already exists; choose another path or pass --overwrite"),
        (["--seeds", "1,x", "--grid", "{tmp}/a.png"], "--seeds takes 1 to 32 comma-separated"),
        (["--duration", "0", "--gif", "{tmp}/a.gif"], "--duration is milliseconds per frame"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(runs, tmp_path, capsys, args, message):
    (tmp_path / "exists.png").write_bytes(b"mine")
    rc = main(["interpolate", str(runs["dcgan"])] + [a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("ganforge: error: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert (tmp_path / "exists.png").read_bytes() == b"mine" and not (tmp_path / "a.png").exists()


def test_mp4_needs_imageio_ffmpeg_and_uses_it(runs, tmp_path, capsys, monkeypatch):
    """Without imageio-ffmpeg: a one-line error. With it (the test extra installs it): a real H.264 MP4 whose
    decoded frames, size and rate are the walk's (the same frames as the lossless --gif, up to the codec's loss)."""
    from PIL import Image, ImageSequence

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
        rc = main(["interpolate", str(runs["dcgan"]), "--mp4", str(tmp_path / "a.mp4")])
    assert rc == 2 and "--mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg)" in capsys.readouterr().err
    imageio_ffmpeg = need_extra("imageio_ffmpeg", "test")
    mp4, gif = tmp_path / "a.mp4", tmp_path / "a.gif"
    walk = ["--steps", "4", "--duration", "50", "--upscale", "2"]
    assert main(["interpolate", str(runs["stylegan2"]), *walk, "--mp4", str(mp4)]) == 0
    assert main(["interpolate", str(runs["stylegan2"]), *walk, "--gif", str(gif)]) == 0
    reader = imageio_ffmpeg.read_frames(str(mp4))
    info = next(reader)
    assert info["codec"] == "h264" and info["size"] == (64, 64) and info["fps"] == 20.0
    frames = [np.frombuffer(f, np.uint8).reshape(64, 64, 3) for f in reader]
    want = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(gif))]
    assert len(frames) == len(want) == 5
    for got, ref in zip(frames, want, strict=True):
        assert np.abs(got.astype(int) - ref).mean() < 4  # lossy, but the same picture
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 10  # a walk between two different pictures
