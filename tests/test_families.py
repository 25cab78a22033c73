"""GAN families: losses, regularizers, spectral norm, conditional models, DiffAugment, and short real
training runs of every family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import FAST, need_fashion_mnist, synthetic_data
from safetensors.torch import load_file

from ganforge.augment import DiffAugment
from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.generate import load_generator, sample
from ganforge.losses import LOSSES, build_loss
from ganforge.models import build_discriminator, build_generator
from ganforge.regularizers import gradient_penalty, r1_penalty
from ganforge.training.launch import train
from ganforge.training.trainer import Trainer

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")


# every registered loss against its paper's formula, written out independently: (d_loss, g_loss, default GP)
LOSS_FORMULAS = {
    "nsgan": (lambda r, f: -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean(),
              lambda f: -torch.log(torch.sigmoid(f)).mean(), 0.0),
    "wgan": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean(), 0.0),
    "wgan-gp": (lambda r, f: f.mean() - r.mean(), lambda f: -f.mean(), 10.0),
    "hinge": (lambda r, f: torch.clamp(1 - r, min=0).mean() + torch.clamp(1 + f, min=0).mean(),
              lambda f: -f.mean(), 0.0),
    "lsgan": (lambda r, f: 0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(),
              lambda f: 0.5 * ((f - 1) ** 2).mean(), 0.0),
}


@pytest.mark.parametrize("name", LOSSES.names())
def test_loss_formulas(name):
    """Without TensorFlow too: each loss, d and g halves, and its default gradient-penalty weight."""
    assert set(LOSS_FORMULAS) == set(LOSSES.names())  # a new loss needs its formula here
    g = torch.Generator().manual_seed(0)
    r, f = torch.randn(32, generator=g, dtype=torch.float64) * 3, torch.randn(32, generator=g, dtype=torch.float64) * 3
    d_ref, g_ref, gp = LOSS_FORMULAS[name]
    loss = build_loss(name)
    torch.testing.assert_close(loss.d_loss(r, f), d_ref(r, f), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(loss.g_loss(f), g_ref(f), rtol=1e-12, atol=1e-12)
    assert loss.default_gp == gp


def _cfg(*over):
    return load_config(None, ["model.nf=8", "data.resolution=32", *over])


def test_gradient_penalty_matches_explicit_autograd():
    torch.manual_seed(0)
    D = build_discriminator(_cfg("model.d_norm=none"))
    real, fake = torch.randn(6, 1, 32, 32), torch.randn(6, 1, 32, 32)
    gp = gradient_penalty(D, real, fake, None, torch.Generator().manual_seed(3))
    eps = torch.rand(6, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    norms = []
    for i in range(6):  # one sample at a time, no batching tricks
        x = (eps[i] * real[i : i + 1] + (1 - eps[i]) * fake[i : i + 1]).requires_grad_(True)
        (g,) = torch.autograd.grad(D(x).sum(), x)
        norms.append(g.flatten().norm())
    expected = ((torch.stack(norms) - 1) ** 2).mean()
    assert torch.allclose(gp, expected, rtol=1e-5, atol=1e-7)
    gp.backward()  # the penalty is differentiable w.r.t. D's weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def test_r1_matches_formula_and_is_nonzero():
    torch.manual_seed(0)
    D = build_discriminator(_cfg("model.d_norm=none"))
    real = torch.randn(5, 1, 32, 32)
    r1 = r1_penalty(D, real, None)
    x = real.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(D(x).sum(), x)
    assert r1 > 0
    assert torch.allclose(r1, g.pow(2).flatten(1).sum(1).mean(), rtol=1e-5)


def test_spectral_norm_keeps_top_singular_value_near_one(tmp_path):
    data = synthetic_data(n=200, res=32)
    run, _ = train("fashion_mnist_dcgan",
                   FAST + ["model.name=sngan", "loss.name=hinge", "train.steps=30", "train.beta1=0", "train.beta2=0.9"],
                   run_dir=tmp_path / "r", data=data, quiet=True)
    cfg = json.loads((run.path / "checkpoints" / "step-00000030.json").read_text())["config"]
    D = build_discriminator(cfg)
    t = load_file(str(run.path / "checkpoints" / "step-00000030.safetensors"))
    D.load_state_dict({k[2:]: v for k, v in t.items() if k.startswith("D.")})
    D.eval()  # eval: use the stored power-iteration vectors, no further update
    sigmas = []
    for m in D.modules():
        if hasattr(m, "parametrizations") and hasattr(m.parametrizations, "weight"):
            w = m.weight.detach()
            sigmas.append(torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item())
    assert len(sigmas) >= 8
    assert all(abs(s - 1) < 0.05 for s in sigmas), sigmas


@pytest.mark.parametrize("model", ["dcgan", "sngan", "mlp"])
def test_conditional_models_depend_on_labels(model):
    torch.manual_seed(0)
    cfg = _cfg(f"model.name={model}", "model.conditional=true", "model.num_labels=10", "model.hidden=32")
    G, D = build_generator(cfg), build_discriminator(cfg)
    G.train()
    z = torch.randn(8, 100)
    a, b = torch.zeros(8, dtype=torch.long), torch.full((8,), 7, dtype=torch.long)
    # make the conditional layers non-trivial (CBN starts as plain BN by design)
    for p in G.parameters():
        p.data += 0.05 * torch.randn_like(p)
    xa, xb = G(z, a), G(z, b)
    assert xa.shape == (8, 1, 32, 32) and not torch.allclose(xa, xb)
    da, db = D(xa, a), D(xa, b)
    assert da.shape == (8,) and not torch.allclose(da, db)


def test_projection_discriminator_attributes():
    cfg = _cfg("model.name=sngan", "model.conditional=true", "model.num_labels=5", "model.label_kind=attributes")
    D = build_discriminator(cfg).eval()  # eval: spectral norm stops its power iteration between calls
    x = torch.randn(4, 1, 32, 32)
    attrs = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.float32)
    out = D(x, attrs)
    assert out.shape == (4,)
    # the projection term is linear in the attribute vector: all-zero attributes add nothing
    h = F.relu(D.blocks(x)).sum(dim=(2, 3))
    assert torch.allclose(D(x, attrs) - D.head(h).view(-1), D.projection(h, attrs), atol=1e-5)
    assert torch.allclose(D.projection(h, attrs)[3], torch.tensor(0.0))


def test_diffaugment_gradient_flows_and_is_reproducible():
    aug = DiffAugment("color,translation,cutout")
    x = torch.rand(6, 3, 32, 32, requires_grad=True)
    y = aug(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    a = aug(x.detach(), torch.Generator().manual_seed(1))
    b = aug(x.detach(), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, x.detach())
    # translation moves content, cutout zeroes a square of half the side
    t = DiffAugment("translation")(torch.ones(50, 1, 16, 16), torch.Generator().manual_seed(0))
    assert (t == 0).any() and (t == 1).any()
    c = DiffAugment("cutout")(torch.ones(50, 1, 16, 16), torch.Generator().manual_seed(0))
    zeros = (c == 0).flatten(1).sum(1)
    assert zeros.max() == 64 and zeros.min() > 0
    with pytest.raises(UserError, match="unknown DiffAugment policy"):
        DiffAugment("color,zoom")


def test_gradient_reaches_generator_through_diffaugment():
    torch.manual_seed(0)
    data = synthetic_data(n=64, res=32)
    cfg = load_config("fashion_mnist_dcgan", FAST + ["augment.name=diffaugment"])
    tr = Trainer(cfg, None, data=data, quiet=True)
    before = [p.detach().clone() for p in tr.G.parameters()]
    tr.train_step()
    assert any(not torch.equal(a, p) for a, p in zip(before, tr.G.parameters(), strict=True))


FAMILIES = {
    "dcgan": [],
    "mlp": ["model.name=mlp", "model.hidden=32", "data.resolution=28"],
    "wgan-gp": ["loss.name=wgan-gp", "model.d_norm=none", "train.d_steps=5", "train.beta1=0", "train.beta2=0.9",
                "train.lr_d=1e-4", "train.lr_g=1e-4"],
    "sngan-hinge": ["model.name=sngan", "loss.name=hinge", "train.beta1=0", "train.beta2=0.9"],
    "lsgan": ["loss.name=lsgan"],
    "nsgan-r1": ["loss.r1_gamma=1", "model.d_norm=none"],
    "cgan": ["model.conditional=true"],
    "diffaugment": ["augment.name=diffaugment"],
}


ADVANCED = {
    # 400 images per phase: 200 steps of 16 go through every stage up to 32x32
    "progan": ("fashion_mnist32_progan", ["grow.fade_images=400", "grow.stable_images=400",
                                          "grow.batch_sizes=[16,16,16,16]"]),
    "stylegan2-pl": ("fashion_mnist32_stylegan2", ["loss.pl_weight=2"]),
    "stylegan2-ada-2k": ("fashion_mnist32_stylegan2", ["augment.name=ada", "augment.ada_speed=5000", "data.limit=2000"]),
}
SMOKE = {
    **{name: ("fashion_mnist_dcgan", FAST + over) for name, over in FAMILIES.items()},
    **{name: (preset, ["model.nf=8", "model.nf_max=32", "model.z_dim=32", "train.batch_size=16", *over])
       for name, (preset, over) in ADVANCED.items()},
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(SMOKE))
def test_each_family_trains_200_steps_on_fashion_mnist(tmp_path, family):
    need_fashion_mnist()
    preset, extra = SMOKE[family]
    over = [*extra, "data.source=fashion-mnist:test", "train.steps=200", "train.log_every=50",
            "train.sample_every=100", "train.checkpoint_every=100"]
    run, summary = train(preset, over, run_dir=tmp_path / family, quiet=True)
    assert summary["step"] == 200
    recs = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(abs(r["loss_d"]) < 1e4 and abs(r["loss_g"]) < 1e4 for r in recs)
    if family == "progan":
        assert recs[-1]["resolution"] == 32.0 and recs[-1]["alpha"] == 1.0
    if family == "stylegan2-ada-2k":
        assert all(0.0 <= r["ada_p"] <= 1.0 for r in recs)
    if family in ADVANCED:  # linear-output models still sample finite, varied images in [-1, 1]
        x = sample(load_generator(run.path)[0], 16, seed=1)
        assert x.shape == (16, 1, 32, 32) and torch.isfinite(x).all() and x.std() > 0.01
    if family == "wgan-gp":
        assert all("gp" in r for r in recs)
    for f in ("config.yaml", "loss_curves.png", "samples/step-00000200.png", "checkpoints/step-00000200.safetensors"):
        assert (run.path / f).is_file(), f
    if family == "cgan":
        cfg = (run.path / "config.yaml").read_text()
        assert "Sneaker" in cfg and "num_labels: 10" in cfg


@pytest.mark.parametrize("extra", [
    ["loss.name=wgan-gp", "model.d_norm=none", "train.d_steps=3"],
    ["model.conditional=true", "augment.name=diffaugment", "loss.r1_gamma=1", "loss.r1_every=4"],
])
@pytest.mark.cuda
def test_resume_is_exact_for_families(tmp_path, extra, test_device):
    data = synthetic_data(n=200, labels=True)
    common = FAST + extra + [f"device={test_device}"]
    train("fashion_mnist_dcgan", common + ["train.steps=20"], run_dir=tmp_path / "a", data=data, quiet=True)
    train("fashion_mnist_dcgan", common + ["train.steps=10"], run_dir=tmp_path / "b", data=data, quiet=True)
    train(None, ["train.steps=20"], resume=tmp_path / "b", data=data, quiet=True)
    a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000020.safetensors"))
    b = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000020.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_conditional_needs_labels(tmp_path):
    with pytest.raises(UserError, match="has no labels"):
        train("fashion_mnist_dcgan", FAST + ["model.conditional=true"], run_dir=tmp_path / "r",
              data=synthetic_data(n=64), quiet=True)
    assert not (tmp_path / "r").exists()


def test_sample_by_class_name_from_a_labelled_folder(tmp_path, capsys):
    from PIL import Image

    from ganforge.cli import main

    root = tmp_path / "shapes"
    data = synthetic_data(n=60, res=32)
    for i, arr in enumerate(data.images):
        d = root / ("circle" if i % 2 else "square")
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr[..., 0]).save(d / f"{i:03d}.png")
    run = tmp_path / "run"
    rc = main(["train", "fashion_mnist_dcgan", f"data.source={root}", *FAST, "train.steps=4", "model.conditional=true",
               "--run-dir", str(run), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert "label_names:\n  - circle\n  - square" in (run / "config.yaml").read_text()
    assert main(["sample", str(run), "--class", "SQUARE", "--n", "4", "--grid", str(tmp_path / "sq.png")]) == 0
    assert main(["sample", str(run), "--class", "1", "--n", "4", "--grid", str(tmp_path / "c1.png")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "--class", "triangle"]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'triangle'" in err and "circle, square" in err
    assert main(["sample", str(run), "--attr", "Smiling=1"]) == 2
    assert "not attributes" in capsys.readouterr().err
    from ganforge.generate import load_generator, make_labels, sample

    G, cfg = load_generator(run)
    a = sample(G, 4, seed=0, labels=make_labels(cfg, 4, "circle"))
    b = sample(G, 4, seed=0, labels=make_labels(cfg, 4, "square"))
    assert not torch.allclose(a, b)


def test_attribute_labels():
    from ganforge.generate import make_labels

    cfg = {"model": {"conditional": True, "label_kind": "attributes", "label_names": ["Male", "Smiling", "Young"]}}
    lab = make_labels(cfg, 3, attrs="smiling=1,Young=1")
    assert lab.shape == (3, 3) and lab[0].tolist() == [0.0, 1.0, 1.0]
    with pytest.raises(UserError, match="Male, Smiling, Young"):
        make_labels(cfg, 3, attrs="Bald=1")
    with pytest.raises(UserError, match="not classes"):
        make_labels(cfg, 3, cls="Male")
    with pytest.raises(UserError, match="not conditional"):
        make_labels({"model": {"conditional": False}}, 3, cls="3")
