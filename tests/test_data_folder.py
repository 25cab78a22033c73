"""Folder and .zip sources: real image files made with Pillow, including broken ones."""

import io
import json
import warnings
import zipfile

import numpy as np
import pytest
from PIL import Image

from ganforge.data import SkippedFileWarning, dataset_info, load_dataset
from ganforge.data.sources import folder as folder_mod
from ganforge.data.sources.folder import FolderSource
from ganforge.errors import UserError


def rgb(h, w, color=(200, 30, 60)):
    return Image.fromarray(np.full((h, w, 3), color, np.uint8))


def jpeg_bytes(h=32, w=32):
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def messy(tmp_path):
    """Eight readable images of many modes, three broken files, and files that must be ignored."""
    d = tmp_path / "messy"
    d.mkdir()
    rgb(20, 40).save(d / "a_wide.png")
    (d / "b_photo.JPG").write_bytes(jpeg_bytes())
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:8] = (255, 0, 0, 255)  # top half opaque red, bottom half fully transparent (black underneath)
    Image.fromarray(rgba).save(d / "c_rgba.png")
    pal = Image.new("P", (16, 16), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (0, 0, 16, 8))
    pal.save(d / "d_palette.png", transparency=0)  # index 0 (bottom half) transparent
    Image.fromarray(np.full((16, 16), 65535, np.uint16)).save(d / "e_gray16.png")
    Image.fromarray(np.full((16, 16, 4), (0, 0, 0, 0), np.uint8), "CMYK").save(d / "f_cmyk.jpg")
    Image.new("1", (16, 16), 1).save(d / "g_bilevel.bmp")
    rgb(16, 16, (0, 0, 255)).save(d / "h_blue.webp", lossless=True)
    (d / "x_corrupt.png").write_bytes(np.random.default_rng(1).bytes(500))
    (d / "y_empty.png").write_bytes(b"")
    (d / "z_truncated.jpg").write_bytes(jpeg_bytes(64, 64)[:600])
    (d / "notes.txt").write_text("not an image")
    rgb(8, 8).save(d / "._a_wide.png")  # macOS resource-fork junk: hidden, ignored
    return d


BROKEN = ("x_corrupt.png", "y_empty.png", "z_truncated.jpg")


def test_messy_folder_loads_and_skips_broken_files(messy, tmp_path):
    with pytest.warns(SkippedFileWarning) as rec:
        data = load_dataset(str(messy), 16, 3, cache=False)
    msgs = [str(w.message) for w in rec]
    for name in BROKEN:
        assert any(name in m and m.startswith("skipping") for m in msgs), name
    assert any("empty file" in m for m in msgs)
    assert f"skipped 3 of 11 files in {messy}" in msgs[-1]
    imgs = data.images
    assert imgs.shape == (8, 16, 16, 3) and imgs.dtype == np.uint8 and data.labels is None
    assert (imgs[0] == (200, 30, 60)).all()  # a_wide, cropped + resized, constant colour stays exact
    assert (imgs[2, :7] == (255, 0, 0)).all() and (imgs[2, 9:] == 255).all()  # alpha on white
    assert (imgs[3, :7] == (0, 255, 0)).all() and (imgs[3, 9:] == 255).all()  # palette transparency
    assert (imgs[4] == 255).all()  # 16-bit 65535 -> 255, scaled not clipped
    assert (imgs[5] == 255).all()  # CMYK (0, 0, 0, 0) is white
    assert (imgs[6] == 255).all()  # bilevel
    assert (imgs[7] == (0, 0, 255)).all()  # lossless webp
    with pytest.warns(SkippedFileWarning):
        gray = load_dataset(str(messy), 16, 1, cache=False)
    assert gray.images.shape == (8, 16, 16, 1)
    assert gray.images[0, 0, 0, 0] == round(0.299 * 200 + 0.587 * 30 + 0.114 * 60)


def test_strict_names_the_first_broken_file(messy):
    with pytest.raises(UserError, match=r"cannot read image .*x_corrupt\.png: not an image"):
        load_dataset(str(messy), 16, 3, strict=True, cache=False)


def test_sixteen_bit_values_scale(tmp_path):
    Image.fromarray(np.array([[0, 257, 32768, 65535]], np.uint16)).save(tmp_path / "g.png")
    img = Image.open(tmp_path / "g.png")
    assert img.mode.startswith("I")
    assert folder_mod.image_to_array(img)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_center_crop_then_exact_size(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :, 0] = np.arange(40, dtype=np.uint8)[None, :] * 5
    Image.fromarray(arr).save(tmp_path / "wide.png")
    data = load_dataset(str(tmp_path), 20, 3, cache=False)
    assert np.array_equal(data.images[0], arr[:, 10:30])


