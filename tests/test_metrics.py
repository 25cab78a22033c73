"""FID, KID, Inception Score and precision/recall as pure functions of features: closed forms, brute force,
and independent re-implementations of the reference code."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg

from ganforge.errors import UserError
from ganforge.metrics import (
    fid_from_features,
    frechet_distance,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    precision_recall,
)

METHODS = ["eigh", "sqrtm"]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _correlated(rng: np.random.Generator, n: int, d: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Gaussian samples with a random full covariance, so the covariances do not commute."""
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ a) * scale + shift


def pytorch_fid_reference(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Independent re-implementation of pytorch-fid's calculate_frechet_distance (sqrtm route)."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


# --- FID ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_fid_of_a_set_with_itself_is_zero(method):
    f = _correlated(_rng(), 400, 24)
    assert abs(fid_from_features(f, f, method=method)) < 1e-6


@pytest.mark.parametrize("method", METHODS)
def test_fid_matches_closed_form_for_commuting_covariances(method):
    rng = _rng(1)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2), method=method) == pytest.approx(expected, rel=1e-10)
    # The same Gaussians in a rotated basis: FID is rotation invariant, the covariances are now full.
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    got = frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T, method=method)
    assert got == pytest.approx(expected, rel=1e-9)


def test_fid_one_dimensional():
    # 1-D: (m1 - m2)^2 + (sd1 - sd2)^2, scalars accepted.
    assert frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4.0 + 1.0, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_fid_agrees_with_pytorch_fid_reference(method):
    rng = _rng(2)
    a = _correlated(rng, 300, 48)
    b = _correlated(rng, 350, 48, scale=1.3, shift=0.2)
    mu1, s1 = gaussian_stats(a)
    mu2, s2 = gaussian_stats(b)
    ref = pytorch_fid_reference(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2, method=method) == pytest.approx(ref, rel=1e-6)
    assert fid_from_features(a, b, method=method) == pytest.approx(ref, rel=1e-6)


def test_gaussian_stats_are_float64_and_unbiased():
    f = _rng(3).normal(size=(50, 5)).astype(np.float32)
    mu, sigma = gaussian_stats(f)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64 and sigma.shape == (5, 5)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False))


@pytest.mark.parametrize("method", METHODS)
def test_fid_singular_covariance_is_finite(method):
    rng = _rng(4)
    a, b = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 0.1
    with pytest.warns(UserWarning, match="rank-deficient"):
        value = fid_from_features(a, b, method=method)
    assert np.isfinite(value) and value > 0
    # Both routes agree even here (n << d).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        other = fid_from_features(a, b, method="sqrtm" if method == "eigh" else "eigh")
    assert value == pytest.approx(other, rel=1e-5)


def test_fid_small_sample_errors():
    with pytest.raises(UserError, match="at least 2 images"):
        fid_from_features(np.zeros((1, 8)), np.zeros((5, 8)))
    with pytest.raises(UserError, match="different dimensions"):
        fid_from_features(np.zeros((5, 8)), np.zeros((5, 9)))
    bad = np.ones((5, 8))
    bad[2, 3] = np.nan
    with pytest.raises(UserError, match="NaN"):
        fid_from_features(bad, np.ones((5, 8)))
    with pytest.raises(UserError, match="2-D"):
        fid_from_features(np.zeros(8), np.zeros((5, 8)))


def test_fid_two_images_does_not_crash():
    rng = _rng(5)
    with pytest.warns(UserWarning):
        assert np.isfinite(fid_from_features(rng.normal(size=(2, 16)), rng.normal(size=(2, 16))))


# --- KID ------------------------------------------------------------------------------------------------------


def brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b/d + 1)^3, written out pair by pair."""
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_brute_force_on_full_sets():
    rng = _rng(6)
    x, y = rng.normal(size=(20, 6)), rng.normal(size=(20, 6)) * 1.5 + 0.3
    mean, std = kernel_inception_distance(x, y, num_subsets=1, subset_size=20)
    assert mean == pytest.approx(brute_force_mmd2(x, y), rel=1e-10)
    assert std == 0.0
    # Several subsets that are all the full set: the same value each time.
    mean3, std3 = kernel_inception_distance(x, y, num_subsets=3, subset_size=20)
    assert mean3 == pytest.approx(mean, rel=1e-12) and std3 < 1e-12


def test_kid_same_distribution_near_zero_and_shift_positive():
    rng = _rng(7)
    d = 32
    a, b = rng.normal(size=(600, d)), rng.normal(size=(600, d))
    shifted = rng.normal(size=(600, d)) + 0.5
    same_mean, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    diff_mean, diff_std = kernel_inception_distance(a, shifted, num_subsets=20, subset_size=200)
    assert abs(same_mean) < 3 * same_std + 1e-3
    assert diff_mean > 0 and diff_mean > 10 * abs(same_mean) and diff_mean > 3 * diff_std


def test_kid_is_seeded_and_clips_subset_size():
    rng = _rng(8)
    a, b = rng.normal(size=(40, 4)), rng.normal(size=(30, 4))
    assert kernel_inception_distance(a, b, 5, 10, seed=3) == kernel_inception_distance(a, b, 5, 10, seed=3)
    with pytest.warns(UserWarning, match="using 30"):
        mean, _ = kernel_inception_distance(a, b, num_subsets=2, subset_size=1000)
    assert np.isfinite(mean)
    with pytest.raises(UserError, match="at least 2 images"):
        kernel_inception_distance(a[:1], b)


# --- Inception Score ------------------------------------------------------------------------------------------


def test_is_uniform_one_hot_is_num_classes():
    labels = np.arange(100) % 10
    probs = np.eye(10)[labels]
    mean, std = inception_score(probs, splits=10, from_logits=False)
    assert mean == pytest.approx(10.0, abs=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    # Confident logits give the same (off-class probabilities ~e^-50).
    mean, _ = inception_score(probs * 50.0, splits=10)
    assert mean == pytest.approx(10.0, abs=1e-6)
    assert inception_score(probs, splits=1, from_logits=False)[0] == pytest.approx(10.0, abs=1e-9)


def test_is_constant_prediction_is_one():
    logits = np.tile(_rng(9).normal(size=(1, 1008)), (64, 1))
    mean, std = inception_score(logits, splits=4)
    assert mean == pytest.approx(1.0, abs=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_is_matches_direct_formula():
    logits = _rng(10).normal(size=(90, 7)) * 2
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for chunk in np.array_split(p, 3):
        py = chunk.mean(0)
        scores.append(np.exp(np.mean(np.sum(chunk * (np.log(chunk) - np.log(py)), axis=1))))
    mean, std = inception_score(logits, splits=3)
    assert mean == pytest.approx(np.mean(scores), rel=1e-12) and std == pytest.approx(np.std(scores), rel=1e-9)


def test_is_small_samples_and_bad_probabilities():
    with pytest.warns(UserWarning, match="using 3 splits"):
        mean, _ = inception_score(np.eye(3), splits=10, from_logits=False)
    assert mean == pytest.approx(1.0)
    with pytest.raises(UserError, match="sum to 1"):
        inception_score(np.ones((4, 3)), splits=1, from_logits=False)


# --- precision / recall ---------------------------------------------------------------------------------------


def brute_force_precision_recall(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def coverage(query, ref, ref_radii):
        d = np.linalg.norm(query[:, None, :] - ref[None, :, :], axis=-1)
        return float(np.mean((d <= ref_radii[None, :]).any(axis=1)))

    return coverage(fake, real, radii(real)), coverage(real, fake, radii(fake))


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_precision_recall_matches_brute_force(k):
    rng = _rng(11 + k)
    real = rng.normal(size=(50, 8))
    fake = rng.normal(size=(60, 8)) * 0.8 + 0.4
    expected = brute_force_precision_recall(real, fake, k)
    assert precision_recall(real, fake, k=k, dtype="float64") == expected
    assert min(expected) > 0.0 and min(expected) < 1.0  # not a trivial all-in / all-out case


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_precision_recall_batched_equals_unbatched(dtype):
    rng = _rng(20)
    real = rng.normal(size=(57, 5))
    fake = rng.normal(size=(43, 5)) + 0.3
    full = precision_recall(real, fake, k=3, dtype=dtype)
    for bs in (1, 4, 7, 50):
        assert precision_recall(real, fake, k=3, batch_size=bs, dtype=dtype) == full


def test_precision_recall_identical_sets_and_small_samples():
    x = _rng(21).normal(size=(30, 4))
    assert precision_recall(x, x.copy()) == (1.0, 1.0)
    with pytest.warns(UserWarning, match="using k=2"):
        p, r = precision_recall(x[:3], x[3:9], k=5)
    assert 0.0 <= p <= 1.0 and 0.0 <= r <= 1.0
    with pytest.raises(UserError, match="at least 2 images"):
        precision_recall(x[:1], x)


def test_precision_recall_duplicates_count_as_neighbours():
    # Each real point appears twice: with k=1 the radius is 0, so only exact copies are inside.
    real = np.repeat(_rng(22).normal(size=(10, 3)), 2, axis=0)
    fake = np.concatenate([real[:4], real[:4] + 1e-3])
    assert precision_recall(real, fake, k=1, dtype="float64")[0] == 0.5


def test_metrics_accept_torch_tensors():
    import torch

    x = torch.from_numpy(_rng(23).normal(size=(20, 4)))
    assert fid_from_features(x, x + 1) == pytest.approx(fid_from_features(x.numpy(), x.numpy() + 1))
    assert precision_recall(x, x) == (1.0, 1.0)
