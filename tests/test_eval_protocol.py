"""Evaluation you can cite: one quantised path (a run's FID = the FID of its saved PNGs), the resize protocol, the
protocol recorded with every number and keying the caches, standing statistics, FID∞ and PPL."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, png_folder, synthetic_data
from PIL import Image
from torch import nn

from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.images import quantize, to_uint8
from ganforge.metrics.evaluate import build_network, evaluate_sources, reference_features
from ganforge.metrics.features import EXTRACTORS, FeatureExtractor, build_extractor, prepare
from ganforge.metrics.fid import frechet_distance, gaussian_stats
from ganforge.metrics.fid_inf import fid_infinity
from ganforge.metrics.lpips import LIN_FILE, VGG_FILE, load_lpips
from ganforge.metrics.ppl import perceptual_path_length, slerp
from ganforge.metrics.protocol import Protocol
from ganforge.models import standing


class TinyConv(FeatureExtractor):
    """A fixed random conv net at 40 px RGB: a stand-in with Inception's conventions, fast on a CPU."""

    name, input_size, channels, feature_dim = "test-tiny-conv", 40, 3, 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": torch.tanh(self.conv(x)).mean(dim=(2, 3))}


if "test-tiny-conv" not in EXTRACTORS.names():
    EXTRACTORS.register("test-tiny-conv")(TinyConv)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    from ganforge.training.launch import train

    root = tmp_path_factory.mktemp("evalrun")
    return train("fashion_mnist_dcgan", FAST + ["train.steps=4"], run_dir=root / "dcgan", data=synthetic_data(n=64),
                 quiet=True)[0].path


def _cli(capsys, *args: object) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_quantize_equals_png_round_trip():
    x = torch.rand(4, 3, 8, 8) * 2.2 - 1.1  # also out of range: clamped like PNGs
    back = torch.from_numpy(to_uint8(x)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    assert torch.equal(quantize(x), back)


def test_run_fid_equals_fid_of_its_saved_pngs(run, tmp_path, capsys):
    """`ganforge eval RUN --save-samples DIR` and `ganforge eval --real SRC --fake DIR` agree to 1e-6."""
    real = png_folder(tmp_path / "real", 80, res=32)
    rc, out, _ = _cli(capsys, "eval", run, "--ref", real, "--n", 120, "--network", "test-tiny-conv",
                      "--metrics", "fid,kid", "--save-samples", tmp_path / "fake", "--json")
    assert rc == 0
    a = json.loads(out)
    assert len(list((tmp_path / "fake").glob("*.png"))) == 120
    rc, out, _ = _cli(capsys, "eval", "--real", real, "--fake", tmp_path / "fake", "--network", "test-tiny-conv",
                      "--metrics", "fid,kid", "--json")
    b = json.loads(out)
    assert a["fid"] > 0 and b["fid"] == pytest.approx(a["fid"], rel=1e-6)
    assert b["kid"] == pytest.approx(a["kid"], rel=1e-6, abs=1e-12)
    # float images (--no-quantize) are a different protocol and a different number
    rc, out, _ = _cli(capsys, "eval", run, "--ref", real, "--n", 120, "--network", "test-tiny-conv", "--metrics", "fid",
                      "--no-quantize", "--json")
    c = json.loads(out)
    assert c["protocol"]["quantized"] is False and a["protocol"]["quantized"] is True
    assert c["fid"] != a["fid"]


def test_save_samples_refuses_a_used_folder(run, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.png").write_bytes(b"")
    rc, _, err = _cli(capsys, "eval", run, "--n", 4, "--save-samples", tmp_path / "x")
    assert rc == 2 and "must be a new or empty folder" in err


def _pytorch_fid_features(files, net: FeatureExtractor) -> np.ndarray:
    """pytorch-fid's preprocessing written out: PIL RGB -> ToTensor ([0, 1]) -> bilinear resize to the network's
    input inside the network (align_corners=False) -> 2x - 1."""
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), np.float32) / 255).permute(2, 0, 1)
                     for f in files])
    x = F.interpolate(x, size=(net.input_size, net.input_size), mode="bilinear", align_corners=False) * 2 - 1
    with torch.no_grad():
        return net.embed(x)["features"].double().numpy()


@pytest.mark.parametrize("side", [24, 64])  # upsampled and downsampled, never through an intermediate size
def test_folder_resized_straight_to_network_input_like_pytorch_fid(tmp_path, side):
    rng = np.random.default_rng(side)
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(d / f"{i}.png")
    net = build_network("test-tiny-conv")
    res = evaluate_sources(str(d), str(d), metrics="fid", network="test-tiny-conv", progress=False)
    assert res["resolution"] == side  # read at the images' own size
    ours, _ = reference_features(str(d), net, resolution=side, channels=3, n=None, progress=False, cache=False)
    np.testing.assert_allclose(ours["features"], _pytorch_fid_features(sorted(d.glob("*.png")), net), atol=1e-5)


