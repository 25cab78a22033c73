"""Domain classifiers as feature networks: the shipped weights (size, outputs, accuracy, Inception Score of real
test images), a tiny training run end to end, and one-line errors for missing, damaged or foreign weights."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import mnist_dir, need_fashion_mnist

from ganforge.cli import main
from ganforge.data import ImageData, load_dataset
from ganforge.data.sources import DataWarning
from ganforge.errors import UserError
from ganforge.metrics import EXTRACTORS, build_extractor, extract, inception_score
from ganforge.metrics import domain as domain_mod
from ganforge.metrics import train_extractor as train_mod
from ganforge.metrics.domain import DomainCNN, read_weights, shipped_weights_path, trained_weights_path
from ganforge.metrics.train_extractor import extractor_name, train_extractor

NAMES = ["mnist-cnn", "fashion-mnist-cnn"]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _shipped(name: str) -> Path:
    path = shipped_weights_path(name)
    if not path.is_file():
        pytest.skip(f"{path.name} is not shipped in this checkout")
    return path


@pytest.fixture(scope="module", autouse=True)
def _threads():
    """One thread: the test machine's cores are shared, and OpenMP stalls make contended forwards slow."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _test_split(spec: str, data_dir: Path | None) -> ImageData:
    with warnings.catch_warnings():  # converted MNIST subsets are not the official files, by design
        warnings.simplefilter("ignore", DataWarning)
        return load_dataset(spec, 28, 1, data_dir=str(data_dir) if data_dir else None)


def _logits(name: str, data: ImageData) -> np.ndarray:
    """Logits of the shipped classifier via the public path (uint8 NCHW batches -> prepare -> embed)."""
    images = torch.from_numpy(np.array(data.images)).permute(0, 3, 1, 2)
    batches = (images[i : i + 1000] for i in range(0, len(images), 1000))
    return extract(build_extractor(name, weights=_shipped(name)), batches, progress=False)["logits"]


# --- shipped weights -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shipped_weights_load_and_embed(name):
    path = _shipped(name)
    assert path.stat().st_size <= 2_000_000
    _, meta = read_weights(path, name)
    for key in ("dataset", "train_size", "test_size", "accuracy", "epochs", "seed", "ganforge_version"):
        assert key in meta
    assert meta["feature_dim"] == DomainCNN.feature_dim and meta["name"] == name
    model = build_extractor(name)  # default: the shipped file
    assert model.weights_path == path and not any(p.requires_grad for p in model.parameters())
    assert (model.input_size, model.channels, model.value_range, model.num_classes) == (28, 1, (-1.0, 1.0), 10)
    for size in (28, 32):  # 32 px goes through prepare's resize
        out = model(torch.rand(5, 1, size, size) * 2 - 1)
        assert out["features"].shape == (5, model.feature_dim) and out["logits"].shape == (5, 10)
        assert torch.isfinite(out["features"]).all() and (out["features"] >= 0).all()
    rgb = model(torch.rand(2, 3, 32, 32) * 2 - 1)  # RGB -> gray by luma
    assert rgb["logits"].shape == (2, 10)


def test_fashion_mnist_cnn_accuracy_and_inception_score():
    need_fashion_mnist()
    data = _test_split("fashion-mnist:test", None)
    logits = _logits("fashion-mnist-cnn", data)
    accuracy = float((logits.argmax(1) == data.labels).mean())
    is_mean, is_std = inception_score(logits)
    print(f"fashion-mnist-cnn: test accuracy {accuracy:.4f}, IS of the test split {is_mean:.3f} +- {is_std:.3f}")
    assert len(data) == 10_000 and accuracy >= 0.92
    assert is_mean >= 8.0  # ten balanced classes, mostly confident predictions


def test_mnist_cnn_accuracy_and_inception_score():
    """The README's 98.75% of the shipped mnist-cnn, on the 2,000 held-out npm digits `make data` converts
    (or any MNIST test split in $GANFORGE_MNIST_DIR); fails under `make test` when there is none."""
    data = _test_split("mnist:test", mnist_dir())
    logits = _logits("mnist-cnn", data)
    accuracy = float((logits.argmax(1) == data.labels).mean())
    is_mean, is_std = inception_score(logits)
    print(f"mnist-cnn on {len(data)} test images: accuracy {accuracy:.4f}, IS {is_mean:.3f} +- {is_std:.3f}")
    assert accuracy >= 0.985 and is_mean >= 9.0
    if len(data) == 2000:  # `make data`'s held-out npm digits: exactly the README's figure
        assert accuracy == 0.9875


# --- training ------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_data(monkeypatch):
    """Replace the datasets with 192 random train / 64 test images: training code, not learning, is tested."""

    def fake_load(spec, resolution, channels, data_dir=None, **kw):
        train = spec.endswith(":train")
        n, rng = (192 if train else 64), np.random.default_rng(int(train))  # the same data on every call
        images = rng.integers(0, 256, (n, resolution, resolution, channels), dtype=np.uint8)
        return ImageData(images, rng.integers(0, 10, n).astype(np.int64), [str(i) for i in range(10)], spec)

    monkeypatch.setattr(train_mod, "load_dataset", fake_load)


