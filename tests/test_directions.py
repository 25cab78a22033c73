"""Semantic directions (sefa, pca, classifier) and edits along them: the maths against reference formulas, the
bit-exact strength 0, files tied to their generator, the CLI's outputs and one-line errors, and the export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import need_extra, tiny_runs
from PIL import Image
from test_cli import assert_one_line_error, run_cli
from torch import nn

from ganforge.errors import UserError
from ganforge.export import export
from ganforge.generate import load_generator, make_labels
from ganforge.images import to_uint8
from ganforge.latent.core import Latent, load_latent, render, save_latent
from ganforge.latent.directions import (
    Directions,
    Spec,
    cached_directions,
    compute_directions,
    condition,
    logistic_fit,
)
from ganforge.latent.edit import edit, edited_latents
from ganforge.models.mlp import MLPGenerator
from ganforge.models.sampling import sample, seed_latents
from ganforge.models.stylegan2 import SynthesisLayer
from ganforge.tf import read_metadata


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    return tiny_runs(tmp_path_factory.mktemp("directions"))


@pytest.fixture(scope="module")
def gens(runs):
    return {k: load_generator(runs[k])[0] for k in ("dcgan", "stylegan2")}


# --- sefa ----------------------------------------------------------------------------------------------------------


def test_sefa_on_a_hand_made_weight_gives_the_known_answer():
    """Rows 3e1, e1, 2e2 (and a zero row) normalise to e1, e1, e2: AᵀA = diag(2, 1, 0), so the directions are e1
    then e2 with eigenvalues 2 and 1, whatever the rows' lengths were."""
    G = MLPGenerator(3, 28, 1, hidden=4).eval()
    with torch.no_grad():
        G.net[0].weight.copy_(torch.tensor([[3.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 0]]))
    d = compute_directions(G, "sefa")
    assert d.space == "z" and d.names[:2] == ["sefa0", "sefa1"]
    assert torch.allclose(d.importance, torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64), atol=1e-9)
    assert torch.allclose(d.vectors[:2].abs(), torch.eye(3)[:2], atol=1e-6)
    assert torch.equal(d.scale, torch.ones(3, dtype=torch.float64))


def test_sefa_equals_the_closed_form_for_dcgan_and_stylegan2(gens):
    """dcgan: the z -> 4x4 transposed conv as a (out*4*4, z_dim) matrix; stylegan2: the conv style affines stacked
    (toRGB left out, as rosinality's closed_form_factorization); each row normalised, eigenvectors of AᵀA (numpy)."""
    G = gens["dcgan"]
    w = G.convs[0].weight.detach().numpy()  # (in, out, 4, 4)
    sg = gens["stylegan2"]
    rows = [m.affine.weight.detach().numpy() for m in sg.synthesis.modules() if isinstance(m, SynthesisLayer)]
    for g, a in [(G, w.transpose(1, 2, 3, 0).reshape(-1, w.shape[0])), (sg, np.concatenate(rows))]:
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        values, vectors = np.linalg.eig(a.T @ a)
        order = np.argsort(-values.real)
        d = compute_directions(g, "sefa", Spec(k=5))
        assert np.allclose(d.importance.numpy(), values.real[order[:5]], rtol=1e-6)
        cos = np.abs(np.sum(d.vectors.double().numpy() * vectors.real[:, order[:5]].T, axis=1))
        assert np.all(cos > 1 - 1e-5), cos
    assert d.space == "w" and d.vectors.shape == (5, sg.w_dim)


# --- pca -----------------------------------------------------------------------------------------------------------


def test_pca_of_w_is_orthonormal_with_decreasing_variance_and_matches_numpy(gens):
    G = gens["stylegan2"]
    d = compute_directions(G, "pca", Spec(k=6, n=2000))
    assert torch.allclose(d.vectors @ d.vectors.T, torch.eye(6), atol=1e-5)
    imp = d.importance.numpy()
    assert np.all(np.diff(imp) <= 0) and 0 < imp.sum() <= 1
    z = torch.randn(2000, G.z_dim, generator=torch.Generator().manual_seed(0))  # the samples the method draws
    w = G.mapping(z)[:, 0].detach().double().numpy()
    _, s, vt = np.linalg.svd(w - w.mean(0), full_matrices=False)
    assert np.all(np.abs(np.sum(vt[:6] * d.vectors.double().numpy(), 1)) > 1 - 1e-6)
    assert np.allclose(imp, s[:6] ** 2 / np.sum(s**2), rtol=1e-6)
    # the scale is the std of w along each direction, measured on other samples: close to sqrt(variance)
    assert np.allclose(d.scale.numpy(), s[:6] / np.sqrt(1999), rtol=0.15)