def test_labels_from_subfolders(tmp_path):
    for cls, n in (("dogs", 2), ("cats", 3)):
        (tmp_path / cls / "deeper").mkdir(parents=True)
        for i in range(n):
            rgb(8, 8, (i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    rgb(8, 8).save(tmp_path / "cats" / "deeper" / "9.png")  # deeper files count for their first-level class
    (tmp_path / ".ipynb_checkpoints").mkdir()
    rgb(8, 8).save(tmp_path / ".ipynb_checkpoints" / "x.png")  # hidden folder: ignored
    data = load_dataset(str(tmp_path), 8, 3, cache=False)
    assert data.classes == ["cats", "dogs"]
    assert data.labels.tolist() == [0, 0, 0, 0, 1, 1] and data.labels.dtype == np.int64
    assert dataset_info(str(tmp_path))["class_counts"] == [4, 2]
    unlabeled = FolderSource(tmp_path, labels="none").load(8, 3)
    assert unlabeled.labels is None and len(unlabeled.images) == 6
    rgb(8, 8).save(tmp_path / "loose.png")  # one image outside any class folder: no labels at all
    assert load_dataset(str(tmp_path), 8, 3, cache=False).labels is None


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"no images found in .*empty \(looked for \.png, \.jpg"):
        load_dataset(str(tmp_path / "empty"), 8, 3, cache=False)
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "missing"), 8, 3, cache=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"garbage")
    with pytest.warns(SkippedFileWarning), pytest.raises(UserError, match="no readable images"):
        load_dataset(str(tmp_path / "bad"), 8, 3, cache=False)


def test_decompression_bombs_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150)
    rgb(8, 8).save(tmp_path / "a_ok.png")  # 64 px
    rgb(15, 15).save(tmp_path / "b_warn.png")  # 225 px: over the limit (Pillow warns)
    rgb(20, 20).save(tmp_path / "c_error.png")  # 400 px: over twice the limit (Pillow raises)
    with pytest.warns(SkippedFileWarning) as rec:
        data = load_dataset(str(tmp_path), 8, 3, cache=False)
    assert len(data) == 1
    bombs = [str(w.message) for w in rec if "decompression bomb" in str(w.message)]
    assert len(bombs) == 2 and "b_warn.png" in bombs[0] and "c_error.png" in bombs[1]


def test_zip_with_wrapper_folder_and_broken_member(tmp_path):
    z = tmp_path / "pets.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for cls in ("dogs", "cats"):
            for i in range(2):
                buf = io.BytesIO()
                rgb(10, 12, (i * 100, 0, 0)).save(buf, "PNG")
                zf.writestr(f"pets/{cls}/{i}.png", buf.getvalue())
        zf.writestr("pets/cats/broken.png", b"not a png")
        zf.writestr("__MACOSX/pets/._0.png", b"junk")
        zf.writestr("pets/readme.md", "hello")
    with pytest.warns(SkippedFileWarning) as rec:
        data = load_dataset(str(z), 10, 3, cache=False)
    assert str(rec[0].message).startswith(f"skipping {z}:pets/cats/broken.png: not an image")
    assert data.classes == ["cats", "dogs"] and data.labels.tolist() == [0, 0, 1, 1]
    assert data.images.shape == (4, 10, 10, 3) and data.images[1, 0, 0, 0] == 100
    with pytest.raises(UserError, match="broken.png"):
        load_dataset(str(z), 10, 3, strict=True, cache=False)
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(UserError, match="not a readable .zip"):
        load_dataset(str(tmp_path / "fake.zip"), 10, 3, cache=False)


def test_folder_cache_reuse_rewarns_and_strict_fails(messy, tmp_path, monkeypatch):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    with pytest.warns(SkippedFileWarning):
        first = load_dataset(str(messy), 16, 3)
    calls = []
    monkeypatch.setattr(folder_mod, "decode_image", lambda fp: calls.append(1))
    with pytest.warns(SkippedFileWarning, match=r"3 of 11 files .* were skipped"):
        second = load_dataset(str(messy), 16, 3)
    assert calls == [] and np.array_equal(first.images, second.images)
    with pytest.raises(UserError, match="x_corrupt.png"):
        load_dataset(str(messy), 16, 3, strict=True)


def test_dataset_info_folder(messy):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        info = dataset_info(str(messy))
    assert info["count"] == 8 and info["skipped"] == 3 and info["classes"] is None
    assert info["shape"] is None  # mixed sizes
    assert info["min_shape"] == (16, 16, 1) and info["max_shape"] == (32, 32, 3)
    assert info["channels"] == 3 and info["value_range"][1] == 255
    json.dumps(info)
