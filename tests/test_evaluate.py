"""The evaluation pipeline end to end (generation, feature extraction, cached reference statistics, logs),
with a tiny registered feature network so it runs in seconds without shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FAST, need_fashion_mnist, pixel_features, png_folder, register_pixel_net
from PIL import Image

from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.evaluation import evaluate_run
from ganforge.generate import load_generator, sample
from ganforge.metrics.evaluate import compute_metrics, evaluate_sources, parse_metrics
from ganforge.training.launch import train
from ganforge.visualize import compare_grid, nearest_neighbours

register_pixel_net()


def brute_fid(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance written out with scipy's general matrix square root (ganforge uses an eigh route)."""
    from scipy.linalg import sqrtm

    (m1, s1), (m2, s2) = ((f.mean(0), np.cov(f, rowvar=False)) for f in (a, b))
    return float(((m1 - m2) ** 2).sum() + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real))


def folder_images(folder) -> np.ndarray:
    """The folder's PNGs read with Pillow alone, as uint8 NHWC (ganforge's loader not involved)."""
    return np.stack([np.asarray(Image.open(p))[..., None] for p in sorted(folder.glob("*.png"))])


@pytest.fixture
def folder(tmp_path):
    return png_folder(tmp_path / "imgs", 80)


@pytest.fixture
def run_dir(tmp_path, folder):
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=10", f"data.source={folder}"], run_dir=tmp_path / "r",
                   quiet=True)
    return run.path


