"""StyleGAN2: shapes, the modulated convolution against a per-sample reference, truncation, w_avg,
style mixing (seen through the w each layer's affine actually receives), noise, equalized lr,
determinism under the global seed, and a few training steps."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from ganforge.config import load_config
from ganforge.models import MODELS, build_discriminator, build_generator
from ganforge.models.stylegan2 import StyleGAN2Generator, modulated_conv2d


def _cfg(res: int = 32, ch: int = 1, *extra: str) -> dict:
    return load_config(None, ["model.name=stylegan2", f"data.resolution={res}", f"data.channels={ch}", "model.z_dim=16",
                              "model.nf=4", "model.nf_max=16", "model.mapping_layers=2", *extra])


def _g(*extra: str, res: int = 32, seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    G = build_generator(_cfg(res, 1, *extra))
    assert isinstance(G, StyleGAN2Generator)
    return G


def _set_noise(G: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(value)


class WRecorder:
    """Forward hooks on every affine: records (ws index, the w it received) per call."""

    def __init__(self, G: StyleGAN2Generator) -> None:
        self.seen: list[tuple[int, torch.Tensor]] = []
        self.handles = [a.register_forward_hook(self._hook(i)) for i, a in G.synthesis.affines()]

    def _hook(self, idx: int):
        def hook(module, args, out):
            self.seen.append((idx, args[0].detach().clone()))

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


# --- structure -----------------------------------------------------------------------------------
def test_registered():
    fam = MODELS.get("stylegan2")
    assert fam.resolutions == (32, 64, 128)


@pytest.mark.parametrize("res", [32, 64, 128])
@pytest.mark.parametrize("ch", [1, 3])
def test_shapes(res, ch):
    torch.manual_seed(0)
    cfg = _cfg(res, ch, "model.w_dim=24")
    G, D = build_generator(cfg), build_discriminator(cfg)
    assert (G.z_dim, G.w_dim, G.resolution, G.channels, G.num_labels) == (16, 24, res, ch, None)
    n_blocks = int(math.log2(res)) - 1  # 4x4 .. res
    assert G.num_ws == 2 * n_blocks  # 2 convs per block but one at 4x4, plus the last toRGB
    assert len(G.ws_resolutions) == G.num_ws and G.ws_resolutions[0] == 4 and G.ws_resolutions[-1] == res
    assert [i for i, _ in G.synthesis.affines()] == sorted(i for i, _ in G.synthesis.affines())
    assert len(G.synthesis.affines()) == (G.num_ws - 1) + n_blocks  # convs + toRGBs
    z = torch.randn(2, 16)
    assert G.mapping(z).shape == (2, G.num_ws, 24)
    x = G(z)
    assert x.shape == (2, ch, res, res) and torch.isfinite(x).all()
    logits = D(x)
    assert logits.shape == (2,) and torch.isfinite(logits).all()


def test_ws_resolutions_and_channels():
    cfg = load_config(None, ["model.name=stylegan2", "model.nf=32", "model.nf_max=128", "model.z_dim=8",
                             "model.mapping_layers=1"])
    G = build_generator(cfg)
    assert G.ws_resolutions == [4, 8, 8, 16, 16, 32, 32, 32]
    convs = [b.conv1.weight.shape[0] for b in G.synthesis.blocks]
    assert convs == [128, 128, 64, 32]  # min(nf * res / r, nf_max) at r = 4, 8, 16, 32
    D = build_discriminator(cfg)
    assert D.fromrgb.weight.shape[0] == 32 and D.conv.weight.shape[0] == 128


@pytest.mark.parametrize("kind", ["class", "attributes"])
def test_conditional(kind):
    torch.manual_seed(0)
    cfg = _cfg(32, 3, "model.conditional=true", "model.num_labels=5")
    G, D = build_generator(cfg).eval(), build_discriminator(cfg)
    z = torch.randn(4, 16).repeat(2, 1)
    if kind == "class":
        labels = torch.tensor([0, 1, 2, 3, 4, 4, 4, 4])
    else:
        labels = torch.tensor([[1, 0, 0, 1, 0]] * 4 + [[0, 1, 1, 0, 1]] * 4, dtype=torch.float32)
    with torch.no_grad():
        x = G(z, labels, noise_mode="const")
        assert x.shape == (8, 3, 32, 32)
        assert (x[:4] - x[4:]).abs().flatten(1).amax(1).min() > 1e-3  # same z, other label -> other image
        logits = D(x, labels)
        assert logits.shape == (8,)
        x_same = x[:1].repeat(8, 1, 1, 1)
        # same image, other label -> other logit (D's mbstd sees identical images either way)
        d = D(x_same, labels)
        assert (d[:4] - d[4:]).abs().min() > 1e-6
    with pytest.raises(ValueError):
        G(z)
    with pytest.raises(ValueError):
        D(x)


# --- modulated convolution -----------------------------------------------------------------------
def _reference(x, weight, styles, demodulate, up):
    out = []
    for xi, si in zip(x, styles, strict=True):
        w = weight * si.view(1, -1, 1, 1)
        if demodulate:
            w = w / torch.sqrt(w.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        xi = xi.unsqueeze(0)
        out.append(F.conv_transpose2d(xi, w.transpose(0, 1), stride=2) if up else F.conv2d(xi, w, padding=1))
    return torch.cat(out)


@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv2d_matches_per_sample_reference(demodulate, fused, up):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8, 8)
    weight = torch.randn(5, 6, 3, 3)
    styles = torch.randn(3, 6) / math.sqrt(6 * 9)  # outputs of order 1 without demodulation too
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, padding=0 if up else 1, up=up, fused=fused)
    ref = _reference(x, weight, styles, demodulate, up)
    assert out.shape == ref.shape == ((3, 5, 17, 17) if up else (3, 5, 8, 8))
    assert (out - ref).abs().max() < 1e-5
    assert ref.abs().max() > 0.1  # a non-trivial comparison


def test_demodulation_keeps_unit_variance():
    torch.manual_seed(0)
    x = torch.randn(8, 64, 32, 32)
    weight = torch.randn(48, 64, 3, 3)
    styles = torch.exp(torch.randn(8, 64))  # very uneven per-channel scales
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # zero padding thins the border
    var = modulated_conv2d(x, weight, styles, demodulate=True)[inner].var().item()
    assert 0.8 < var < 1.2
    var_raw = modulated_conv2d(x, weight, styles, demodulate=False)[inner].var().item()
    assert var_raw > 10  # what demodulation undoes


def test_fused_and_unfused_synthesis_agree():
    G = _g().eval()
    _set_noise(G, 0.3)
    ws = G.mapping(torch.randn(3, 16))
    a = G.synthesis(ws, noise_mode="const", fused_modconv=True)
    b = G.synthesis(ws, noise_mode="const", fused_modconv=False)
    assert (a - b).abs().max() < 1e-4


# --- mapping, truncation, w_avg ------------------------------------------------------------------
def test_truncation():
    G = _g().eval()
    _set_noise(G, 0.5)
    with torch.no_grad():
        G.w_avg.copy_(torch.randn(G.w_dim))
        z = torch.randn(4, 16)
        x0 = G(z, truncation_psi=0.0, noise_mode="const")
        ref = G.synthesis(G.w_avg.view(1, 1, -1).repeat(4, G.num_ws, 1), noise_mode="const")
        assert (x0 - ref).abs().max() < 1e-5
        assert (x0 - x0[:1]).abs().max() < 1e-5  # every z -> the image of w_avg
        x1 = G(z, truncation_psi=1.0, noise_mode="const")
        assert torch.equal(x1, G(z, noise_mode="const"))
        assert (x1 - x0).abs().max() > 1e-3
        ws = G.mapping(z, truncation_psi=0.0, truncation_cutoff=3)
        full = G.mapping(z)
        assert torch.allclose(ws[:, :3], G.w_avg.expand(4, 3, -1))
        assert torch.equal(ws[:, 3:], full[:, 3:])
        half = G.mapping(z, truncation_psi=0.5)
        assert torch.allclose(half, G.w_avg + 0.5 * (full - G.w_avg), atol=1e-6)


def test_w_avg_tracking():
    G = _g("model.w_avg_beta=0.9", "model.style_mixing=1.0")
    z = torch.randn(16, 16)
    with torch.no_grad():
        G.eval()
        w_mean = G.mapping(z)[:, 0].mean(0)
        G(z)
        assert torch.equal(G.w_avg, torch.zeros(G.w_dim))  # eval: untouched
        G.train()
        G(z)  # style mixing always on: its second z must not move w_avg
        assert torch.allclose(G.w_avg, 0.1 * w_mean, atol=1e-6)
        before = (G.w_avg - w_mean).norm()
        G(z)
        assert (G.w_avg - w_mean).norm() < before
        assert torch.allclose(G.w_avg, 0.19 * w_mean, atol=1e-6)


def test_mapping_equalized_lr():
    G = _g("model.mapping_layers=8", "model.mapping_lr_mult=0.01")
    x = torch.randn(5, 16)
    for layer in G.mapping.layers:
        fan_in = layer.weight.shape[1]
        scale = 0.01 * math.sqrt(2.0 / fan_in)
        assert layer.scale == pytest.approx(scale)
        expected = x @ (layer.weight * scale).t() + layer.bias * 0.01
        assert torch.allclose(layer(x), expected, atol=1e-5)
        assert (layer.weight * scale).std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.2)
        x = F.leaky_relu(expected, 0.2)
    # He gain counted once: w keeps a second moment of order 1 through 8 layers
    w = G.mapping(torch.randn(256, 16))[:, 0]
    assert 0.3 < w.pow(2).mean().item() < 3.0


# --- style mixing --------------------------------------------------------------------------------
def test_mixed_ws_reach_the_right_layers():
    G = _g().eval()
    rec = WRecorder(G)
    z1, z2 = torch.randn(2, 16), torch.randn(2, 16)
    with torch.no_grad():
        ws1, ws2 = G.mapping(z1), G.mapping(z2)
        k = 3
        ws = torch.cat([ws1[:, :k], ws2[:, k:]], dim=1)
        G.synthesis(ws)
    rec.close()
    assert sorted({i for i, _ in rec.seen}) == list(range(G.num_ws))
    for idx, w in rec.seen:
        assert torch.equal(w, (ws1 if idx < k else ws2)[:, 0]), idx
    # each block's toRGB shares its w with the next block's first conv, as in stylegan2-ada
    assert [i for i, _ in rec.seen] == [i for i, _ in G.synthesis.affines()]


def _used_ws(G: StyleGAN2Generator, z: torch.Tensor) -> dict[int, torch.Tensor]:
    rec = WRecorder(G)
    with torch.no_grad():
        G(z)
    rec.close()
    return dict(rec.seen)


def test_style_mixing_in_training_only():
    z = torch.randn(4, 16)
    G = _g("model.style_mixing=1.0").train()
    torch.manual_seed(1)
    cutoffs = set()
    for _ in range(6):
        used = _used_ws(G, z)
        differs = [i for i in range(G.num_ws) if not torch.equal(used[i], used[0])]
        assert differs, "style_mixing=1: some layer must get a w other than layer 0's"
        k = differs[0]
        assert differs == list(range(k, G.num_ws))  # one crossover point, then the second z's w
        cutoffs.add(k)
    assert len(cutoffs) > 1  # the cutoff is random
    G.eval()
    used = _used_ws(G, z)
    assert all(torch.equal(used[i], used[0]) for i in range(G.num_ws))
    G0 = _g("model.style_mixing=0.0").train()
    used = _used_ws(G0, z)
    assert all(torch.equal(used[i], used[0]) for i in range(G0.num_ws))


# --- noise and determinism -----------------------------------------------------------------------
def test_noise_modes():
    G = _g().eval()
    z = torch.randn(2, 16)
    with torch.no_grad():
        base = G(z, noise_mode="none")
        assert torch.equal(G(z, noise_mode="random"), base)  # noise_strength starts at 0
        _set_noise(G, 0.5)
        c1 = G(z, noise_mode="const")
        torch.manual_seed(123)
        c2 = G(z, noise_mode="const")
        assert torch.equal(c1, c2)
        assert (c1 - base).abs().max() > 1e-3
        r1, r2 = G(z, noise_mode="random"), G(z, noise_mode="random")
        assert (r1 - r2).abs().max() > 1e-3
    with pytest.raises(ValueError):
        G(z, noise_mode="bogus")


def test_training_forward_is_deterministic_under_global_seed():
    G = _g("model.style_mixing=0.5").train()
    _set_noise(G, 0.5)
    z = torch.randn(4, 16)

    def run(seed: int) -> torch.Tensor:
        g = copy.deepcopy(G)
        torch.manual_seed(seed)
        return torch.cat([g(z) for _ in range(4)])  # several batches: mixing coins, cutoffs, noise

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # the randomness comes from the global generator


def test_nsgan_steps_run_and_learn():
    """Five real `Trainer.train_step`s (style mixing on, nsgan): every part of G and D moves, all finite."""
    from conftest import synthetic_data

    from ganforge.training.trainer import Trainer

    cfg = _cfg(32, 1, "model.style_mixing=0.9", "loss.name=nsgan", "train.batch_size=8", "train.lr_g=2e-3",
               "train.lr_d=2e-3", "train.beta1=0.0", "train.beta2=0.99", "train.tensorboard=false")
    tr = Trainer(cfg, None, data=synthetic_data(n=32), quiet=True)
    G, D = tr.G, tr.D
    _set_noise(G, 0.1)
    g0 = {k: v.clone() for k, v in G.state_dict().items()}
    d0 = {k: v.clone() for k, v in D.state_dict().items()}
    for _ in range(5):
        out = tr.train_step()
        assert torch.isfinite(out["loss_d"]) and torch.isfinite(out["loss_g"])
    for name, p in list(G.named_parameters()) + list(D.named_parameters()):
        assert torch.isfinite(p).all(), name
    moved = [k for k, _ in G.named_parameters() if not torch.equal(G.state_dict()[k], g0[k])]
    for part in ("mapping.layers.0.weight", "synthesis.const", "synthesis.blocks.1.conv0.weight",
                 "synthesis.blocks.3.torgb.affine.weight", "synthesis.blocks.2.conv1.noise_strength"):
        assert part in moved, part
    assert all(not torch.equal(p, d0[k]) for k, p in D.named_parameters())
    assert not torch.equal(G.w_avg, g0["mapping.w_avg"])