def test_pca_in_z_regresses_activation_components_back_to_z(gens):
    """GANSpace's z procedure: directions are unit vectors (not orthogonal in general), variance shares descend,
    and moving along the first changes the first-block activations more than the last does."""
    G = gens["dcgan"]
    d = compute_directions(G, "pca", Spec(k=5, n=600))
    assert d.space == "z" and torch.allclose(d.vectors.norm(dim=1), torch.ones(5), atol=1e-6)
    assert np.all(np.diff(d.importance.numpy()) <= 0)
    acts = []
    hook = G.convs[1].register_forward_pre_hook(lambda m, inp: acts.append(inp[0].flatten(1)))
    z = seed_latents(G, list(range(16)))
    with torch.no_grad():
        G(z), G(z + d.vectors[0]), G(z + d.vectors[-1])
    hook.remove()
    assert (acts[1] - acts[0]).norm() > (acts[2] - acts[0]).norm()


# --- classifier ----------------------------------------------------------------------------------------------------


class Brightness(nn.Module):
    """A generator whose image brightness is tanh(u . z): the class "bright" lives along +u, "dark" along -u."""

    def __init__(self, u: torch.Tensor) -> None:
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.num_labels = len(u), 4, 1, None
        self.proj = nn.Linear(len(u), 1, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(u[None])

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.tanh(self.proj(z)).view(-1, 1, 1, 1).repeat(1, 1, 4, 4)


def brightness_logits(images: torch.Tensor) -> torch.Tensor:
    b = images.mean(dim=(1, 2, 3))
    return torch.stack([4 * b, -4 * b, torch.zeros_like(b)], 1)


def test_logistic_fit_matches_the_optimality_condition():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 4, generator=gen, dtype=torch.float64)
    y = ((x[:, 0] + 0.5 * torch.randn(300, generator=gen, dtype=torch.float64)) > 0).double()
    w, b = logistic_fit(x, y, l2=1.0)
    p = torch.sigmoid(x @ w + b)
    assert torch.allclose(x.T @ (p - y) + w, torch.zeros(4, dtype=torch.float64), atol=1e-8)  # gradient = 0
    assert abs(float((p - y).sum())) < 1e-8


def test_classifier_directions_find_the_known_boundary_and_move_the_score_monotonically():
    u = torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0, 0.0])
    G = Brightness(u / u.norm() * 0.5).eval()
    d = compute_directions(G, "classifier", Spec(n=1000, classifier=brightness_logits,
                                                 class_names=["bright", "dark", "other"]))
    assert set(d.names) == {"bright", "dark", "other"} and np.all(np.diff(d.importance.numpy()) <= 0)
    unit = u / u.norm()
    assert float(d.vectors[d.index("bright")] @ unit) > 0.95
    assert float(d.vectors[d.index("dark")] @ unit) < -0.95
    assert d.info["held_out_accuracy"]["bright"] > 0.95
    strengths = [-3, -1.5, 0, 1.5, 3]
    img = edit(G, list(range(8)), d, "bright", strengths)
    score = brightness_logits(img)[:, 0].view(8, 5)
    assert torch.all(score.diff(dim=1) > 0)


def test_classifier_direction_on_a_trained_run_raises_its_class_score(runs, gens):
    """The run's own domain CNN (Fashion-MNIST): along a class's direction its log-odds rise on most seeds."""
    from ganforge.latent.directions import class_scores, run_spec
    from ganforge.runs.rundir import RunDir

    G = gens["dcgan"]
    spec = run_spec(RunDir.open(runs["dcgan"]).read_config(), "classifier", n=600)
    d = compute_directions(G, "classifier", spec)
    assert "Trouser" in d.names and len(d) == 10
    assert all(0.0 <= a <= 1.0 for a in d.info["held_out_accuracy"].values())
    top = d.names[0]
    img = edit(G, list(range(10)), d, top, [-3, 0, 3])
    s = class_scores(spec.classifier(img), False)[:, spec.class_names.index(top)].view(10, 3)
    assert int((s.diff(dim=1) > 0).all(dim=1).sum()) >= 7, s