def test_evaluate_run_logs_and_caches_reference(run_dir, folder, cache_dir):  # a cache of its own
    r1 = evaluate_run(run_dir, metrics="fid,kid,is,pr", n=40, network="test-pixels", progress=False)
    assert {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall"} <= set(r1)
    G, _ = load_generator(run_dir)
    fakes = pixel_features(sample(G, 40, seed=1_000_003))  # evaluation seed 0 -> generated block seed 1 * 1000003
    assert r1["fid"] == pytest.approx(brute_fid(pixel_features(folder_images(folder)), fakes), rel=1e-4)
    assert 1.0 <= r1["is"] <= 10.0 and 0 <= r1["precision"] <= 1
    assert r1["ref_cached"] is False and r1["step"] == 10 and r1["n"] == 40 and r1["n_ref"] == 80
    r2 = evaluate_run(run_dir, metrics="fid", n=40, network="test-pixels", progress=False)
    assert r2["ref_cached"] is True and r2["fid"] == pytest.approx(r1["fid"], rel=1e-9)
    # the cache holds the reference's mean and covariance next to its features, and FID from them is the same
    from ganforge.data.paths import cache_root
    from ganforge.metrics.fid import gaussian_stats

    (npz,) = (cache_root() / "stats").glob("*test-pixels*.npz")
    with np.load(npz) as z:
        mu, sigma = gaussian_stats(z["features"])
        assert np.allclose(z["mu"], mu, rtol=0, atol=1e-12) and np.allclose(z["sigma"], sigma, rtol=0, atol=1e-12)
        stats = compute_metrics(dict(z), {"features": z["features"][:40] + 0.1}, ["fid"])["fid"]
        plain = compute_metrics({"features": z["features"]}, {"features": z["features"][:40] + 0.1}, ["fid"])["fid"]
    assert stats == pytest.approx(plain, rel=1e-9) and stats > 0
    lines = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["network"] == "test-pixels"


def test_evaluate_sources_same_folder_is_zero(folder):
    r = evaluate_sources(str(folder), str(folder), metrics="fid,pr", network="test-pixels", progress=False)
    assert r["fid"] == pytest.approx(0.0, abs=1e-6)
    assert r["precision"] == 1.0 and r["recall"] == 1.0 and r["n_real"] == 80


def test_metric_names_are_validated():
    assert parse_metrics("FID, kid") == ["fid", "kid"]
    with pytest.raises(UserError, match="unknown metric fud"):
        parse_metrics("fud")
    with pytest.raises(UserError, match="no class logits"):
        compute_metrics({"features": np.ones((4, 2))}, {"features": np.ones((4, 2))}, ["is"])


def test_compare_grid_and_nearest(run_dir, folder, tmp_path):
    p = compare_grid(run_dir, n=16)
    im = Image.open(p)
    assert im.size[0] > 2 * (4 * 34) and p.name == "compare-grid.png"
    res = nearest_neighbours(run_dir, tmp_path / "nn.png", n=3, k=4, network="test-pixels", progress=False)
    # brute force: every sample against every training image, in pixel features
    train_f = pixel_features(folder_images(folder))
    fake_f = pixel_features(sample(load_generator(run_dir)[0], 3, seed=0))
    dist = np.sqrt(((fake_f[:, None] - train_f[None]) ** 2).sum(-1))
    np.testing.assert_allclose(res["distances"], np.sort(dist, axis=1)[:, :4], atol=2e-4)
    self_d = np.sqrt(((train_f[:, None] - train_f[None]) ** 2).sum(-1)) + np.diag(np.full(len(train_f), np.inf))
    lower_median = np.sort(self_d.min(1))[(len(train_f) - 1) // 2]  # torch's median: the lower of the middle two
    assert res["train_nn_median_distance"] == pytest.approx(lower_median, abs=2e-4)
    assert (tmp_path / "nn.png").is_file()


def test_cli_eval_json(run_dir, folder, capsys):
    rc = main(["eval", str(run_dir), "--n", "20", "--network", "test-pixels", "--json", "--metrics", "fid,kid"])
    out = capsys.readouterr().out
    assert rc == 0
    assert set(json.loads(out)) >= {"fid", "kid"}
    rc = main(["eval", "--real", str(folder), "--fake", str(folder), "--network", "test-pixels", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["fid"] == pytest.approx(0, abs=1e-6)
    rc = main(["eval", "--real", str(folder)])
    assert rc == 2 and "--fake" in capsys.readouterr().err
    rc = main(["eval", str(run_dir), "--metrics", "bogus"])
    assert rc == 2


@pytest.mark.slow
def test_real_fashion_mnist_fid_is_small_and_noise_fid_is_large():
    """With the shipped fashion-mnist-cnn: train vs test images are close, test vs noise is far."""

    from ganforge.metrics.evaluate import reference_features
    from ganforge.metrics.features import build_extractor, extract
    from ganforge.metrics.fid import fid_from_features

    need_fashion_mnist()
    net = build_extractor("fashion-mnist-cnn")
    train, _ = reference_features("fashion-mnist", net, resolution=28, channels=1, n=3000, progress=False)
    test, _ = reference_features("fashion-mnist:test", net, resolution=28, channels=1, n=3000, progress=False)
    g = torch.Generator().manual_seed(0)
    noise = extract(net, [torch.randn(1000, 1, 28, 28, generator=g).clamp(-1, 1) for _ in range(3)], progress=False)
    close = fid_from_features(train["features"], test["features"])
    far = fid_from_features(test["features"], noise["features"])
    assert close < 1.0, close
    assert far > 50 * close and far > 20, (close, far)


def test_cli_nearest(run_dir, folder, capsys):
    """`ganforge nearest`: the PNG (a row per sample: it and its k neighbours) and, with --json, the distances that
    brute force finds; without --json, one readable line per sample."""
    assert main(["nearest", str(run_dir), "--n", "3", "--k", "4", "--network", "test-pixels", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    train_f = pixel_features(folder_images(folder))
    fake_f = pixel_features(sample(load_generator(run_dir)[0], 3, seed=0))
    dist = np.sqrt(((fake_f[:, None] - train_f[None]) ** 2).sum(-1))
    np.testing.assert_allclose(res["distances"], np.sort(dist, axis=1)[:, :4], atol=2e-4)
    assert res["png"] == str(run_dir / "nearest.png") and res["network"] == "test-pixels"
    w, h = Image.open(run_dir / "nearest.png").size
    assert w == 2 * (5 * 34 + 2) and h > 2 * (3 * 34 + 2)  # 5 columns, 3 rows (x2), plus a caption
    assert main(["nearest", str(run_dir), "--n", "2", "--k", "3", "--network", "test-pixels", "--seed", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"png: {run_dir / 'nearest.png'}") and "(test-pixels features)" in out[0]
    assert [ln.split(":")[0] for ln in out[2:]] == ["sample 0", "sample 1"] and out[2].count(",") == 2
    assert main(["nearest", str(run_dir), "--network", "no-such-net"]) == 2
    assert "no-such-net" in capsys.readouterr().err


def test_default_feature_network_when_network_is_omitted(folder, capsys):
    """No --network: (fashion-)mnist are judged by their domain CNN, other data by Inception; and the result is
    the one an explicit --network gives."""
    from ganforge.metrics.evaluate import default_network

    assert default_network("mnist") == "mnist-cnn" and default_network("fashion-mnist:test") == "fashion-mnist-cnn"
    assert default_network(str(folder)) == default_network("cifar10") == "inception-fid"
    need_fashion_mnist()
    args = ["eval", "--real", "fashion-mnist:test", "--fake", str(folder), "--n", "40", "--json", "--metrics", "fid"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*args, "--network", "fashion-mnist-cnn"]) == 0
    explicit = json.loads(capsys.readouterr().out)
    assert default["network"] == "fashion-mnist-cnn" and default["fid"] == explicit["fid"] > 0
