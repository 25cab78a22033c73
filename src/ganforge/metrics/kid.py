"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel.

Unlike FID it has an unbiased estimator, so it is usable with a few hundred images. This is the estimator of
torch-fidelity and torchmetrics: k(x, y) = (x.y / d + 1)^3, MMD^2 over `num_subsets` random subsets of
`subset_size` images per set (the diagonal of K_xx, K_yy dropped, K_xy kept whole), reported as mean and
population std over subsets. Subsets are drawn with numpy's RandomState(seed).choice like torch-fidelity, so
the same seed gives the same subsets; computed in float64.
"""

from __future__ import annotations

import warnings

import numpy as np

from ganforge.errors import UserError
from ganforge.metrics._checks import as_features, same_dim


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """(x.y / d + coef0)^degree: the kernel KID is defined with (gamma = 1/d keeps it scale-free in d)."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equally sized samples under the cubic polynomial kernel."""
    m = x.shape[0]
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    f1: object, f2: object, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """(mean, std) of unbiased MMD^2 between two (N, D) feature sets over random subsets.

    A subset larger than the smaller set is clipped to its size with a warning, so small evaluations still
    give a number (with fewer subsets being effectively identical, the std shrinks towards 0).
    """
    a = as_features(f1, "KID features (set 1)")
    b = as_features(f2, "KID features (set 2)")
    same_dim(a, b, "KID")
    n = min(len(a), len(b))
    if n < 2:
        raise UserError(
            f"KID needs at least 2 images in each set, got {len(a)} and {len(b)}; "
            "use at least 1000 per set for a stable estimate"
        )
    if int(num_subsets) < 1:
        raise UserError(f"KID num_subsets must be >= 1, got {num_subsets}")
    m = int(subset_size)
    if m > n:
        warnings.warn(f"KID subset_size {m} is larger than the smaller set ({n} images); using {n}", stacklevel=2)
        m = n
    if m < 2:
        raise UserError(f"KID subset_size must be >= 2, got {subset_size}")
    rng = np.random.RandomState(seed)
    mmds = np.empty(int(num_subsets))
    for i in range(len(mmds)):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        mmds[i] = mmd2_unbiased(x, y)
    return float(mmds.mean()), float(mmds.std())
