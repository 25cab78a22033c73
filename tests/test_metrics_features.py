"""Feature-network layer: input preparation, extraction, the FID InceptionV3's layout against the official
pytorch-fid weights file, and weight resolution (explicit path, cache, download, offline error)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganforge.errors import UserError
from ganforge.metrics import EXTRACTORS, FeatureExtractor, build_extractor, extract, load_inception_weights, prepare
from ganforge.metrics import inception as inception_mod

# Entries of the official pt_inception-2015-12-05-6726825d.pth (pytorch-fid's fid_inception_v3(): torchvision
# Inception3(num_classes=1008, aux_logits=False) with the FID blocks), name -> shape.
OFFICIAL_KEYS = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.num_batches_tracked": (),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
# 94 BasicConv2d x (conv.weight + bn weight/bias/running_mean/running_var/num_batches_tracked) + fc weight/bias.
# The official file carries the num_batches_tracked counters (pytorch-fid issue #34: loading it with
# PyTorch 0.4.0 reports them as unexpected keys), so 566 tensors; without the counters it would be 472.
OFFICIAL_NUM_TENSORS = 566
OFFICIAL_NUM_PARAMETERS = 23_885_392  # parameters + BN buffers, counters excluded


class _Tiny(FeatureExtractor):
    """A cheap extractor: mean colour per channel (+ fake logits) on 8x8 inputs in [0, 1]."""

    name = "tiny"
    input_size = 8
    channels = 3
    value_range = (0.0, 1.0)
    feature_dim = 3
    num_classes = 2

    def embed(self, x):
        f = x.mean(dim=(2, 3))
        return {"features": f, "logits": f[:, :2]}


@pytest.fixture
def single_thread():
    """The test machine's cores are shared: one thread avoids OpenMP stalls that make a forward 5x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- prepare ---------------------------------------------------------------------------------------------------


def test_prepare_gray_to_rgb_and_value_range():
    x = torch.rand(2, 1, 8, 8) * 2 - 1
    y = prepare(x, _Tiny())
    assert y.shape == (2, 3, 8, 8) and y.dtype == torch.float32
    for c in range(3):
        torch.testing.assert_close(y[:, c], (x[:, 0] + 1) / 2)


def test_prepare_rgb_to_gray_uses_bt601():
    class Gray(_Tiny):
        channels = 1
        value_range = (-1.0, 1.0)

    x = torch.rand(2, 3, 8, 8) * 2 - 1
    y = prepare(x, Gray())
    assert y.shape == (2, 1, 8, 8)
    torch.testing.assert_close(y[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])


def test_prepare_resizes_bilinear_like_pytorch_fid():
    class Big(_Tiny):
        input_size = 299
        value_range = (-1.0, 1.0)

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = prepare(x, Big())
    assert y.shape == (2, 3, 299, 299)
    # pytorch-fid: images in [0, 1], bilinear align_corners=False, then 2x - 1.
    ref = 2 * F.interpolate((x + 1) / 2, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


def test_prepare_value_ranges_and_uint8():
    class Bytes(_Tiny):
        value_range = (0.0, 255.0)

    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 8, 3).contiguous()
    y = prepare(F.pad(x, (0, 5)), Bytes())
    torch.testing.assert_close(y[0, 0, 0, :3], torch.tensor([0.0, 127.5, 255.0]))
    u = torch.full((1, 3, 8, 8), 255, dtype=torch.uint8)
    torch.testing.assert_close(prepare(u, _Tiny()), torch.ones(1, 3, 8, 8))


def test_prepare_rejects_bad_shapes():
    with pytest.raises(UserError, match="NCHW"):
        prepare(torch.zeros(3, 8, 8), _Tiny())
    with pytest.raises(UserError, match="2 channels"):
        prepare(torch.zeros(1, 2, 8, 8), _Tiny())


# --- extract / registry ------------------------------------------------------------------------------------------


def test_extract_concatenates_float64_and_accepts_loader_tuples():
    batches = [torch.rand(3, 3, 8, 8), (torch.rand(2, 1, 16, 16), torch.zeros(2)), torch.zeros(0, 3, 8, 8)]
    out = extract(_Tiny(), batches, progress=False)
    assert set(out) == {"features", "logits"}
    assert out["features"].shape == (5, 3) and out["features"].dtype == np.float64
    assert out["logits"].shape == (5, 2)
    np.testing.assert_allclose(out["features"][:3], ((batches[0] + 1) / 2).mean(dim=(2, 3)).double().numpy())
    with pytest.raises(UserError, match="no images"):
        extract(_Tiny(), [], progress=False)


def test_registry_lists_inception_and_rejects_unknown():
    assert "inception-fid" in EXTRACTORS
    with pytest.raises(UserError, match="inception-fid"):
        build_extractor("no-such-network")


# --- FID InceptionV3 -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception(tmp_path_factory):
    """A randomly initialised FID Inception and its state dict saved to disk, built once for this module."""
    torch.manual_seed(0)
    model = build_extractor("inception-fid", pretrained=False)
    with torch.no_grad():  # non-trivial BN statistics, so a load that silently skipped them would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("inception") / "random_inception.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_inception_state_dict_matches_official_layout(random_inception):
    model, _ = random_inception
    state = model.state_dict()
    assert len(state) == OFFICIAL_NUM_TENSORS
    for key, shape in OFFICIAL_KEYS.items():
        assert tuple(state[key].shape) == shape, key
    assert sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked")) == OFFICIAL_NUM_PARAMETERS
    assert not any("AuxLogits" in k for k in state)
    assert model.feature_dim == 2048 and model.num_classes == 1008 and model.input_size == 299


