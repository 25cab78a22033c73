"""ganforge.load / Generator: the Python face gives the images the CLI writes, takes names, and stays lazy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_runs
from PIL import Image

import ganforge
from ganforge.errors import UserError
from ganforge.generate import interpolate, load_generator, make_labels, sample, style_mix


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    return tiny_runs(tmp_path_factory.mktemp("api"))


def test_import_ganforge_stays_light():
    """`import ganforge` must not import torch (the CLI's --help and scripts that only read metadata stay fast)."""
    code = ("import sys, ganforge; light = 'torch' not in sys.modules; "
            "print(light, callable(ganforge.load), 'ganforge.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(ganforge.__file__).parents[1])})
    assert out.stdout.split() == ["True", "True", "True"]  # light, and `load` arrives on first use


def test_sample_is_the_cli_sample(runs, tmp_path):
    G = ganforge.load(runs["dcgan"])
    ref, _ = load_generator(runs["dcgan"])
    images = G.sample(8, seed=3)
    assert torch.equal(images.tensor, sample(ref, 8, seed=3))
    # and the PNG grid equals the one `ganforge sample` writes
    from ganforge.cli import main

    assert main(["sample", str(runs["dcgan"]), "--n", "8", "--seed", "3", "--grid", str(tmp_path / "cli.png")]) == 0
    assert np.array_equal(np.asarray(images.grid()), np.asarray(Image.open(tmp_path / "cli.png")))
    pil = G.to_pil(images)
    assert len(pil) == 8 and pil[0].mode == "L" and pil[0].size == (32, 32)
    assert np.array_equal(np.asarray(pil[2]), images.numpy()[2, ..., 0])
    png = images._repr_png_()
    assert png.startswith(b"\x89PNG") and G._repr_png_().startswith(b"\x89PNG")


def test_loads_a_checkpoint_file_too(runs):
    path = sorted((runs["dcgan"] / "checkpoints").glob("step-*.safetensors"))[-1]
    assert torch.equal(ganforge.load(path).sample(4, seed=1).tensor, ganforge.load(runs["dcgan"]).sample(4, seed=1).tensor)


def test_conditioning_by_name(runs):
    G = ganforge.load(runs["classes"])
    ref, cfg = load_generator(runs["classes"])
    assert G.labels == [str(i) for i in range(10)] and G.label_kind == "class"
    got = G.sample(4, seed=0, cls="7").tensor
    assert torch.equal(got, sample(ref, 4, seed=0, labels=torch.full((4,), 7)))
    assert G.sample(10).nrow == 10  # every class in turn: one class per column
    with pytest.raises(UserError, match="unknown class 'cat'"):
        G.sample(2, cls="cat")
    A = ganforge.load(runs["attrs"])
    ref_a, cfg_a = load_generator(runs["attrs"])
    got = A.sample(3, attrs={"smiling": 1}).tensor  # case-insensitive names
    assert torch.equal(got, sample(ref_a, 3, labels=make_labels(cfg_a, 3, attrs="Smiling=1")))
    assert not torch.equal(got, A.sample(3).tensor)


def test_truncation_walks_and_style_mixing(runs):
    G = ganforge.load(runs["stylegan2"])
    ref, _ = load_generator(runs["stylegan2"])
    G.truncation = 0.5
    assert torch.equal(G.sample(4).tensor, sample(ref, 4, truncation_psi=0.5))
    assert torch.equal(G.sample(4, truncation=1.0).tensor, sample(ref, 4))
    with pytest.raises(UserError, match="truncation must be"):
        G.sample(2, truncation=5)
    walk = G.interpolate([1, 2], steps=4, truncation=1.0)
    assert len(walk) == 5 and torch.equal(walk.tensor, interpolate(ref, [1, 2], 4))
    mix = G.style_mix([1, 2], [3, 4, 5], truncation=1.0)
    assert mix.nrow == 4 and torch.equal(mix.tensor, style_mix(ref, [1, 2], [3, 4, 5]))
    D = ganforge.load(runs["dcgan"])
    with pytest.raises(UserError, match="style-based"):
        D.style_mix([1], [2])


def test_directions_and_edit(runs):
    G = ganforge.load(runs["stylegan2"])
    dirs = G.directions("sefa", k=3)
    assert len(dirs) == 3 and G.directions("sefa", k=3) is dirs  # computed once
    x = G.edit([4, 5], dirs.names[0], [-2, 0, 2], directions=dirs)
    assert len(x) == 6 and x.nrow == 3
    # strength 0 is the seed's own image, bit for bit (style models map one seed at a time)
    assert torch.equal(x.tensor[1], G.sample(1, seed=4).tensor[0])
    assert not torch.equal(x.tensor[0], x.tensor[1])
    with pytest.raises(UserError, match="no direction 'nope'"):
        G.edit([1], "nope", [1], directions=dirs)


def test_export_from_the_handle(runs, tmp_path):
    pytest.importorskip("onnxruntime")
    G = ganforge.load(runs["dcgan"])
    out = G.export("onnx", tmp_path / "g.onnx")
    assert Path(out["paths"]["generator"]).is_file() and out["metadata"]["parity"]["max_abs_err"] < 1e-4
    assert out["metadata"]["step"] == G.step and out["metadata"]["generator"] == "G_ema"
    with pytest.raises(UserError, match="unknown export format"):
        G.export("gif", tmp_path / "g.gif")


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ganforge.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a ganforge run directory"):
        ganforge.load(tmp_path / "empty")


def test_project_then_edit(runs):
    """Inversion through the handle: a sampled image comes back close to itself, and its latent feeds edit."""
    G = ganforge.load(runs["dcgan"])
    target = G.sample(1, seed=9).tensor
    p = G.project(target, steps=20, restarts=1, network="none")
    assert p.images.shape == target.shape and p.latent.space == "z"
    edited = G.edit(p.latent, 0, [0, 2])
    assert torch.equal(edited.tensor[0], p.images[0])  # strength 0 renders the projection itself
    with pytest.raises(UserError):
        G.project(torch.zeros(1, 3, 8, 8), steps=5, network="none")