def test_condition_projects_the_kept_directions_out():
    v = torch.nn.functional.normalize(torch.tensor([[1.0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 1]]), dim=1)
    dirs = Directions(v, "z", ["a", "b", "c"], torch.tensor([0.9, 0.8, 0.7]), torch.ones(3), "classifier", "f")
    out = condition(dirs, "a", ["b"])
    assert out.names == ["a_keep_b"] and len(out) == 1
    assert torch.allclose(out.vectors[0], torch.tensor([0.0, 1, 0, 0]), atol=1e-6)
    assert torch.allclose(condition(dirs, "a", ["b", "c"]).vectors[0], torch.tensor([0.0, 1, 0, 0]), atol=1e-6)
    with pytest.raises(UserError, match="also in --keep"):
        condition(dirs, "a", ["a"])


# --- edits ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dcgan", "stylegan2"])
def test_strength_zero_is_the_sample_image_bit_for_bit(gens, kind):
    G = gens[kind]
    d = compute_directions(G, "sefa", Spec(k=3))
    seeds = [3, 1, 4]
    img = edit(G, seeds, d, 1, [-2, 0, 2])
    img = img.view(3, 3, *img.shape[1:])
    ref = torch.cat([sample(G, 1, seed=s) for s in seeds])
    assert torch.equal(img[:, 1], ref)
    assert not torch.equal(img[:, 0], ref) and not torch.equal(img[:, 2], ref)
    if kind == "stylegan2":
        assert torch.equal(edit(G, seeds, d, 1, [0], layers="coarse"), ref)


def test_latent_file_edits_start_from_its_rendering(gens, tmp_path):
    G = gens["stylegan2"]
    d = compute_directions(G, "pca", Spec(k=2, n=500))
    w = G.mapping(seed_latents(G, [5, 6]))[:, 0].detach()
    latent = Latent(w + 0.1, "w")
    loaded = load_latent(save_latent(tmp_path / "x.npz", latent, G), G)
    img = edit(G, loaded, d, 0, [0, 1])
    assert torch.equal(img[0::2], render(G, loaded, batch_size=1))


def test_layers_edit_only_their_ws(gens):
    G = gens["stylegan2"]
    d = compute_directions(G, "sefa", Spec(k=2))
    base = Latent(seed_latents(G, [2]), "z")
    full = edited_latents(G, base, d, 0, [2.0])
    part = edited_latents(G, base, d, 0, [2.0], layers="0-1")
    ws0 = G.mapping(seed_latents(G, [2]))
    step = 2.0 * float(d.scale[0]) * d.vectors[0]
    assert torch.allclose(full.values, ws0 + step, atol=1e-6)
    assert torch.allclose(part.values[:, :2], ws0[:, :2] + step, atol=1e-6)
    assert torch.equal(part.values[:, 2:], ws0[:, 2:])
    assert not torch.equal(render(G, part), render(G, full))


def test_bad_edits_are_one_line_errors(gens):
    G, sg = gens["dcgan"], gens["stylegan2"]
    d = compute_directions(G, "sefa", Spec(k=2))
    with pytest.raises(UserError, match="out of range"):
        edit(G, [1], d, 0, [0, 10.5])
    with pytest.raises(UserError, match="no direction 'nope'"):
        edit(G, [1], d, "nope", [1])
    with pytest.raises(UserError, match="another generator"):
        edit(sg, [1], d, 0, [1])
    with pytest.raises(UserError, match="style-based model"):
        edit(G, [1], d, 0, [1], layers="coarse")


# --- files, cache, CLI ---------------------------------------------------------------------------------------------


def test_direction_files_round_trip_and_refuse_another_generator(gens, tmp_path):
    G, sg = gens["dcgan"], gens["stylegan2"]
    d = compute_directions(G, "sefa", Spec(k=4))
    d.save(tmp_path / "d.npz")
    back = Directions.load(tmp_path / "d.npz", G)
    assert torch.equal(back.vectors, d.vectors) and back.names == d.names and back.space == "z"
    with pytest.raises(UserError, match="made for another generator"):
        Directions.load(tmp_path / "d.npz", sg)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a ganforge file"):
        Directions.load(tmp_path / "junk.npz", G)