def test_inception_loads_weights_file_and_runs(random_inception, single_thread):
    model, path = random_inception
    state = load_inception_weights(path)
    assert set(state) == set(model.state_dict())
    loaded = build_extractor("inception-fid", weights=str(path))
    torch.testing.assert_close(loaded.Mixed_7c.branch_pool.bn.running_var, model.Mixed_7c.branch_pool.bn.running_var)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = extract(loaded, [x], progress=False)
    assert out["features"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    assert np.isfinite(out["features"]).all() and np.isfinite(out["logits"]).all()
    assert (out["features"] >= 0).all()  # pool3 follows a ReLU
    # logits are pool3 @ fc.weight^T without the bias, as the original Inception Score code uses them.
    w = loaded.fc.weight.double().numpy()
    np.testing.assert_allclose(out["logits"], out["features"] @ w.T, rtol=1e-4, atol=1e-6)
    # Gray input works too (repeated to RGB).
    with torch.no_grad():
        gray = loaded(x[:, :1])["features"]
        rgb = loaded(x[:, :1].expand(-1, 3, -1, -1))["features"]
    torch.testing.assert_close(gray, rgb)


def test_inception_loads_state_dict_without_bn_counters(random_inception, tmp_path):
    # Converters that write a plain dict (e.g. torch-fidelity's) omit num_batches_tracked: still a strict load.
    model, _ = random_inception
    path = tmp_path / "no_counters.pth"
    torch.save({k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    loaded = build_extractor("inception-fid", weights=path)
    torch.testing.assert_close(loaded.fc.bias, model.fc.bias)


def test_inception_rejects_wrong_state_dict(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3)}, path)
    with pytest.raises(UserError, match="not the pytorch-fid Inception state dict") as e:
        build_extractor("inception-fid", weights=path)
    assert "\n" not in str(e.value)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch weights file"):
        load_inception_weights(corrupt)
    with pytest.raises(UserError, match="no such file"):
        load_inception_weights(tmp_path / "missing.pth")


def test_inception_weights_offline_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inception_mod, "FID_WEIGHTS_URL", "http://127.0.0.1:1/x")
    with pytest.raises(UserError) as e:
        build_extractor("inception-fid")
    msg = str(e.value)
    assert "\n" not in msg
    assert "http://127.0.0.1:1/x" in msg and "--inception-weights" in msg
    assert str(tmp_path / "cache" / "weights" / inception_mod.FID_WEIGHTS_NAME) in msg
    assert not any((tmp_path / "cache").rglob("*.part"))


def test_inception_weights_download_into_cache(monkeypatch, tmp_path):
    """The download path end to end with a file:// URL: SHA-256 check, .part renamed into the cache."""
    src = tmp_path / "served.pth"
    torch.save({"fc.bias": torch.arange(3.0)}, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(inception_mod, "FID_WEIGHTS_URL", src.as_uri())
    monkeypatch.setattr(inception_mod, "FID_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(UserError, match="checksum mismatch"):
        load_inception_weights()
    assert not any((tmp_path / "cache").rglob("*.pth")) and not any((tmp_path / "cache").rglob("*.part"))
    monkeypatch.setattr(inception_mod, "FID_WEIGHTS_SHA256", digest)
    state = load_inception_weights()
    torch.testing.assert_close(state["fc.bias"], torch.arange(3.0))
    cached = tmp_path / "cache" / "weights" / inception_mod.FID_WEIGHTS_NAME
    assert cached.is_file() and not any(cached.parent.glob("*.part"))
    src.unlink()  # now served from the cache, no download
    torch.testing.assert_close(load_inception_weights()["fc.bias"], torch.arange(3.0))


_TF32_SEEN: list[tuple[bool, bool]] = []


class _RecordsTF32(FeatureExtractor):
    """Records the TF32 flags in force while it runs (a module-level list: extract runs an inference copy)."""

    name, input_size, channels, feature_dim = "records-tf32", 8, 1, 4

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        _TF32_SEEN.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return {"features": x.flatten(1)[:, :4]}


def test_extract_turns_tf32_off_while_it_runs_and_restores_it():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        _TF32_SEEN.clear()
        extract(_RecordsTF32(), [torch.zeros(2, 1, 8, 8)], progress=False)
        assert _TF32_SEEN == [(False, False)]
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.cuda
def test_features_on_the_test_device_match_the_cpu(test_device):
    """The shipped Fashion-MNIST network embeds the same images to float32 rounding on any device (TF32 off)."""
    net = build_extractor("fashion-mnist-cnn")
    x = torch.rand(64, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cpu = extract(net, [x], device="cpu", progress=False)["features"]
    dev = extract(net, [x], device=test_device, progress=False)["features"]
    assert np.abs(cpu - dev).max() <= 1e-4 * max(1.0, np.abs(cpu).max())
