"""StyleGAN2-ADA/StyleGAN3 datasets: read as a source, written by `ganforge data pack`, round trip bit for bit."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FMNIST_DIR, have_fashion_mnist, png_folder
from PIL import Image

from ganforge.cli import main
from ganforge.data import load_dataset
from ganforge.data.pack import archive_name, pack
from ganforge.data.sources import parse_spec
from ganforge.errors import UserError


def nvlabs_read(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """What NVlabs' training/dataset.py ImageFolderDataset gives for a zip (their logic, in a few lines): images
    in sorted name order decoded by np.array(PIL.Image.open), labels looked up by name, int64 or float32."""
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if os.path.splitext(n)[1].lower() in Image.EXTENSION)
        images = []
        for n in names:
            with zf.open(n) as f:
                a = np.array(Image.open(f))
            images.append(a[:, :, None] if a.ndim == 2 else a)
        labels = json.loads(zf.read("dataset.json"))["labels"]
    if labels is None:
        return np.stack(images), None
    table = dict(labels)
    lab = np.array([table[n.replace("\\", "/")] for n in names])
    return np.stack(images), lab.astype({1: np.int64, 2: np.float32}[lab.ndim])


@pytest.fixture
def classes_folder(tmp_path):
    png_folder(tmp_path / "src" / "cats", 5, res=40)
    png_folder(tmp_path / "src" / "dogs", 4, res=40)
    return tmp_path / "src"


def test_pack_round_trip_is_bitwise(classes_folder, tmp_path):
    out = pack(str(classes_folder), tmp_path / "data.zip", resolution=32)
    assert out == {"path": str(tmp_path / "data.zip"), "images": 9, "resolution": 32, "channels": 1,
                   "labels": "class", "classes": ["cats", "dogs"]}
    assert parse_spec(str(tmp_path / "data.zip"))[0] == "stylegan-zip"
    back = load_dataset(str(tmp_path / "data.zip"), 32, 1, cache=False)
    direct = load_dataset(str(classes_folder), 32, 1, cache=False)  # what ganforge reads from the source at 32 px
    assert back.images.dtype == np.uint8 and np.array_equal(back.images, direct.images)
    assert np.array_equal(back.labels, direct.labels) and back.classes == ["cats", "dogs"]
    # NVlabs' reader sees the same uint8 images and labels
    imgs, lab = nvlabs_read(tmp_path / "data.zip")
    assert np.array_equal(imgs, back.images) and np.array_equal(lab, back.labels) and lab.dtype == np.int64
    with zipfile.ZipFile(tmp_path / "data.zip") as zf:
        assert zf.namelist()[:2] == ["00000/img00000000.png", "00000/img00000001.png"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
    assert archive_name(1234) == "00001/img00001234.png"


def test_round_trip_of_attributes_and_colour(tmp_path):
    root = tmp_path / "sg"
    root.mkdir()
    rng = np.random.default_rng(0)
    names, attrs = [], rng.integers(0, 2, (6, 3)).astype(float)
    attrs[0] = [1, 0, 0]  # one row that looks one-hot: still attributes, since the other rows are not
    for i in range(6):
        name = f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / name)
        names.append(name)
    meta = {"labels": [[n, a.tolist()] for n, a in zip(names, attrs, strict=True)]}
    (root / "dataset.json").write_text(json.dumps(meta))
    got = load_dataset(str(root), 16, 3, cache=False)
    assert got.label_kind == "attributes" and got.labels.dtype == np.float32
    assert np.array_equal(got.labels, attrs.astype(np.float32)) and got.classes == ["attr0", "attr1", "attr2"]
    pack(str(root), tmp_path / "a.zip")  # native 16 px, 3 channels
    back = load_dataset(str(tmp_path / "a.zip"), 16, 3, cache=False)
    assert np.array_equal(back.images, got.images) and np.array_equal(back.labels, got.labels)
    imgs, lab = nvlabs_read(tmp_path / "a.zip")
    assert np.array_equal(imgs, got.images) and np.array_equal(lab, got.labels)


def test_nvlabs_label_forms(tmp_path):
    """Class indices, one-hot rows (StyleGAN's own class encoding) and null labels, with sub-folders."""
    root = png_folder(tmp_path / "sg" / "00000", 4).parent
    names = [f"00000/{i:03d}.png" for i in range(4)]
    for labels, want in [([2, 0, 1, 2], [2, 0, 1, 2]), ([[0, 1], [1, 0], [1, 0], [0, 1]], [1, 0, 0, 1])]:
        (root / "dataset.json").write_text(json.dumps({"labels": [[n, v] for n, v in zip(names, labels, strict=True)]}))
        got = load_dataset(str(root), 32, 1, cache=False)
        assert got.label_kind == "class" and got.labels.tolist() == want
    (root / "dataset.json").write_text(json.dumps({"labels": None}))
    got = load_dataset(str(root), 32, 1, cache=False)
    assert got.labels is None and len(got.images) == 4


@pytest.mark.parametrize(("labels", "why"), [
    ("missing", r"has no label for 1 \(first: 00000/003.png\) of the 4 images"),
    ("extra", r"labels 1 \(first: 00000/999.png\) files that are not images"),
    ("continuous", "continuous values"),
    ("broken", "is not valid JSON"),
    ("shape", "must be a list of \\[file name, label\\] pairs"),
])
def test_labels_that_do_not_match_the_files(tmp_path, labels, why, capsys):
    root = png_folder(tmp_path / "sg" / "00000", 4).parent
    names = [f"00000/{i:03d}.png" for i in range(4)]
    entries = [[n, i % 2] for i, n in enumerate(names)]
    text = {"missing": json.dumps({"labels": entries[:3]}),
            "extra": json.dumps({"labels": entries + [["00000/999.png", 1]]}),
            "continuous": json.dumps({"labels": [[n, [0.25, 0.5]] for n in names]}),
            "broken": "{labels: oops", "shape": json.dumps({"labels": [names]})}[labels]
    (root / "dataset.json").write_text(text)
    with pytest.raises(UserError, match=why):
        load_dataset(str(root), 32, 1, cache=False)
    assert main(["data", "pack", str(root), "--out", str(tmp_path / "o.zip")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and not (tmp_path / "o.zip").exists()


def test_pack_options_and_bad_input(classes_folder, tmp_path):
    flat = png_folder(tmp_path / "flat", 3, res=20)
    with pytest.raises(UserError, match="no class sub-folders"):
        pack(str(flat), tmp_path / "x.zip", labels="from-folders")
    assert pack(str(classes_folder), tmp_path / "n.zip", labels="none")["labels"] is None
    with zipfile.ZipFile(tmp_path / "n.zip") as zf:
        assert json.loads(zf.read("dataset.json"))["labels"] is None
    with pytest.raises(UserError, match="write a .zip"):
        pack(str(flat), tmp_path / "x.tar")
    with pytest.raises(UserError, match="already exists"):
        pack(str(flat), tmp_path / "n.zip")
    Image.fromarray(np.zeros((10, 30), np.uint8)).save(flat / "wide.png")
    with pytest.raises(UserError, match="wide.png is 30x10 but the first image is 20x20; pass --resolution"):
        pack(str(flat), tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
    # center-wide: a 4:3 crop, R wide, on a black square (dataset_tool's LSUN-cars recipe)
    wide = tmp_path / "wide"
    wide.mkdir()
    Image.fromarray(np.full((30, 80, 3), 200, np.uint8)).save(wide / "a.png")
    out = pack(str(wide), tmp_path / "w.zip", resolution=16, crop="center-wide")
    assert (out["resolution"], out["channels"]) == (16, 3)
    img = nvlabs_read(tmp_path / "w.zip")[0][0]
    assert (img[:2] == 0).all() and (img[-2:] == 0).all() and (img[2:14] == 200).all()  # 12 rows of image


def test_cli_pack(classes_folder, tmp_path, capsys):
    assert main(["data", "pack", str(classes_folder), "--out", str(tmp_path / "d.zip"), "--resolution", "32",
                 "--labels", "from-folders"]) == 0
    assert "9 images, 32x32x1, class labels (2 names)" in capsys.readouterr().out
    assert main(["data", "pack", str(classes_folder), "--out", str(tmp_path / "d.zip")]) == 2


@pytest.mark.skipif(not have_fashion_mnist(), reason="Fashion-MNIST not installed")
def test_pack_a_named_dataset(tmp_path):
    out = pack("fashion-mnist:test", tmp_path / "f.zip", resolution=32, data_dir=str(FMNIST_DIR))
    assert out["images"] == 10000 and out["labels"] == "class" and out["classes"][0] == "T-shirt/top"
    ref = load_dataset("fashion-mnist:test", 32, 1, data_dir=str(FMNIST_DIR), cache=False)
    back = load_dataset(str(tmp_path / "f.zip"), 32, 1, cache=False)
    assert np.array_equal(back.images, ref.images) and np.array_equal(back.labels, ref.labels)
    assert back.classes == ref.classes