def test_clean_resize_is_pils_float_bicubic():
    rng = np.random.default_rng(0)
    img = rng.random((1, 1, 16, 16), dtype=np.float32) * 2 - 1
    net = build_extractor("test-tiny-conv", resize="clean")
    ours = prepare(torch.from_numpy(img), net)[0, 0].numpy()
    pil = np.asarray(Image.fromarray(img[0, 0], mode="F").resize((40, 40), Image.BICUBIC)).clip(-1, 1)
    np.testing.assert_allclose(ours, pil, atol=1e-4)
    with pytest.raises(UserError, match="--resize 'nearest'"):
        build_extractor("test-tiny-conv", resize="nearest")


def test_reference_cache_is_keyed_by_protocol(tmp_path, cache_dir):
    d = png_folder(tmp_path / "ref", 12, res=32)
    kw = {"resolution": 32, "channels": 3, "n": None, "progress": False}
    legacy, clean = build_network("test-tiny-conv"), build_network("test-tiny-conv", resize="clean")
    a, hit_a = reference_features(str(d), legacy, **kw)
    b, hit_b = reference_features(str(d), legacy, **kw)
    c, hit_c = reference_features(str(d), clean, **kw)
    assert (hit_a, hit_b, hit_c) == (False, True, False)
    assert not np.allclose(a["features"], c["features"])
    assert len(list((cache_dir / "stats").glob("*.npz"))) == 2


def test_protocol_in_output_eval_jsonl_and_report(run, tmp_path, capsys):
    real = png_folder(tmp_path / "real", 40, res=32)
    rc, out, err = _cli(capsys, "eval", run, "--ref", real, "--n", 50, "--network", "test-tiny-conv",
                        "--metrics", "fid")
    assert rc == 0 and "protocol: test-tiny-conv (weights" in out and "50 fake vs 40" in out
    assert "G_ema" in out and "standing BN stats" in out and "uint8" in out and "legacy resize" in out
    assert "n = 50 < 10,000" in err  # small-sample warning
    rec = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()][-1]
    p = Protocol.from_dict(rec["protocol"])
    assert (p.network, p.n, p.n_ref, p.ema, p.standing_stats, p.resize) == ("test-tiny-conv", 50, 40, True, True,
                                                                          "legacy")
    # a second protocol: the report splits the tables and says they are not comparable
    from ganforge.report.facts import RunFacts
    from ganforge.report.render import protocol_tables

    f1 = RunFacts.__new__(RunFacts)
    f2 = RunFacts.__new__(RunFacts)
    f1.metrics, f2.metrics = rec, {**rec, "protocol": {**rec["protocol"], "resize": "clean", "n": 60}}
    tables = protocol_tables([f1, f2])
    assert len(tables) == 2 and all("NOT COMPARABLE" in lines[0] for _, lines in tables)
    same = protocol_tables([f1])
    assert len(same) == 1 and any("n = 50 < 10,000" in x for x in same[0][1])


def test_standing_stats_change_only_bn_buffers_and_are_reproducible():
    from ganforge.config import load_config
    from ganforge.models import build_generator

    torch.manual_seed(0)
    G = build_generator(load_config("fashion_mnist_dcgan", ["model.nf=8"]))
    bns = standing.batchnorms(G)
    assert bns
    before = {k: v.clone() for k, v in G.state_dict().items()}
    assert standing.apply_standing_stats(G)
    after = G.state_dict()
    moved = [k for k in before if not torch.equal(before[k], after[k])]
    assert moved and all("running" in k or "num_batches" in k for k in moved)
    G2 = build_generator(load_config("fashion_mnist_dcgan", ["model.nf=8"]))
    G2.load_state_dict(before)
    standing.apply_standing_stats(G2)
    assert all(torch.equal(after[k], v) for k, v in G2.state_dict().items())
    assert not G.training and all(bn.momentum == 0.1 for bn in bns)  # momentum restored, eval mode
    assert not standing.apply_standing_stats(nn.Linear(2, 2))


