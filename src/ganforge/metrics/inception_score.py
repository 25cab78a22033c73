"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), per split, as mean and std.

Splits are consecutive chunks (i*N//splits .. (i+1)*N//splits), so every sample is used and the order of the
inputs decides the chunks, like torch-fidelity without shuffling. Computed in float64 with log-softmax, so
one-hot or near-one-hot predictions (zeros in p) give exact values rather than NaN from 0 * log 0.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import log_softmax

from ganforge.errors import UserError
from ganforge.metrics._checks import as_features


def _log_probs(x: np.ndarray, from_logits: bool) -> np.ndarray:
    if from_logits:
        return log_softmax(x, axis=1)
    if (x < 0).any() or not np.allclose(x.sum(axis=1), 1.0, atol=1e-4):
        raise UserError(
            "Inception Score probabilities must be non-negative and sum to 1 per row; "
            "pass from_logits=True for raw logits"
        )
    with np.errstate(divide="ignore"):
        return np.log(x / x.sum(axis=1, keepdims=True))


def inception_score(logits: object, splits: int = 10, from_logits: bool = True) -> tuple[float, float]:
    """(mean, population std) of IS over `splits` chunks of an (N, num_classes) array of logits (or of
    probabilities with from_logits=False). Ranges from 1 (one class for everything) to num_classes."""
    x = as_features(logits, "Inception Score logits")
    n = len(x)
    if n < 1:
        raise UserError("Inception Score needs at least 1 image, got 0")
    if int(splits) < 1:
        raise UserError(f"Inception Score splits must be >= 1, got {splits}")
    if splits > n:
        warnings.warn(f"Inception Score with {splits} splits of {n} images; using {n} splits", stacklevel=2)
        splits = n
    log_p = _log_probs(x, from_logits)
    p = np.exp(log_p)
    scores = np.empty(int(splits))
    for i in range(len(scores)):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_i, log_p_i = p[lo:hi], log_p[lo:hi]
        with np.errstate(divide="ignore", invalid="ignore"):
            log_py = np.log(p_i.mean(axis=0))
            # p * (log p - log p(y)) with the convention 0 * log 0 = 0 (log p = -inf only where p = 0).
            kl = np.where(p_i > 0, p_i * (log_p_i - log_py), 0.0).sum(axis=1)
        scores[i] = np.exp(kl.mean())
    return float(scores.mean()), float(scores.std())
