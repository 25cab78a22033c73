"""Cross-check FID and KID against torchmetrics (a test-only dependency) through the same custom feature
module, so any disagreement is in the metric arithmetic, not the features."""

from __future__ import annotations

import pytest
import torch
from conftest import need_extra
from torch import nn

from ganforge.metrics import fid_from_features, kernel_inception_distance

need_extra("torchmetrics", "test")
from torchmetrics.image.fid import FrechetInceptionDistance  # noqa: E402
from torchmetrics.image.kid import KernelInceptionDistance  # noqa: E402


class Projection(nn.Module):
    """A fixed random projection of 4x4 RGB images to 16 features (float64, so both sides see the same)."""

    num_features = 16

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(48, 16, generator=g, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).double() @ self.w


def _images(seed: int, n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    real = torch.rand(n, 3, 4, 4, generator=g)
    fake = torch.rand(n, 3, 4, 4, generator=g) ** 1.5 + 0.05
    return real, fake


def test_fid_agrees_with_torchmetrics():
    proj = Projection()
    real, fake = _images(1)
    metric = FrechetInceptionDistance(feature=proj)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    theirs = float(metric.compute())
    with torch.no_grad():
        ours = fid_from_features(proj(real), proj(fake))
    assert theirs > 0.1
    assert ours == pytest.approx(theirs, rel=1e-12)  # the README: agree to ~1e-14 (float64 features)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save:UserWarning")
def test_kid_agrees_with_torchmetrics():
    proj = Projection()
    real, fake = _images(2)
    # subset_size = the whole set: every subset is a permutation of the full sets, so the two libraries'
    # different subset samplers cannot make the results differ.
    metric = KernelInceptionDistance(feature=proj, subsets=3, subset_size=len(real))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    theirs_mean, _ = (float(v) for v in metric.compute())
    with torch.no_grad():
        ours_mean, ours_std = kernel_inception_distance(proj(real), proj(fake), num_subsets=3, subset_size=len(real))
    assert theirs_mean > 1e-3
    assert ours_mean == pytest.approx(theirs_mean, rel=1e-12)  # the README: ~1e-14
    assert ours_std < 1e-9 * abs(ours_mean) + 1e-12