def test_tiny_training_run_writes_loadable_weights(tiny_data, tmp_path):
    out = tmp_path / "f.safetensors"
    info = train_extractor("fashion-mnist", out=out, epochs=1, seed=3, progress=False, max_images=128)
    assert info["path"] == str(out) and out.is_file()
    assert (info["train_size"], info["test_size"], info["epochs"], info["seed"]) == (128, 64, 1, 3)
    assert 0.0 <= info["accuracy"] <= 1.0 and info["dataset"] == "fashion-mnist"
    model = build_extractor("fashion-mnist-cnn", weights=out)
    assert model.info["accuracy"] == info["accuracy"] and model.info["feature_dim"] == model.feature_dim
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temp file
    # same seed, same weights
    again = train_extractor("fashion-mnist-cnn", out=tmp_path, epochs=1, seed=3, progress=False, max_images=128)
    assert again["path"] == str(tmp_path / "fashion-mnist-cnn.safetensors")
    assert read_weights(again["path"])[1]["tensors_sha256"] == read_weights(out)[1]["tensors_sha256"]


def test_trained_weights_in_cache_are_the_fallback(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(domain_mod, "ASSETS_DIR", tmp_path / "no-assets")
    with pytest.raises(UserError, match="run `ganforge metrics train-extractor mnist`"):
        build_extractor("mnist-cnn")
    info = train_extractor("mnist", epochs=1, progress=False)  # default out: the cache
    assert Path(info["path"]) == trained_weights_path("mnist-cnn")
    assert build_extractor("mnist-cnn").weights_path == trained_weights_path("mnist-cnn")


def test_cli_metrics_train_extractor(tiny_data, tmp_path, capsys):
    """`ganforge metrics train-extractor mnist --out F --epochs 1 --seed 3`: the flags reach the trainer, the file
    is the weights `eval --network mnist-cnn` can load, and the summary is printed; bad use is exit 2."""
    out = tmp_path / "m.safetensors"
    assert main(["metrics", "train-extractor", "mnist", "--out", str(out), "--epochs", "1", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    _, meta = read_weights(out, "mnist-cnn")
    assert (meta["name"], meta["epochs"], meta["seed"], meta["train_size"], meta["test_size"]) == ("mnist-cnn", 1, 3,
                                                                                                   192, 64)
    assert str(out) in printed and f"{meta['accuracy']:.4g}"[:4] in printed
    assert build_extractor("mnist-cnn", weights=out).info["seed"] == 3
    assert main(["metrics", "train-extractor", "cifar10"]) == 2
    assert "invalid choice: 'cifar10'" in capsys.readouterr().err
    assert main(["metrics"]) == 2
    assert "usage: ganforge metrics train-extractor" in capsys.readouterr().err


def test_augmentation_keeps_shape_range_and_background():
    g = torch.Generator().manual_seed(0)
    x = torch.full((4, 1, 28, 28), -1.0)
    x[:, :, 10:18, 10:18] = 1.0
    for name, recipe in train_mod.RECIPES.items():
        y = train_mod.augment(x, recipe, g)
        assert y.shape == x.shape and y.min() >= -1 - 1e-5 and y.max() <= 1 + 1e-5, name
        assert torch.allclose(y[:, :, 0, :], torch.tensor(-1.0)), name  # zero padding maps to background


def test_bad_names_and_arguments():
    assert extractor_name("Fashion-MNIST") == extractor_name("fashion-mnist-cnn") == "fashion-mnist-cnn"
    assert set(NAMES) <= set(EXTRACTORS.names())
    with pytest.raises(UserError, match="train one of: fashion-mnist, mnist"):
        train_extractor("cifar10")
    with pytest.raises(UserError, match="epochs must be >= 1"):
        train_extractor("mnist", epochs=0)


# --- damaged weights ------------------------------------------------------------------------------------------


@pytest.fixture
def good_file(tmp_path) -> Path:
    path = tmp_path / "good.safetensors"
    model = DomainCNN("mnist-cnn")
    train_mod.save_weights(model, path, {"name": "mnist-cnn", "dataset": "mnist", "accuracy": 0.5})
    return path


def _one_line_error(name: str, path: Path) -> str:
    with pytest.raises(UserError) as e:
        build_extractor(name, weights=path)
    msg = str(e.value)
    assert "\n" not in msg and ("train-extractor" in msg or "belong to" in msg), msg
    return msg


def test_damaged_or_foreign_weights_give_one_line_errors(good_file, tmp_path):
    assert build_extractor("mnist-cnn", weights=good_file).info["accuracy"] == 0.5
    data = good_file.read_bytes()

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    assert "not a readable safetensors file" in _one_line_error("mnist-cnn", truncated)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    assert "not a readable safetensors file" in _one_line_error("mnist-cnn", garbage)

    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    assert "damaged" in _one_line_error("mnist-cnn", flipped)

    assert "do not exist" in _one_line_error("mnist-cnn", tmp_path / "missing.safetensors")
    with pytest.raises(UserError, match="is a folder"):
        build_extractor("mnist-cnn", weights=tmp_path)
    assert "not 'fashion-mnist-cnn'" in _one_line_error("fashion-mnist-cnn", good_file)

    pickled = tmp_path / "pickled.safetensors"
    torch.save(DomainCNN().state_dict(), pickled)  # a .pth under another name is refused, never unpickled
    assert "not a readable safetensors file" in _one_line_error("mnist-cnn", pickled)


def test_foreign_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in DomainCNN().state_dict().items()}, str(path))
    assert "no ganforge-domain-cnn/1 metadata" in _one_line_error("mnist-cnn", path)
    # metadata of another tool under the same key is refused the same way
    save_file({"w": torch.zeros(2)}, str(path), metadata={"ganforge": json.dumps({"x": 1})})
    assert "no ganforge-domain-cnn/1 metadata" in _one_line_error("mnist-cnn", path)
