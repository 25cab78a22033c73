"""CelebA: a 12-image fixture in the official formats (folder, official zip, Google Drive layout)."""

import io
import json
import re
import shutil
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge.data import SkippedFileWarning, dataset_info, load_dataset
from ganforge.data.sources import celeba
from ganforge.data.sources.base import prepare
from ganforge.errors import UserError

ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
N = 12
CODES = [0] * 8 + [1] * 2 + [2] * 2  # 8 train, 2 valid, 2 test
NAMES = [f"{i:06d}.jpg" for i in range(1, N + 1)]
SUBSET = ["Male", "Smiling", "Eyeglasses", "Blond_Hair", "Young"]


def face(i: int) -> np.ndarray:
    """178 x 218 (w x h): red grows with x, green with y, blue tells the images apart."""
    yy, xx = np.mgrid[0:218, 0:178]
    return np.stack([xx * 255 // 177, yy * 255 // 217, np.full_like(xx, 20 * i)], axis=-1).astype(np.uint8)


def jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(face(i)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def attr_text(values: np.ndarray) -> str:
    """The official layout: count, names (trailing space), then values right-aligned in 2 columns."""
    rows = [name + "".join(f" {v:2d}" for v in row) for name, row in zip(NAMES, values, strict=True)]
    return f"{N}\n" + " ".join(ATTRS) + " \n" + "\n".join(rows) + "\n"


@pytest.fixture
def values():
    v = np.where(np.random.default_rng(0).random((N, 40)) < 0.3, 1, -1).astype(np.int8)
    v[:, ATTRS.index("Male")] = [1, -1] * (N // 2)  # a known column
    return v


def write_celeba(root: Path, values: np.ndarray, images: str = "folder", drive_layout: bool = False) -> Path:
    img_dir, anno, ev = (root / "Img", root / "Anno", root / "Eval") if drive_layout else (root, root, root)
    for d in (img_dir, anno, ev):
        d.mkdir(parents=True, exist_ok=True)
    if images == "folder":
        (img_dir / "img_align_celeba").mkdir()
        for i, name in enumerate(NAMES):
            (img_dir / "img_align_celeba" / name).write_bytes(jpeg(i))
    else:
        with zipfile.ZipFile(img_dir / "img_align_celeba.zip", "w") as zf:
            zf.writestr("img_align_celeba/", b"")
            for i, name in enumerate(NAMES):
                zf.writestr(f"img_align_celeba/{name}", jpeg(i))
    (anno / "list_attr_celeba.txt").write_text(attr_text(values))
    (ev / "list_eval_partition.txt").write_text("".join(f"{n} {c}\n" for n, c in zip(NAMES, CODES, strict=True)))
    return root


@pytest.fixture
def folder(tmp_path, values, cache_dir):
    return write_celeba(tmp_path / "celeba", values)


def decoded(i: int) -> np.ndarray:
    """What any JPEG decoder path in ganforge sees for image i (Pillow)."""
    return np.asarray(Image.open(io.BytesIO(jpeg(i))).convert("RGB"))


def expected(indices: list[int], box: tuple[int, int, int], resolution: int) -> np.ndarray:
    top, left, size = box
    crops = np.stack([decoded(i)[top : top + size, left : left + size] for i in indices])
    return prepare(torch.from_numpy(crops).permute(0, 3, 1, 2), resolution, 3)


# ------------------------------------------------------------------------------------------ loading


def test_train_split_images_and_attributes(folder, values, cache_dir):
    data = load_dataset("celeba", 64, 3, data_dir=str(folder))
    assert data.spec == "celeba:train" and data.images.shape == (8, 64, 64, 3)
    assert np.array_equal(data.images, expected(list(range(8)), (20, 0, 178), 64))
    assert data.labels.dtype == np.float32 and data.labels.shape == (8, 40)
    assert np.array_equal(data.labels, (values[:8] > 0).astype(np.float32))
    assert data.classes == ATTRS and data.label_kind == "attributes"
    assert data.labels[:, ATTRS.index("Male")].tolist() == [1, 0] * 4
    (cached,) = [p for p in (cache_dir / "datasets").iterdir() if p.name.startswith("celeba-train-crop178-64px-3c-")]
    meta = json.loads((cached / "meta.json").read_text())
    assert meta["label_kind"] == "attributes" and meta["count"] == 8
    again = load_dataset("celeba", 64, 3, data_dir=str(folder))
    assert isinstance(again.images, np.memmap) and np.array_equal(again.labels, data.labels)
    assert again.label_kind == "attributes" and again.classes == ATTRS


@pytest.mark.parametrize(
    "crop, box",
    [(None, (20, 0, 178)), ("178", (20, 0, 178)), ("140", (39, 19, 140)), (140, (39, 19, 140)), ("108", (55, 35, 108))],
)
def test_crop_boxes_at_native_size(folder, crop, box):
    top, left, size = box
    data = load_dataset("celeba:test", size, 3, data_dir=str(folder), crop=crop, cache=False)
    want = np.stack([decoded(i)[top : top + size, left : left + size] for i in (10, 11)])
    assert np.array_equal(data.images, want)
    # and the box is where it should be, not transposed: red counts columns, green rows
    r, g = int(data.images[0, 0, 0, 0]), int(data.images[0, 0, 0, 1])
    assert abs(r - left * 255 // 177) <= 4 and abs(g - top * 255 // 217) <= 4


def pil_bicubic(crops: np.ndarray, resolution: int) -> np.ndarray:
    """The independent reference for the resize: Pillow's bicubic (antialiased when it shrinks)."""
    return np.stack([np.asarray(Image.fromarray(c).resize((resolution, resolution), Image.BICUBIC)) for c in crops])


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_resize_filter_matches_pil_bicubic(resolution):
    """`prepare` (which `expected` above reuses) against Pillow, on an image with edges: a gradient, a sine and a
    checkerboard of sharp 9-px squares, within 1 grey level (the rounding of Pillow's 8-bit passes)."""
    yy, xx = np.mgrid[0:178, 0:178]
    img = np.stack([xx * 255 // 177, np.sin(yy / 5) * 100 + 120, (xx // 9 + yy // 9) % 2 * 200 + 20], -1).astype(np.uint8)
    got = prepare(torch.from_numpy(img[None]).permute(0, 3, 1, 2), resolution, 3)
    want = pil_bicubic(img[None], resolution)
    assert want.std() > 30 and np.abs(got.astype(int) - want).max() <= 1


def test_celeba_crop_and_resize_match_pil(folder):
    data = load_dataset("celeba:valid", 64, 3, data_dir=str(folder), crop="140", cache=False)
    want = pil_bicubic(np.stack([decoded(i)[39 : 39 + 140, 19 : 19 + 140] for i in (8, 9)]), 64)
    assert np.abs(data.images.astype(int) - want).max() <= 1


@pytest.mark.parametrize("resolution", [64, 128])
@pytest.mark.parametrize("crop", ["178", "140"])
def test_crop_then_resize(folder, resolution, crop):
    data = load_dataset("celeba:valid", resolution, 3, data_dir=str(folder), crop=crop, cache=False)
    assert data.images.shape == (2, resolution, resolution, 3)
    assert np.array_equal(data.images, expected([8, 9], celeba.CROPS[crop], resolution))
    gray = load_dataset("celeba:valid", resolution, 1, data_dir=str(folder), crop=crop, cache=False)
    assert gray.images.shape == (2, resolution, resolution, 1)


def test_splits(folder, values):
    for spec, idx in [
        ("celeba:valid", [8, 9]),
        ("celeba:val", [8, 9]),
        ("celeba:test", [10, 11]),
        ("celeba:all", list(range(12))),
    ]:
        data = load_dataset(spec, 32, 3, data_dir=str(folder), cache=False)
        assert len(data) == len(idx) and np.array_equal(data.labels, (values[idx] > 0).astype(np.float32)), spec
        assert data.images[0, 16, 16, 2] == pytest.approx(20 * idx[0], abs=4)
    assert load_dataset("celeba:VAL", 32, 3, data_dir=str(folder), cache=False).spec == "celeba:valid"
    with pytest.raises(
        UserError, match="celeba has no split 'dev'; use celeba:train, celeba:valid, celeba:test or celeba:all"
    ):
        load_dataset("celeba:dev", 32, 3, data_dir=str(folder))


@pytest.mark.parametrize("drive_layout", [False, True])
def test_official_zip_and_drive_layout_match_the_folder(tmp_path, values, folder, cache_dir, drive_layout):
    root = write_celeba(tmp_path / "zipped", values, images="zip", drive_layout=drive_layout)
    if drive_layout:
        assert (root / "Img" / "img_align_celeba.zip").is_file()
        assert (root / "Eval" / "list_eval_partition.txt").is_file()
    a = load_dataset("celeba", 32, 3, data_dir=str(folder), cache=False)
    b = load_dataset("celeba", 32, 3, data_dir=str(root))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)


def test_attribute_subset_and_order_reuse_the_cache(folder, values, monkeypatch):
    full = load_dataset("celeba", 32, 3, data_dir=str(folder))
    calls = []
    real = celeba.CelebaSource.decode_into
    monkeypatch.setattr(celeba.CelebaSource, "decode_into", lambda *a, **k: calls.append(1) or real(*a, **k))
    sub = load_dataset("celeba", 32, 3, data_dir=str(folder), attributes=SUBSET)
    assert calls == []  # same images: picked from the cached labels, nothing decoded again
    assert sub.classes == SUBSET and sub.labels.shape == (8, 5) and sub.label_kind == "attributes"
    cols = [ATTRS.index(a) for a in SUBSET]
    assert np.array_equal(sub.labels, (values[:8][:, cols] > 0).astype(np.float32))
    assert np.array_equal(sub.images, full.images)
    fresh = load_dataset("celeba", 32, 3, data_dir=str(folder), attributes=["Young", "Male"], cache=False)
    assert fresh.classes == ["Young", "Male"] and np.array_equal(fresh.labels, full.labels[:, [39, 20]])
    csv = load_dataset("celeba", 32, 3, data_dir=str(folder), attributes="Smiling, Male")  # a config string
    assert csv.classes == ["Smiling", "Male"]


def test_attribute_errors(folder):
    with pytest.raises(UserError) as e:
        load_dataset("celeba", 32, 3, data_dir=str(folder), attributes=["Male", "Beard", "smiling"])
    msg = str(e.value)
    assert msg.startswith("unknown CelebA attributes Beard, smiling; choose from 5_o_Clock_Shadow, Arched_Eyebrows")
    assert msg.endswith("Wearing_Necktie, Young") and "\n" not in msg
    with pytest.raises(UserError, match="listed twice"):
        load_dataset("celeba", 32, 3, data_dir=str(folder), attributes=["Male", "Male"])
    with pytest.raises(UserError, match="attributes is empty"):
        load_dataset("celeba", 32, 3, data_dir=str(folder), attributes=[])
    with pytest.raises(UserError, match="unknown CelebA crop 'face'; use one of 178, 140, 108"):
        load_dataset("celeba", 32, 3, data_dir=str(folder), crop="face")
    with pytest.raises(UserError, match="the crop option applies only to celeba, not to mnist; remove it"):
        load_dataset("mnist", 28, 1, crop="140")


# ----------------------------------------------------------------------------------- missing / broken


def test_missing_files_are_listed_exactly(tmp_path, values, cache_dir):
    d = write_celeba(tmp_path / "partial", values)
    shutil.rmtree(d / "img_align_celeba")
    (d / "list_eval_partition.txt").unlink()
    with pytest.raises(UserError) as e:
        load_dataset("celeba", 64, 3, data_dir=str(d))
    msg = str(e.value)
    assert msg.startswith(
        f"CelebA files missing in {d}: img_align_celeba/ (or img_align_celeba.zip), list_eval_partition.txt; "
        "download them from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
    )
    assert msg.endswith(f"and put them in {d}") and "\n" not in msg
    with pytest.raises(UserError) as e:  # no --data-dir: the cache folder, and the option to pass one
        load_dataset("celeba", 64, 3)
    home = cache_dir / "datasets" / "celeba"
    assert f"missing in {home}: img_align_celeba/ (or img_align_celeba.zip), list_attr_celeba.txt, " in str(e.value)
    assert str(e.value).endswith(f"put them in {home} or pass --data-dir DIR")


def test_cache_folder_is_used_without_data_dir(values, cache_dir):
    write_celeba(cache_dir / "datasets" / "celeba", values, images="zip")
    assert len(load_dataset("celeba:test", 32, 3, cache=False)) == 2


def test_corrupt_and_missing_images_are_skipped(folder, values):
    (folder / "img_align_celeba" / "000003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (folder / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.warns(SkippedFileWarning) as rec:
        data = load_dataset("celeba", 32, 3, data_dir=str(folder), cache=False)
    msgs = [str(w.message) for w in rec]
    assert any(m.startswith("skipping ") and "000003.jpg" in m for m in msgs)
    assert any("1 of 8 images listed in" in m and "(first: 000005.jpg)" in m for m in msgs)
    kept = [0, 1, 3, 5, 6, 7]
    assert len(data) == 6 and np.array_equal(data.labels, (values[kept] > 0).astype(np.float32))
    assert np.array_equal(data.images, expected(kept, (20, 0, 178), 32))
    with pytest.raises(UserError, match=r"000005\.jpg .* is not in"):
        load_dataset("celeba", 32, 3, data_dir=str(folder), strict=True, cache=False)


def test_malformed_annotation_files(folder, values):
    attr = folder / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    attr.write_text("\n".join(lines[:4] + [lines[4] + " 1"] + lines[5:]) + "\n")
    with pytest.raises(UserError, match=re.escape(f"{attr} line 5 is malformed")):
        load_dataset("celeba", 32, 3, data_dir=str(folder), cache=False)
    attr.write_text("\n".join(lines[:-1]) + "\n")  # one row short of the count on line 1
    with pytest.raises(UserError, match="says 12 images on line 1 but has 11 rows"):
        load_dataset("celeba", 32, 3, data_dir=str(folder), cache=False)
    attr.write_text("\n".join(lines) + "\n")
    (folder / "list_eval_partition.txt").write_text("000001.jpg 3\n")
    with pytest.raises(UserError, match="list_eval_partition.txt line 1 is malformed"):
        load_dataset("celeba", 32, 3, data_dir=str(folder), cache=False)


def test_dataset_info(folder, values):
    info = dataset_info("celeba", data_dir=str(folder))
    assert info["split_counts"] == {"train": 8, "valid": 2, "test": 2} and info["count"] == 8
    assert info["shape"] == (218, 178, 3) and info["classes"] == ATTRS and info["label_kind"] == "attributes"
    rates = (values[:8] > 0).mean(axis=0)
    assert list(info["attribute_positive_rates"]) == ATTRS
    assert np.allclose(list(info["attribute_positive_rates"].values()), rates, atol=1e-4)
    assert info["attribute_positive_rates"]["Male"] == 0.5 and info["skipped"] == 0
    sub = dataset_info("celeba:test", data_dir=str(folder), attributes=SUBSET, crop="140")
    assert sub["count"] == 2 and list(sub["attribute_positive_rates"]) == SUBSET and "140x140" in sub["crop"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        json.dumps(info)