def test_cached_directions_compute_once_and_follow_the_generator(runs, gens, monkeypatch):
    import ganforge.latent.directions as mod

    G, run = gens["dcgan"], runs["dcgan"]
    first = cached_directions(run, G, "sefa")
    path = run / "directions" / "sefa.npz"
    assert path.is_file()
    monkeypatch.setattr(mod, "compute_directions", lambda *a, **k: pytest.fail("recomputed a valid cache"))
    assert torch.equal(cached_directions(run, G, "sefa").vectors, first.vectors)
    monkeypatch.undo()
    other = MLPGenerator(G.z_dim, 28, 1, hidden=8).eval()  # another generator: the cache is recomputed
    assert cached_directions(run, other, "sefa").fingerprint != first.fingerprint


def test_cli_directions_and_edit_write_their_outputs(runs, tmp_path, capsys):
    run = runs["dcgan"]
    rc, out, err = run_cli(["directions", run, "--method", "sefa", "--k", "3", "--out", tmp_path / "d.npz"], capsys)
    assert rc == 0, err
    assert out.splitlines()[0].split() == ["index", "name", "eigenvalue"] and "sefa2" in out
    rc, out, err = run_cli(["edit", run, "--seeds", "1,2", "--direction", f"{tmp_path / 'd.npz'}:sefa1", "--strengths",
                        "-3,0,1.5", "--out", tmp_path / "e", "--grid", tmp_path / "g.png", "--gif",
                        tmp_path / "g.gif"], capsys)
    assert rc == 0, err
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert [(m["seed"], m["strength"]) for m in manifest] == [(s, t) for s in (1, 2) for t in (-3.0, 0.0, 1.5)]
    assert all(m["direction"] == "sefa1" and (tmp_path / "e" / m["file"]).is_file() for m in manifest)
    G = load_generator(run)[0]
    zero = np.asarray(Image.open(tmp_path / "e" / manifest[1]["file"]))
    assert np.array_equal(zero, to_uint8(sample(G, 1, seed=1))[0, ..., 0])
    assert Image.open(tmp_path / "g.gif").n_frames == 3
    assert Image.open(tmp_path / "g.png").size[0] > Image.open(tmp_path / "g.png").size[1]


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(runs, tmp_path, capsys):
    run = runs["dcgan"]
    d = tmp_path / "d.npz"
    assert run_cli(["directions", run, "--method", "sefa", "--out", d], capsys)[0] == 0
    out = tmp_path / "out"
    cases = [
        (["--strengths", "-3,0,12"], "out of range"),
        (["--strengths", "1,x"], "comma-separated numbers"),
        (["--direction", f"{d}:nope"], "no direction 'nope'"),
        (["--direction", str(d)], "FILE.npz:NAME"),
        (["--layers", "coarse"], "style-based model"),
    ]
    for extra, words in cases:
        args = ["edit", run, "--seeds", "1", "--direction", f"{d}:0", "--out", out, *extra]
        rc, _, err = run_cli(args, capsys)
        assert_one_line_error(rc, err, words)
        assert not out.exists()
    rc, _, err = run_cli(["edit", runs["stylegan2"], "--seeds", "1", "--direction", f"{d}:0", "--out", out], capsys)
    assert_one_line_error(rc, err, "another generator")
    assert not out.exists()
    rc, _, err = run_cli(["directions", run, "--method", "nope", "--out", tmp_path / "x.npz"], capsys)
    assert_one_line_error(rc, err, "unknown direction method", "sefa")
    rc, _, err = run_cli(["directions", run, "--method", "sefa", "--out", d], capsys)
    assert_one_line_error(rc, err, "already exists")
    rc, _, err = run_cli(
        ["directions", run, "--method", "pca", "--condition", "a", "--out", tmp_path / "y.npz"], capsys
    )
    assert_one_line_error(rc, err, "--keep")
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.npz").exists()


@pytest.mark.slow
def test_export_carries_directions_and_onnxruntime_edits_like_ganforge(runs, gens, tmp_path):
    need_extra("onnxruntime", "onnx")
    import onnxruntime as ort

    G, run = gens["dcgan"], runs["dcgan"]
    compute_directions(G, "sefa", Spec(k=3)).save(tmp_path / "d.npz")
    export(run, "onnx", tmp_path / "g.onnx", directions=[tmp_path / "d.npz"])
    meta = read_metadata(tmp_path / "g.onnx")
    d = meta["directions"][0]
    assert d["names"] == ["sefa0", "sefa1", "sefa2"] and d["space"] == "z" and d["file"] == "d.npz"
    # the README's recipe: z + strength * scale * vector, with onnxruntime alone
    s = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    k = d["names"].index("sefa1")
    z = np.array(meta["seed_latents"]["z"][:2], "float32") + 2.0 * d["scale"][k] * np.array(d["vectors"][k], "float32")
    got = s.run(None, {"z": z})[0]
    want = edit(G, [0, 1], Directions.load(tmp_path / "d.npz", G), "sefa1", [2.0]).numpy()
    assert np.abs(got - want).max() < 1e-4
    with pytest.raises(UserError, match="another generator"):
        export(runs["stylegan2"], "onnx", tmp_path / "s.onnx", directions=[tmp_path / "d.npz"])
    assert not (tmp_path / "s.onnx").exists()