def test_checkpoint_stores_standing_stats_and_sampling_uses_them(run):
    from ganforge.generate import load_generator
    from ganforge.runs.rundir import RunDir

    found = RunDir.open(run).latest()
    assert found.meta[standing.META_KEY] == standing.settings()
    G, _ = load_generator(run)
    stored = {k[len("G_ema."):]: v for k, v in found.tensors.items() if k.startswith("G_ema.")}
    assert all(torch.equal(v, stored[k]) for k, v in G.state_dict().items())
    G_trained = {k[len("G."):]: v for k, v in found.tensors.items() if k.startswith("G.") and "running_mean" in k}
    assert any(not torch.equal(v, stored[k]) for k, v in G_trained.items())  # not G's statistics
    # --no-standing-stats on such a checkpoint: G_ema's statistics copied from G, as EMA keeps them
    raw, _ = load_generator(run, standing_stats=False)
    assert raw.standing_stats is False
    sd = raw.state_dict()
    assert G_trained and all(torch.equal(sd[k[len("G."):]], v) for k, v in found.tensors.items()
                             if k.startswith("G.") and k.rpartition(".")[2] in ("running_mean", "running_var"))
    weights = [k for k in sd if k.endswith(".weight")]
    assert all(torch.equal(sd[k], stored[k]) for k in weights)  # the weights stay G_ema's


def test_fid_inf_removes_the_small_sample_bias():
    rng = np.random.default_rng(0)
    d = 32
    mu, sigma = np.zeros(d), np.eye(d)  # the true distribution of the fake features: FID∞ should be ~0
    fake = rng.standard_normal((2000, d))
    fid_n = frechet_distance(mu, sigma, *gaussian_stats(fake))
    fid_inf, slope = fid_infinity(mu, sigma, fake)
    assert fid_n > 0.1 and abs(fid_inf) < fid_n / 4 and slope > 0


def _lpips_folder(tmp_path):
    from ganforge.metrics.lpips import LPIPS

    torch.manual_seed(0)
    m = LPIPS()
    sd = m.state_dict()
    # torchvision's layout: features.N.* (net.sliceK.N.* in the LPIPS tree), plus a classifier that is ignored
    trunk = {"features." + k.split(".", 2)[2]: v for k, v in sd.items() if k.startswith("net.")}
    trunk["classifier.0.weight"] = torch.zeros(2, 2)
    heads = {k: v.abs() for k, v in sd.items() if k.startswith("lin")}
    torch.save(trunk, tmp_path / VGG_FILE)
    torch.save(heads, tmp_path / LIN_FILE)
    return tmp_path, sd


def test_lpips_loads_official_layout(tmp_path):
    folder, sd = _lpips_folder(tmp_path)
    m = load_lpips(folder)
    assert torch.equal(m.lin2.model[1].weight, sd["lin2.model.1.weight"].abs())
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(m(x, x), torch.zeros(2)) and (m(x, y) > 0).all()
    assert torch.allclose(m(x, y), m(y, x))
    # the same network from one lpips.LPIPS(net="vgg") state-dict file, and as the projection distance
    torch.save({k: (v.abs() if k.startswith("lin") else v) for k, v in sd.items()}, tmp_path / "lpips.pth")
    assert torch.equal(load_lpips(tmp_path / "lpips.pth")(x, y), m(x, y))
    from ganforge.latent.perceptual import build_network

    proj = build_network("lpips-vgg16", str(folder))
    assert torch.allclose(proj.distance(proj.features(x), proj.features(y)), m(x, y), atol=1e-6)
    want = sum(((a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10) - b / (b.square().sum(1, keepdim=True).sqrt()
                 + 1e-10)).square() * w.view(1, -1, 1, 1)).sum(1).mean((1, 2))
               for a, b, w in zip(m.taps(x), m.taps(y), m.channel_weights(), strict=True))
    assert torch.allclose(m(x, y), want, atol=1e-6)  # the LPIPS formula
    (folder / LIN_FILE).unlink()
    with pytest.raises(UserError, match="vgg.pth is missing"):
        load_lpips(folder)


class Linear(nn.Module):
    """G(z) = A z as a 1x8x8 image, optionally style-based with an identity mapping (w = z)."""

    def __init__(self, d: int = 32, scale: float = 0.02, const: bool = False) -> None:
        super().__init__()
        self.z_dim = d
        self.A = nn.Parameter(torch.randn(64, d, generator=torch.Generator().manual_seed(1)) * scale)
        self.const = const

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def synthesis(self, w: torch.Tensor) -> torch.Tensor:
        x = w @ self.A.T
        return (x * 0 + 0.5 if self.const else x).view(-1, 1, 8, 8)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(z)


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).double().pow(2).flatten(1).sum(1)


def test_ppl_of_a_constant_generator_is_zero():
    for space in ("z", "w"):
        assert perceptual_path_length(Linear(const=True), _l2, 64, space=space) == 0.0


