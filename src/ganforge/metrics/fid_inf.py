"""FID extrapolated to infinitely many generated images (Chong & Forsyth 2020, "Effectively Unbiased FID").

FID estimated from n generated images is biased upward by a term that is, to first order, linear in 1/n, and the
slope depends on the generator, so two models evaluated at the same n can even swap places. FID∞ computes FID on
nested random subsets of several sizes, fits FID(n) = FID∞ + k / n by least squares and reports the intercept. A pure
function of features, like every metric here.
"""

from __future__ import annotations

import warnings

import numpy as np

from ganforge.errors import UserError
from ganforge.metrics._checks import as_features
from ganforge.metrics.fid import frechet_distance, gaussian_stats

POINTS = 15  # the paper's number of subset sizes


def fid_infinity(
    mu_real: np.ndarray, sigma_real: np.ndarray, fake_features: object, *, points: int = POINTS,
    min_fraction: float = 0.2, seed: int = 0,
) -> tuple[float, float]:
    """(FID∞, slope k) from the reference Gaussian and all generated features: FID at `points` subset sizes evenly
    spaced from `min_fraction` of the images to all of them, nested subsets of one seeded permutation, linear fit
    in 1/n. The paper uses 5k..50k of 50k (a fraction 0.1) with fresh draws per size; the default 0.2 keeps the
    smallest subset of the default n = 10,000 (2,000) near Inception's 2,048 dimensions, below which covariances
    are singular and bend the fit (a warning says so)."""
    f = as_features(fake_features, "FID∞ features")
    n_all = len(f)
    lo = max(int(n_all * min_fraction), 2)
    if n_all < 4 or points < 2:
        raise UserError(f"FID∞ needs at least 4 generated images and 2 subset sizes, got {n_all} and {points}")
    sizes = np.unique(np.linspace(lo, n_all, points).astype(int))
    if lo < f.shape[1]:
        warnings.warn(f"FID∞: the smallest subsets ({lo} images) have fewer images than the {f.shape[1]} feature "
                      "dimensions; their singular covariances bend the fit: use more images", stacklevel=2)
    order = np.random.default_rng(seed).permutation(n_all)
    with warnings.catch_warnings():  # small subsets are the point here; the result's protocol warns about small n
        warnings.simplefilter("ignore", UserWarning)
        fids = [frechet_distance(mu_real, sigma_real, *gaussian_stats(f[order[:n]])) for n in sizes]
    k, intercept = np.polyfit(1.0 / sizes, np.asarray(fids), 1)
    return float(intercept), float(k)
