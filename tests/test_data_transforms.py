"""ganforge.data.transforms: pure-torch batch transforms."""

import pytest
import torch

from ganforge.data import transforms as T


def test_center_crop_square_takes_the_middle():
    x = torch.arange(10 * 6).view(1, 1, 10, 6).expand(2, 3, 10, 6)
    y = T.center_crop_square(x)
    assert y.shape == (2, 3, 6, 6)
    assert torch.equal(y, x[:, :, 2:8, :])
    wide = torch.arange(4 * 9).view(1, 1, 4, 9)
    assert torch.equal(T.center_crop_square(wide), wide[..., 2:6])


@pytest.mark.parametrize("size", [7, 28, 64])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resize_keeps_constant_images_constant(size, dtype):
    x = torch.full((3, 2, 28, 28), 173, dtype=dtype)
    y = T.resize(x, size)
    assert y.shape == (3, 2, size, size) and y.dtype == dtype
    assert torch.allclose(y.float(), torch.full_like(y.float(), 173), atol=1e-3)
    if dtype == torch.uint8:
        assert (y == 173).all()


def test_resize_uint8_rounds_and_clamps_and_accepts_chw():
    x = torch.zeros(1, 8, 8, dtype=torch.uint8)
    x[:, ::2, ::2] = 255  # a checkerboard makes bicubic overshoot; uint8 must clamp instead of wrapping
    y = T.resize(x, 19)
    assert y.shape == (1, 19, 19) and y.dtype == torch.uint8
    f = T.resize(x.float(), 19)
    assert torch.equal(y, f.round().clamp(0, 255).to(torch.uint8))
    assert T.resize(x, 8) is x  # no-op at the same size


def test_to_channels_601_weights_and_repeat():
    rgb = torch.tensor([255, 0, 0], dtype=torch.uint8).view(1, 3, 1, 1)
    assert T.to_channels(rgb, 1).item() == round(0.299 * 255)
    rgb = torch.tensor([10, 200, 30], dtype=torch.float32).view(1, 3, 1, 1)
    assert T.to_channels(rgb, 1).item() == pytest.approx(0.299 * 10 + 0.587 * 200 + 0.114 * 30)
    white = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    assert (T.to_channels(white, 1) == 255).all()
    gray = torch.randint(0, 256, (2, 1, 5, 5), dtype=torch.uint8)
    rgb3 = T.to_channels(gray, 3)
    assert rgb3.shape == (2, 3, 5, 5) and rgb3.dtype == torch.uint8
    assert all(torch.equal(rgb3[:, i : i + 1], gray) for i in range(3))
    assert T.to_channels(gray, 1) is gray
    with pytest.raises(ValueError):
        T.to_channels(torch.zeros(1, 4, 2, 2), 3)


def test_unit_range_round_trip_is_exact():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    f = T.to_unit_range(x)
    assert f.dtype == torch.float32
    assert f.min().item() == -1.0 and f.max().item() == 1.0
    assert torch.equal(T.from_unit_range(f), x)
    assert T.from_unit_range(torch.tensor([-3.0, 5.0])).tolist() == [0, 255]


def test_random_hflip_reproducible_per_sample():
    x = torch.randn(64, 3, 4, 5)
    a = T.random_hflip(x, torch.Generator().manual_seed(7))
    b = T.random_hflip(x, torch.Generator().manual_seed(7))
    c = T.random_hflip(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    flipped = [torch.equal(a[i], x[i].flip(-1)) for i in range(64)]
    kept = [torch.equal(a[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 10 < sum(flipped) < 54