@pytest.mark.slow
def test_keras_export_carries_directions_too(runs, gens, tmp_path, capsys):
    need_extra("keras", "tf")
    G, run = gens["dcgan"], runs["dcgan"]
    compute_directions(G, "sefa", Spec(k=2)).save(tmp_path / "d.npz")
    rc, _, err = run_cli(["export", run, "--format", "keras", "--out", tmp_path / "g.keras", "--directions",
                      tmp_path / "d.npz"], capsys)
    assert rc == 0, err
    d = read_metadata(tmp_path / "g.keras")["directions"][0]
    assert d["names"] == ["sefa0", "sefa1"] and np.array(d["vectors"]).shape == (2, G.z_dim)


def test_cli_conditional_direction_on_stylegan2_is_orthogonal_to_the_kept_one(runs, tmp_path, capsys):
    """The classifier method in w (the domain CNN on a style model's images), then --condition/--keep: the written
    direction is unit, orthogonal to the kept class's direction, and its scale is measured in w."""
    run = runs["stylegan2"]
    common = ["--method", "classifier", "--n", "300", "--seed", "2"]
    assert run_cli(["directions", run, *common, "--out", tmp_path / "all.npz"], capsys)[0] == 0
    rc, out, err = run_cli(["directions", run, *common, "--condition", "Trouser", "--keep", "Dress,Bag", "--out",
                            tmp_path / "c.npz"], capsys)
    assert rc == 0, err
    assert "Trouser_keep_Dress_Bag" in out
    G = load_generator(run)[0]
    full, cond = Directions.load(tmp_path / "all.npz", G), Directions.load(tmp_path / "c.npz", G)
    assert full.space == cond.space == "w" and cond.names == ["Trouser_keep_Dress_Bag"]
    v = cond.vectors[0]
    assert abs(float(v.norm()) - 1) < 1e-6
    for keep in ("Dress", "Bag"):
        assert abs(float(v @ full.vectors[full.index(keep)])) < 1e-5
    with torch.no_grad():
        w = G.mapping(torch.randn(4000, G.z_dim, generator=torch.Generator().manual_seed(2007)))[:, 0]
    assert abs(float((w @ v).std()) / float(cond.scale[0]) - 1) < 0.1


def test_cli_edits_latent_files_and_conditional_seeds(runs, tmp_path, capsys):
    run = runs["classes"]
    G, cfg = load_generator(run)
    assert run_cli(["directions", run, "--method", "sefa", "--k", "2", "--out", tmp_path / "d.npz"], capsys)[0] == 0
    labels = make_labels(cfg, 2, "3")
    save_latent(tmp_path / "x.npz", Latent(seed_latents(G, [4, 9]), "z", labels), G)
    rc, _, err = run_cli(["edit", run, "--latent", tmp_path / "x.npz", "--direction", f"{tmp_path / 'd.npz'}:1",
                          "--strengths", "0,2", "--out", tmp_path / "e"], capsys)
    assert rc == 0, err
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert [m["latent"] for m in manifest] == [f"{tmp_path / 'x.npz'}#{i}" for i in (0, 0, 1, 1)]
    rc, _, err = run_cli(["edit", run, "--seeds", "4,9", "--class", "3", "--direction", f"{tmp_path / 'd.npz'}:1",
                          "--strengths", "0,2", "--out", tmp_path / "s"], capsys)
    assert rc == 0, err
    for a, b in zip(sorted((tmp_path / "e").glob("*.png")), sorted((tmp_path / "s").glob("*.png")), strict=True):
        assert a.read_bytes() == b.read_bytes()  # the same z and class: the same edits
    want = sample(G, 1, seed=9, labels=labels[:1])
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / "seed9_+0.png")), to_uint8(want)[0, ..., 0])
