from __future__ import annotations

import pytest
import torch

from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.losses import LOSSES, build_loss
from ganforge.models import MODELS, build_discriminator, build_generator


def _cfg(model, res, ch, nf=8):
    return load_config(None, [f"model.name={model}", f"data.resolution={res}", f"data.channels={ch}", f"model.nf={nf}",
                              "model.hidden=32"])


@pytest.mark.parametrize("model, res", [(m, r) for m in ("mlp", "dcgan") for r in MODELS.get(m).resolutions])
@pytest.mark.parametrize("ch", [1, 3])
def test_shapes_and_range(model, res, ch):
    torch.manual_seed(0)
    cfg = _cfg(model, res, ch)
    G, D = build_generator(cfg), build_discriminator(cfg)
    z = torch.randn(4, cfg["model"]["z_dim"])
    x = G(z)
    assert x.shape == (4, ch, res, res)
    assert x.min() >= -1 and x.max() <= 1
    logits = D(x)
    assert logits.shape == (4,)
    assert torch.isfinite(logits).all()


def test_dcgan64_matches_pytorch_examples_layout():
    """At 64x64, nf=64 the network is the pytorch/examples one: parameter counts are theirs."""
    cfg = load_config(None, ["data.resolution=64", "data.channels=3", "model.nf=64"])
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert sum(p.numel() for p in G.parameters()) == 3576704
    assert sum(p.numel() for p in D.parameters()) == 2765568


def test_dcgan_init_std():
    torch.manual_seed(0)
    G = build_generator(_cfg("dcgan", 64, 3, nf=64))
    w = G.convs[0].weight
    assert abs(w.std().item() - 0.02) < 0.002


def test_mlp_has_no_batchnorm_in_d_and_dropout():
    cfg = _cfg("mlp", 28, 1)
    D = build_discriminator(cfg)
    kinds = {type(m).__name__ for m in D.modules()}
    assert "Dropout" in kinds and not any("BatchNorm" in k for k in kinds)
    G = build_generator(cfg)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in G.modules())


def test_unsupported_resolution_and_unknown_model():
    with pytest.raises(UserError, match="does not support data.resolution=128"):
        build_generator(_cfg("mlp", 128, 1))
    cfg = _cfg("dcgan", 32, 1)
    cfg["model"]["name"] = "nope"
    with pytest.raises(UserError, match="unknown model 'nope'.*dcgan"):
        build_generator(cfg)


def test_nsgan_loss_matches_bce():
    loss = build_loss("nsgan")
    r, f = torch.randn(16), torch.randn(16)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    ref_d = bce(r, torch.ones(16)) + bce(f, torch.zeros(16))
    assert torch.allclose(loss.d_loss(r, f), ref_d, atol=1e-6)
    assert torch.allclose(loss.g_loss(f), bce(f, torch.ones(16)), atol=1e-6)
    assert "nsgan" in LOSSES.names()


def test_inference_copy_folds_batchnorm_and_keeps_outputs():
    """Sampling/embedding for FID runs on a copy with BN folded into the convs: same numbers, model untouched."""
    from ganforge.config import load_config
    from ganforge.metrics.features import build_extractor
    from ganforge.models import build_discriminator, build_generator
    from ganforge.models.inference import inference_copy

    torch.manual_seed(0)
    G = build_generator(load_config("fashion_mnist_dcgan", ["model.nf=8"]))
    for bn in G.modules():  # non-trivial running statistics, as after training
        if isinstance(bn, torch.nn.BatchNorm2d):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    G.eval()
    z = torch.randn(8, 100)
    fast = inference_copy(G)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())  # the original is unchanged
    with torch.no_grad():
        assert torch.allclose(fast(z), G(z), atol=1e-5)
    net = build_extractor("fashion-mnist-cnn")
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    fast_net = inference_copy(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast_net.modules())
    with torch.no_grad():
        a, b = fast_net(x), net.eval()(x)
    assert torch.allclose(a["features"], b["features"], atol=1e-4)
    # conditional BN and spectral norm are left alone
    Gc = build_generator(load_config("mnist_cgan", ["model.nf=8", "model.num_labels=10"])).eval()
    with torch.no_grad():
        y = torch.arange(8) % 10
        assert torch.allclose(inference_copy(Gc)(z, y), Gc(z, y), atol=1e-5)
    D = build_discriminator(load_config(None, ["model.nf=8", "model.d_spectral_norm=true", "model.d_norm=none"])).eval()
    img = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(inference_copy(D)(img), D(img), atol=1e-5)


def test_dcgan_d_nf_sets_the_discriminators_width_only():
    """model.d_nf widens or narrows D alone (it was ignored by dcgan until the demo recipe needed it)."""
    cfg = load_config("fashion_mnist_dcgan", ["model.nf=48", "model.d_nf=16"])
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert G.convs[0].out_channels == 48 * 4 and D.features[0].out_channels == 16 and D.head.in_channels == 16 * 4
    same = build_discriminator(load_config("fashion_mnist_dcgan", ["model.nf=48"]))
    assert same.features[0].out_channels == 48  # null d_nf: D as wide as G
    assert D(G(torch.randn(2, 100))).shape == (2,)


def test_dcgan_minibatch_stddev_lets_d_see_the_groups_variety():
    """model.d_mbstd=G: each logit depends on the other images of its group of G (and on no others); 0 keeps
    the published D, parameter for parameter."""
    plain = build_discriminator(load_config("fashion_mnist_dcgan", ["model.nf=8"])).eval()
    assert plain.mbstd is None and plain.head.in_channels == 8 * 4
    D = build_discriminator(load_config("fashion_mnist_dcgan", ["model.nf=8", "model.d_mbstd=4"])).eval()
    assert D.head.in_channels == 8 * 4 + 1
    assert set(D.state_dict()) == set(plain.state_dict())  # the stddev map has no weights of its own
    x = torch.randn(8, 1, 32, 32)
    y = x.clone()
    y[0] += 1.0  # image 0 changes: groups are images {0, 2, 4, 6} and {1, 3, 5, 7} (a strided reshape)
    with torch.no_grad():
        a, b = D(x), D(y)
    changed = (a - b).abs() > 1e-6
    assert changed[[0, 2, 4, 6]].all() and not changed[[1, 3, 5, 7]].any()
    with torch.no_grad():  # without the stddev map the other images do not move
        assert ((plain(x) - plain(y)).abs() > 1e-6).tolist() == [True] + [False] * 7
