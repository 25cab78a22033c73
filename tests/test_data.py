"""ganforge.data: IDX files, spec strings, load_dataset, dataset_info and the decode cache."""

import dataclasses
import gzip
import hashlib
import json
import struct

import numpy as np
import pytest
from conftest import FMNIST_DIR, need_fashion_mnist

from ganforge.data import ImageData, dataset_info, load_dataset, parse_spec
from ganforge.data import cache as cache_mod
from ganforge.data.sources import DataWarning, idx
from ganforge.data.sources.idx import IdxSource, read_idx, write_idx
from ganforge.errors import UserError

FMNIST = FMNIST_DIR


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """IDX written by hand (not by write_idx), so the reader is checked against the format itself."""
    return bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


@pytest.fixture
def fake_mnist(tmp_path, monkeypatch):
    """A 20-image MNIST in a --data-dir (dotted raw names for images, .gz labels); no system copy."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    labels = (np.arange(20) % 10).astype(np.uint8)
    d = tmp_path / "mnist"
    d.mkdir()
    (d / "train-images.idx3-ubyte").write_bytes(idx_bytes(images))
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    monkeypatch.setitem(idx.CHECKSUMS, "mnist", {k: (v[0], None) for k, v in idx.CHECKSUMS["mnist"].items()})
    no_system = dataclasses.replace(idx.MNIST, system_dir=str(tmp_path / "none"))
    monkeypatch.setattr(idx.MnistSource, "dataset", no_system)
    return d, images, labels


# ------------------------------------------------------------------------------------------ IDX


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5], np.uint8)
    for name, arr in (("img", images), ("lbl", labels)):
        data = idx_bytes(arr)
        assert data[:4] == (b"\x00\x00\x08\x03" if arr.ndim == 3 else b"\x00\x00\x08\x01")
        p = tmp_path / (name + (".gz" if gz else ""))
        p.write_bytes(gzip.compress(data) if gz else data)
        out = read_idx(p)
        assert out.dtype == np.uint8 and np.array_equal(out, arr)


def test_write_idx_round_trips_wider_types(tmp_path):
    arr = np.arange(-6, 6, dtype=np.int32).reshape(3, 4)
    p = write_idx(tmp_path / "x.gz", arr)
    assert gzip.decompress(p.read_bytes())[:4] == b"\x00\x00\x0c\x02"
    out = read_idx(p)
    assert out.dtype == np.int32 and np.array_equal(out, arr)
    assert np.array_equal(read_idx(write_idx(tmp_path / "f", arr.astype(np.float64))), arr)


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda b: b"\x12\x34" + b[2:], "not an IDX file"),
        (lambda b: b[:2] + b"\x07" + b[3:], "not an IDX file"),
        (lambda b: b[:-10], "truncated"),
        (lambda b: b[:9], "truncated"),
        (lambda b: b + b"\0", "bytes more"),
        (lambda b: b"", "not an IDX file"),
    ],
)
def test_malformed_idx_names_the_file(tmp_path, mangle, match):
    good = idx_bytes(np.zeros((2, 4, 4), np.uint8))
    p = tmp_path / "bad-images-idx3-ubyte"
    p.write_bytes(mangle(good))
    with pytest.raises(UserError, match=match) as e:
        read_idx(p)
    assert str(p) in str(e.value)


def test_truncated_gzip_names_the_file(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))[:-30])
    with pytest.raises(UserError, match=r"x\.gz is a corrupt or truncated gzip"):
        read_idx(p)


def test_real_fashion_mnist_files_and_checksums():
    """The Debian .gz files drop the stored file name (other .gz md5s), so the content md5 is the check."""
    need_fashion_mnist()
    table = idx.CHECKSUMS["fashion-mnist"]
    for stem, n in [("train", 60000), ("t10k", 10000)]:
        images = read_idx(FMNIST / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(FMNIST / f"{stem}-labels-idx1-ubyte.gz")
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,) and set(np.unique(labels)) == set(range(10))
    for stem, (gz_md5, raw_md5) in table.items():
        path = FMNIST / f"{stem}.gz"
        raw = hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest()
        assert raw == raw_md5, stem
        head = path.read_bytes()[:10]
        if hashlib.md5(path.read_bytes()).hexdigest() != gz_md5:  # repackaged: no FNAME field
            assert head[3] & 0x08 == 0


# -------------------------------------------------------------------------------------- specs


def test_parse_spec(tmp_path):
    assert parse_spec("fashion-mnist") == ("fashion-mnist", None, "train")
    assert parse_spec("fashion-mnist:test") == ("fashion-mnist", None, "test")
    assert parse_spec("MNIST:train") == ("mnist", None, "train")
    assert parse_spec(str(tmp_path)) == ("folder", str(tmp_path), None)
    z = tmp_path / "x.zip"
    z.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip
    assert parse_spec(str(z)) == ("zip", str(z), None)
    with pytest.raises(UserError, match=r"unknown dataset 'cifar'; use one of fashion-mnist, mnist .*folder or \.zip"):
        parse_spec("cifar")
    with pytest.raises(UserError, match="does not exist"):
        parse_spec(str(tmp_path / "nope"))
    with pytest.raises(UserError, match="does not exist"):
        parse_spec("data.zip")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UserError, match="not a .zip"):
        parse_spec(str(tmp_path / "a.txt"))
    with pytest.raises(UserError, match="no split 'val'"):
        load_dataset("mnist:val", 28, 1)


def test_bad_resolution_or_channels():
    with pytest.raises(UserError, match="channels"):
        load_dataset("mnist", 28, 2)
    with pytest.raises(UserError, match="resolution"):
        load_dataset("mnist", 0, 1)


# -------------------------------------------------------------------------- IDX through the API


def test_idx_native_size_is_exact_and_resizes(fake_mnist, cache_dir):
    d, images, labels = fake_mnist
    data = load_dataset("mnist", 28, 1, data_dir=str(d), cache=False)
    assert isinstance(data, ImageData) and data.spec == "mnist:train" and len(data) == 20
    assert data.images.shape == (20, 28, 28, 1) and np.array_equal(data.images[..., 0], images)
    assert data.labels.dtype == np.int64 and np.array_equal(data.labels, labels)
    assert data.classes == [str(i) for i in range(10)]
    assert data.images.flags.writeable
    big = load_dataset("mnist", 32, 3, data_dir=str(d), cache=False)
    assert big.images.shape == (20, 32, 32, 3) and big.images.dtype == np.uint8
    assert (big.images[..., 0] == big.images[..., 2]).all()
    small = load_dataset("mnist", 14, 1, data_dir=str(d), cache=False)
    assert small.images.shape == (20, 14, 14, 1)
    assert not cache_dir.exists()


def test_idx_content_checksum_mismatch_warns_or_fails(fake_mnist, monkeypatch):
    d, _, _ = fake_mnist
    monkeypatch.setitem(idx.CHECKSUMS, "mnist", {"train-images-idx3-ubyte": (None, "0" * 32)})
    with pytest.warns(DataWarning, match="is not the official MNIST file"):
        load_dataset("mnist", 28, 1, data_dir=str(d), cache=False)
    with pytest.raises(UserError, match="train-images.idx3-ubyte is not the official MNIST file"):
        load_dataset("mnist", 28, 1, data_dir=str(d), cache=False, strict=True)


def test_idx_count_mismatch(fake_mnist):
    d, _, _ = fake_mnist
    (d / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(7, np.uint8))))
    with pytest.raises(UserError, match="has 20 images but .* has 7 labels"):
        load_dataset("mnist", 28, 1, data_dir=str(d), cache=False)


def test_dataset_info_idx(fake_mnist):
    d, images, _ = fake_mnist
    info = dataset_info("mnist", data_dir=str(d))
    assert info["count"] == 20 and info["shape"] == (28, 28, 1)
    assert info["classes"] == [str(i) for i in range(10)] and info["class_counts"] == [2] * 10
    assert info["value_range"] == (int(images.min()), int(images.max()))
    json.dumps(info)  # `ganforge data info --json` prints it


# -------------------------------------------------------------------------------------- cache


def test_cache_second_load_does_not_decode(fake_mnist, cache_dir, monkeypatch):
    d, images, labels = fake_mnist
    calls = []
    real = IdxSource.decode_into

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(IdxSource, "decode_into", counting)
    a = load_dataset("mnist", 32, 1, data_dir=str(d))
    b = load_dataset("mnist", 32, 1, data_dir=str(d))
    assert len(calls) == 1
    assert isinstance(b.images, np.memmap) and not b.images.flags.writeable
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert b.classes == a.classes and b.spec == "mnist:train"
    nocache = load_dataset("mnist", 32, 1, data_dir=str(d), cache=False)
    assert np.array_equal(nocache.images, b.images)
    calls.clear()
    (folder,) = [p for p in (cache_dir / "datasets").iterdir() if p.is_dir()]
    assert folder.name.startswith("mnist-train-32px-1c-")
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["count"] == 20 and meta["shape"] == [20, 32, 32, 1] and meta["classes"][3] == "3"
    # another resolution or changed files: a new cache
    load_dataset("mnist", 28, 1, data_dir=str(d))
    assert len(calls) == 1
    (d / "train-images.idx3-ubyte").write_bytes(idx_bytes(images[::-1].copy()))
    c = load_dataset("mnist", 28, 1, data_dir=str(d))
    assert len(calls) == 2 and np.array_equal(c.images[..., 0], images[::-1])


def test_killed_decode_leaves_no_cache(fake_mnist, cache_dir, monkeypatch):
    d, images, _ = fake_mnist
    real = IdxSource.decode_into

    def dies(self, sink, *a, **k):
        sink.append(np.zeros((3, 28, 28, 1), np.uint8))
        raise KeyboardInterrupt

    monkeypatch.setattr(IdxSource, "decode_into", dies)
    with pytest.raises(KeyboardInterrupt):
        load_dataset("mnist", 28, 1, data_dir=str(d))
    assert [p for p in (cache_dir / "datasets").iterdir() if p.is_dir()] == []
    monkeypatch.setattr(IdxSource, "decode_into", real)
    assert np.array_equal(load_dataset("mnist", 28, 1, data_dir=str(d)).images[..., 0], images)


def test_damaged_cache_is_rebuilt(fake_mnist, cache_dir):
    d, images, _ = fake_mnist
    load_dataset("mnist", 28, 1, data_dir=str(d))
    (folder,) = [p for p in (cache_dir / "datasets").iterdir() if p.is_dir()]
    (folder / "images.npy").write_bytes(b"\x93NUMPY garbage")
    assert np.array_equal(load_dataset("mnist", 28, 1, data_dir=str(d)).images[..., 0], images)


def test_npy_writer_header_is_patched(tmp_path):
    w = cache_mod.NpyWriter(tmp_path / "a.npy", (2, 3, 1))
    for n in (4, 0, 7):
        w.append(np.full((n, 2, 3, 1), n, np.uint8))
    assert w.close() == 11
    a = np.load(tmp_path / "a.npy")
    assert a.shape == (11, 2, 3, 1) and a[0, 0, 0, 0] == 4 and a[-1, 0, 0, 0] == 7


def test_real_fashion_mnist_cached_load_is_fast(cache_dir, monkeypatch):
    """The second load reads the cache, memory-mapped: no IDX file is decoded again (what makes it fast, asserted
    without a wall clock that a loaded machine would break)."""
    need_fashion_mnist()
    first = load_dataset("fashion-mnist", 28, 1)

    def no_decoding(*a, **k):
        raise AssertionError("the cached load decoded an IDX file again")

    with monkeypatch.context() as m:
        m.setattr(idx, "read_idx_bytes", no_decoding)
        second = load_dataset("fashion-mnist", 28, 1)
    assert isinstance(second.images, np.memmap)
    assert second.images.shape == (60000, 28, 28, 1) and np.array_equal(first.labels, second.labels)
    raw = read_idx(FMNIST / "train-images-idx3-ubyte.gz")
    assert np.array_equal(second.images[..., 0], raw)  # 28 px, 1 channel: the exact bytes
    info = dataset_info("fashion-mnist:test")
    assert info["count"] == 10000 and info["class_counts"] == [1000] * 10 and info["value_range"] == (0, 255)
