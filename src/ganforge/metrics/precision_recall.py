"""Improved precision and recall (Kynkäänniemi et al. 2019) from feature arrays.

Each set's manifold is the union of balls around its points, with radius the distance to the point's k-th
nearest neighbour in the same set (self excluded, a duplicate counts as a neighbour). Precision is the
fraction of fake points inside the real manifold (some real r_i with ||f - r_i|| <= radius_i), recall the
fraction of real points inside the fake manifold.

Distances are computed in torch, block by block: a (batch_size x batch_size) block at a time, keeping only
the k+1 smallest distances per row for the radii and an "inside" flag per query, so 50k x 50k never
materialises (peak memory O(batch_size^2 + N k)). Squared distances are compared with squared radii, which
is the same test without square roots.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import Tensor

from ganforge.errors import UserError
from ganforge.metrics._checks import as_features, same_dim

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _sq_dists(x: Tensor, y: Tensor, x_sq: Tensor, y_sq: Tensor) -> Tensor:
    """Pairwise squared distances via |x|^2 - 2 x.y + |y|^2 (one matmul), clamped at 0 against round-off."""
    return (x_sq[:, None] - 2.0 * (x @ y.T) + y_sq[None, :]).clamp_min_(0.0)


def knn_radii(x: Tensor, k: int, batch_size: int) -> Tensor:
    """Squared distance from every row of x to its k-th nearest other row (self excluded)."""
    n = x.shape[0]
    sq = (x * x).sum(dim=1)
    radii = torch.empty(n, dtype=x.dtype, device=x.device)
    for i in range(0, n, batch_size):
        rows = x[i : i + batch_size]
        best: Tensor | None = None  # the k+1 smallest distances seen so far per row (self included)
        for j in range(0, n, batch_size):
            d = _sq_dists(rows, x[j : j + batch_size], sq[i : i + batch_size], sq[j : j + batch_size])
            # The distance to itself is exactly 0; the formula only gets it up to round-off.
            r = torch.arange(rows.shape[0], device=x.device)
            c = r + i - j
            ok = (c >= 0) & (c < d.shape[1])
            d[r[ok], c[ok]] = 0.0
            cand = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1, largest=False, sorted=True).values
        assert best is not None
        radii[i : i + batch_size] = best[:, k]
    return radii


def inside_manifold(query: Tensor, ref: Tensor, ref_radii: Tensor, batch_size: int) -> Tensor:
    """Boolean per query row: within ref_radii[i] (squared) of some ref row i."""
    q_sq = (query * query).sum(dim=1)
    r_sq = (ref * ref).sum(dim=1)
    out = torch.zeros(query.shape[0], dtype=torch.bool, device=query.device)
    for i in range(0, query.shape[0], batch_size):
        acc = torch.zeros(min(batch_size, query.shape[0] - i), dtype=torch.bool, device=query.device)
        for j in range(0, ref.shape[0], batch_size):
            d = _sq_dists(
                query[i : i + batch_size], ref[j : j + batch_size], q_sq[i : i + batch_size], r_sq[j : j + batch_size]
            )
            acc |= (d <= ref_radii[None, j : j + batch_size]).any(dim=1)
            if bool(acc.all()):
                break
        out[i : i + batch_size] = acc
    return out


def precision_recall(
    real: object,
    fake: object,
    k: int = 3,
    batch_size: int = 10000,
    *,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """(precision, recall) of fake features against real features with k-NN manifolds.

    float32 (default, as in the reference implementation) is fast on GPUs; float64 makes the result
    reproducible across devices to the last borderline point. With a set no larger than k, k is clipped to
    its size - 1 with a warning.
    """
    a = as_features(real, "precision/recall real features")
    b = as_features(fake, "precision/recall fake features")
    same_dim(a, b, "precision/recall")
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UserError(f"unknown precision/recall dtype {dtype!r}; choose float32 or float64")
        dtype = _DTYPES[dtype]
    if int(k) < 1:
        raise UserError(f"precision/recall k must be >= 1, got {k}")
    if int(batch_size) < 1:
        raise UserError(f"precision/recall batch_size must be >= 1, got {batch_size}")
    n = min(len(a), len(b))
    if n < 2:
        raise UserError(f"precision/recall needs at least 2 images in each set, got {len(a)} real and {len(b)} fake")
    k, batch_size = int(k), int(batch_size)
    if k > n - 1:
        warnings.warn(
            f"precision/recall k={k} needs more than {k} images per set, got {n}; using k={n - 1}", stacklevel=2
        )
        k = n - 1
    x = torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)
    y = torch.as_tensor(np.ascontiguousarray(b), dtype=dtype, device=device)
    real_radii = knn_radii(x, k, batch_size)
    fake_radii = knn_radii(y, k, batch_size)
    precision = inside_manifold(y, x, real_radii, batch_size).double().mean().item()
    recall = inside_manifold(x, y, fake_radii, batch_size).double().mean().item()
    return float(precision), float(recall)