def test_ppl_of_a_linear_generator_matches_its_closed_form():
    G = Linear()
    A = G.A.detach().double()
    # w (lerp): every pair gives |A (w1 - w0)|^2 exactly, w1 - w0 ~ N(0, 2I): mean 2 |A|_F^2
    w = perceptual_path_length(G, _l2, 4000, space="w", sampling="full")
    assert w == pytest.approx(2 * float((A**2).sum()), rel=0.03)
    # z (slerp on the sphere of radius sqrt(d), t = 0): the image moves sqrt(d) theta |A u| per unit t, u a random
    # unit tangent (E |A u|^2 = |A|_F^2 / d), theta the angle between z0 and z1 (Monte Carlo for E theta^2)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 200000, G.z_dim))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    e_theta2 = float((np.arccos(cos) ** 2).mean())
    z = perceptual_path_length(G, _l2, 4000, space="z")
    assert z == pytest.approx(e_theta2 * float((A**2).sum()), rel=0.05)
    # slerp itself: unit norm, endpoints
    za, zb = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(slerp(za, zb, torch.ones(3, 1)), zb / zb.norm(dim=1, keepdim=True))
    torch.testing.assert_close(slerp(za, zb, torch.zeros(3, 1)), za / za.norm(dim=1, keepdim=True))


def test_ppl_in_w_needs_a_style_model(run):
    from ganforge.evaluation import evaluate_run

    with pytest.raises(UserError, match="no mapping network"):
        evaluate_run(run, metrics="ppl", n=8, network="test-tiny-conv", ppl_space="w", progress=False, log=False)
    rec = evaluate_run(run, metrics="ppl,fid_inf", n=40, network="test-tiny-conv", progress=False, log=False,
                       ref=str(png_folder(run.parent / "ppl-ref", 20, res=32)))
    assert rec["ppl"] > 0 and np.isfinite(rec["fid_inf"])
    assert rec["ppl_protocol"] == {"distance": "test-tiny-conv", "space": "z", "sampling": "end", "eps": 1e-4}


def test_conditional_runs_are_evaluated_with_seeded_random_labels(tmp_path, one_torch_thread):
    """Evaluation draws labels for conditional generators (it crashed on label_vector(None) before): classes
    uniformly, attributes as fair bits, the same for the same seed; the scored images are G's for those labels."""
    from conftest import attribute_data, register_pixel_net

    from ganforge.evaluation import evaluate_run
    from ganforge.metrics.evaluate import generated_batches
    from ganforge.models.sampling import random_labels, sample
    from ganforge.training.launch import train

    register_pixel_net()
    cond = FAST + ["train.steps=2", "model.conditional=true"]
    for name, data in (("classes", synthetic_data(n=64, labels=True)), ("attrs", attribute_data())):
        path = train("fashion_mnist_dcgan", cond, run_dir=tmp_path / name, data=data, quiet=True)[0].path
        rec = evaluate_run(path, metrics="fid", n=40, network="test-pixels", ref=str(png_folder(tmp_path / f"r{name}", 40)),
                           progress=False)
        assert np.isfinite(rec["fid"]) and rec["fid"] > 0
    G = torch.nn.Linear(1, 1)
    G.num_labels = 10
    classes = random_labels(G, 5000, "class", 3)
    assert classes.dtype == torch.int64 and torch.equal(classes, random_labels(G, 5000, "class", 3))
    assert torch.bincount(classes, minlength=10).min() > 400  # uniform: 500 expected per class
    bits = random_labels(G, 5000, "attributes", 3)
    assert bits.shape == (5000, 10) and abs(float(bits.mean()) - 0.5) < 0.02
    from ganforge.generate import load_generator

    G, _ = load_generator(tmp_path / "classes")
    got = next(generated_batches(G, 7, 5, label_kind="class", quantized=False))
    want = sample(G, 7, seed=5 * 1_000_003, labels=random_labels(G, 7, "class", 5 * 1_000_003))
    assert torch.allclose(got, want, atol=1e-5)


def test_standing_stats_of_attribute_models_see_multi_hot_labels():
    """An attribute-conditional G is recalibrated on attribute rows like its training labels (several bits on at
    once), not on one-hot class rows."""

    class Recorder(nn.Module):
        z_dim, num_labels = 4, 3

        def __init__(self) -> None:
            super().__init__()
            self.bn, self.seen = nn.BatchNorm1d(4), []

        def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
            self.seen.append(labels)
            return self.bn(z)

    G = Recorder()
    assert standing.apply_standing_stats(G, batches=4, batch_size=64, label_kind="attributes")
    rows = torch.cat(G.seen)
    assert rows.shape == (256, 3) and (rows.sum(1) >= 2).any() and (rows.sum(1) == 0).any()
    G = Recorder()
    standing.apply_standing_stats(G, batches=2, batch_size=64, label_kind="class")
    assert all(lb.dtype == torch.int64 and lb.dim() == 1 for lb in G.seen)
