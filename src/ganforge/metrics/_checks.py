"""Input checks shared by the metrics, so every metric rejects bad feature arrays with the same clear message."""

from __future__ import annotations

import numpy as np

from ganforge.errors import UserError


def as_features(x: object, what: str) -> np.ndarray:
    """A finite (N, D) float64 array: metrics are pure functions of features, and float64 keeps the
    covariance/kernel sums exact enough that two runs on the same features agree to many digits."""
    if hasattr(x, "detach"):  # torch tensor, without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise UserError(
            f"{what} must be a 2-D array (images, feature_dim), got shape {tuple(arr.shape)}; "
            "flatten or extract features first"
        )
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise UserError(
            f"{what} contain NaN or infinite values in {bad} of {len(arr)} rows; "
            "check the generator output (a diverged model produces NaN images)"
        )
    return arr


def same_dim(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Both sets must come from the same feature network, or the comparison is meaningless."""
    if a.shape[1] != b.shape[1]:
        raise UserError(
            f"{what}: the two feature sets have different dimensions ({a.shape[1]} vs {b.shape[1]}); "
            "extract both with the same feature network"
        )
