"""CIFAR-10: a small archive in the exact official layout, served by a loopback HTTP server.

The fixture writes its pickles the way the originals were written (Python 2 cPickle, protocol 2: byte
strings as BINSTRING, numpy's helpers under numpy.core), so the restricted unpickler is tested against
the real format and not against what Python 3 happens to write.
"""

import functools
import hashlib
import io
import json
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
from test_data_download import RangeHandler, server  # noqa: F401 - `server` is a fixture used below

from ganforge.data import DataWarning, dataset_info, load_dataset
from ganforge.data import download as dl
from ganforge.data.sources import cifar
from ganforge.errors import UserError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_BATCH = 20


class Py2Pickler(pickle._Pickler):
    """Pickles like Python 2's cPickle did for the CIFAR files: str and bytes become byte strings."""

    dispatch = dict(pickle._Pickler.dispatch)
    GLOBALS = {
        id(cifar._reconstruct): b"numpy.core.multiarray\n_reconstruct\n",
        id(np.ndarray): b"numpy\nndarray\n",
        id(np.dtype): b"numpy\ndtype\n",
    }

    def save_py2_str(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("ascii")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        self.write(pickle.GLOBAL + self.GLOBALS[id(obj)])
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def make_cifar(parent: Path, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """parent/cifar-10-batches-py/ with 5 train batches and a test batch of PER_BATCH images each."""
    rng = np.random.default_rng(seed)
    folder = parent / cifar.FOLDER
    folder.mkdir(parents=True)
    out = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(x) for x in rng.integers(0, 10, PER_BATCH)]
        label = f"training batch {k + 1} of 5" if k < 5 else "testing batch 1 of 1"
        batch = {
            b"batch_label": label.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img_{k}_{i}.png".encode() for i in range(PER_BATCH)],
        }
        (folder / name).write_bytes(py2_pickle(batch))
        out[name] = (data, np.asarray(labels))
    meta = {b"num_cases_per_batch": PER_BATCH, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    (folder / "readme.html").write_text("<html>CIFAR-10</html>")
    return out


def make_archive(parent: Path, dest: Path) -> bytes:
    with tarfile.open(dest, "w:gz") as tf:
        tf.add(parent / cifar.FOLDER, arcname=cifar.FOLDER)
    return dest.read_bytes()


def nhwc(data: np.ndarray) -> np.ndarray:
    """The official layout decoded pixel by pixel: row i holds R[0..1023], G[...], B[...], each 32x32 row-major."""
    out = np.zeros((len(data), 32, 32, 3), np.uint8)
    for c in range(3):
        for y in range(32):
            out[:, y, :, c] = data[:, c * 1024 + y * 32 : c * 1024 + y * 32 + 32]
    return out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("GANFORGE_CACHE", str(d))
    monkeypatch.setenv(cifar.CIFAR10_URL_ENV, "http://127.0.0.1:1/")  # nothing reaches the real host
    return d


@pytest.fixture
def served(server, tmp_path, cache_dir, monkeypatch):  # noqa: F811
    """The archive on the loopback server, its md5 the expected one; returns (batches, archive bytes)."""
    batches = make_cifar(tmp_path / "src")
    blob = make_archive(tmp_path / "src", server.root / cifar.ARCHIVE)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(blob).hexdigest())
    monkeypatch.setenv(cifar.CIFAR10_URL_ENV, server.url)
    return batches, blob


@pytest.fixture
def extracted(tmp_path, cache_dir):
    batches = make_cifar(tmp_path / "data")
    return tmp_path / "data", batches


# ------------------------------------------------------------------------------ download + extract


def test_download_extract_and_load(server, served, cache_dir):  # noqa: F811
    batches, blob = served
    data = load_dataset("cifar10", 32, 3)
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    want = np.concatenate([nhwc(d) for d, _ in train])
    assert data.spec == "cifar10:train" and data.images.shape == (5 * PER_BATCH, 32, 32, 3)
    assert np.array_equal(data.images, want)  # byte for byte at the native size
    first = train[0][0]
    assert data.images[0, 0, 1, 0] == first[0, 1] and data.images[0, 1, 0, 0] == first[0, 32]
    assert data.images[0, 0, 0, 1] == first[0, 1024] and data.images[0, 0, 0, 2] == first[0, 2048]
    assert data.labels.dtype == np.int64 and np.array_equal(data.labels, np.concatenate([lab for _, lab in train]))
    assert data.classes == CLASSES and data.label_kind == "class"
    home = cache_dir / "datasets" / "cifar10"
    assert (home / cifar.ARCHIVE).read_bytes() == blob
    assert sorted(p.name for p in (home / cifar.FOLDER).iterdir()) == sorted(
        ["batches.meta", "readme.html", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    )
    assert not list(home.glob(".tmp-*")) and not list(home.glob("*.part"))
    assert [r for r in server.requests if r[0] == f"/{cifar.ARCHIVE}"] == [(f"/{cifar.ARCHIVE}", None)]

    n = len(server.requests)
    test = load_dataset("cifar10:test", 32, 3)
    assert len(server.requests) == n  # extracted once, both splits read from it
    assert test.spec == "cifar10:test" and np.array_equal(test.images, nhwc(batches["test_batch"][0]))
    assert np.array_equal(test.labels, batches["test_batch"][1])
    again = load_dataset("cifar10", 32, 3)
    assert np.array_equal(again.images, data.images) and again.label_kind == "class"

    small = load_dataset("cifar10:test", 16, 1, cache=False)
    assert small.images.shape == (PER_BATCH, 16, 16, 1) and small.images.dtype == np.uint8


def test_interrupted_download_resumes(server, served, cache_dir, monkeypatch):  # noqa: F811
    batches, blob = served
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0)

    class HangsUpHalfway(RangeHandler):
        def do_GET(self):  # announce the whole archive, send half, close the connection
            self.server.requests.append((self.path, self.headers.get("Range")))
            self.send_response(200)
            self.send_header("Content-Length", str(len(blob)))
            self.end_headers()
            self.wfile.write(blob[: len(blob) // 2])

    server.RequestHandlerClass = functools.partial(HangsUpHalfway, directory=str(server.root))
    with pytest.raises(UserError) as e:
        load_dataset("cifar10:test", 32, 3)
    msg = str(e.value)
    assert "\n" not in msg and "run again to resume" in msg and cifar.ARCHIVE in msg
    home = cache_dir / "datasets" / "cifar10"
    part = home / f"{cifar.ARCHIVE}.part"
    assert part.stat().st_size == len(blob) // 2 and not (home / cifar.ARCHIVE).exists()
    assert not (home / cifar.FOLDER).exists()

    server.RequestHandlerClass = functools.partial(RangeHandler, directory=str(server.root))
    server.requests.clear()
    data = load_dataset("cifar10:test", 32, 3)
    assert server.requests == [(f"/{cifar.ARCHIVE}", f"bytes={len(blob) // 2}-")]
    assert (home / cifar.ARCHIVE).read_bytes() == blob and not part.exists()
    assert np.array_equal(data.images, nhwc(batches["test_batch"][0]))


def test_wrong_checksum_leaves_nothing(server, served, cache_dir, monkeypatch):  # noqa: F811
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "0" * 32)
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", 32, 3)
    msg = str(e.value)
    assert "\n" not in msg and "checksum mismatch" in msg and "0" * 32 in msg and cifar.ARCHIVE in msg
    home = cache_dir / "datasets" / "cifar10"
    assert [p.name for p in home.iterdir() if not p.name.endswith(".lock")] == []


def test_offline_message_names_file_url_and_place(cache_dir):
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", 32, 3)
    msg = str(e.value)
    home = cache_dir / "datasets" / "cifar10"
    assert msg.startswith(f"CIFAR-10 (train) not found: put {cifar.ARCHIVE} (or its extracted {cifar.FOLDER}/ folder)")
    assert f"in {home} or pass --data-dir DIR" in msg
    assert f"http://127.0.0.1:1/{cifar.ARCHIVE} failed" in msg and "\n" not in msg


def test_url_override_forms(monkeypatch):
    monkeypatch.delenv(cifar.CIFAR10_URL_ENV, raising=False)
    assert cifar.archive_url() == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    monkeypatch.setenv(cifar.CIFAR10_URL_ENV, "http://mirror/x/")
    assert cifar.archive_url() == "http://mirror/x/cifar-10-python.tar.gz"
    monkeypatch.setenv(cifar.CIFAR10_URL_ENV, "http://mirror/y.tar.gz")
    assert cifar.archive_url() == "http://mirror/y.tar.gz"


# --------------------------------------------------------------------------------------- data_dir


def test_data_dir_forms(extracted, tmp_path, monkeypatch):
    parent, batches = extracted
    want = nhwc(batches["test_batch"][0])
    for d in (parent, parent / cifar.FOLDER):  # the folder's parent, or the folder itself
        data = load_dataset("cifar10:test", 32, 3, data_dir=str(d), cache=False)
        assert np.array_equal(data.images, want) and data.classes == CLASSES
    holder = tmp_path / "holder"
    holder.mkdir()
    blob = make_archive(parent, holder / cifar.ARCHIVE)
    with pytest.warns(DataWarning, match="is not the official CIFAR-10 archive"):
        data = load_dataset("cifar10:test", 32, 3, data_dir=str(holder), cache=False)
    assert np.array_equal(data.images, want)
    monkeypatch.setattr(cifar, "CIFAR10_MD5", hashlib.md5(blob).hexdigest())
    assert load_dataset("cifar10:test", 32, 3, data_dir=str(holder), cache=False).images.shape == want.shape


def test_empty_data_dir_warns_then_says_where(tmp_path, cache_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(DataWarning, match=f"files are not in {empty}"), pytest.raises(UserError) as e:
        load_dataset("cifar10", 32, 3, data_dir=str(empty))
    assert f"in {empty} (download of" in str(e.value) and "--data-dir" not in str(e.value)


def test_unknown_split_and_option(extracted):
    parent, _ = extracted
    with pytest.raises(UserError, match="cifar10 has no split 'valid'; use cifar10:train or cifar10:test"):
        load_dataset("cifar10:valid", 32, 3, data_dir=str(parent))
    with pytest.raises(UserError, match="the attributes option applies only to celeba, not to cifar10; remove it"):
        load_dataset("cifar10", 32, 3, data_dir=str(parent), attributes=["Male"])


def test_dataset_info(extracted):
    parent, batches = extracted
    info = dataset_info("cifar10", data_dir=str(parent))
    labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    assert info["count"] == 100 and info["shape"] == (32, 32, 3) and info["classes"] == CLASSES
    assert info["class_counts"] == np.bincount(labels, minlength=10).tolist()
    assert info["label_kind"] == "class" and info["spec"] == "cifar10:train"
    assert dataset_info("cifar10:test", data_dir=str(parent))["count"] == PER_BATCH
    json.dumps(info)


# ------------------------------------------------------------------------------- hostile or broken


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("mode", ["os.system", "builtins.eval", "numpy.load"])
def test_malicious_pickle_is_refused_without_running(extracted, tmp_path, mode):
    parent, _ = extracted
    marker = tmp_path / "pwned"
    target = parent / cifar.FOLDER / "data_batch_1"
    if mode == "os.system":
        payload = pickle.dumps({b"data": RunsCode(marker)}, protocol=2)
    elif mode == "builtins.eval":
        payload = b"cbuiltins\neval\n(V__import__('pathlib').Path(%r).touch()\ntR." % str(marker).encode()
    else:  # an allowed module, a forbidden name: the allow-list is per name
        payload = b"cnumpy\nload\n(V%s\ntR." % str(marker).encode()
    target.write_bytes(payload)
    with pytest.raises(UserError) as e:
        load_dataset("cifar10", 32, 3, data_dir=str(parent), cache=False)
    msg = str(e.value)
    assert str(target) in msg and "refusing to load it" in msg and "\n" not in msg
    assert not marker.exists()


def test_python3_repickled_batches_load(extracted):
    """A copy re-saved by Python 3 (protocol 2: bytes via _codecs.encode, numpy._core names) still loads."""
    parent, batches = extracted
    path = parent / cifar.FOLDER / "test_batch"
    data, labels = batches["test_batch"]
    path.write_bytes(pickle.dumps({b"data": data, b"labels": labels.tolist()}, protocol=2))
    assert np.array_equal(load_dataset("cifar10:test", 32, 3, data_dir=str(parent), cache=False).images, nhwc(data))


@pytest.mark.parametrize(
    "batch, match",
    [
        ({b"data": np.zeros((20, 3000), np.uint8), b"labels": [0] * 20}, r"malformed: its data is uint8 \(20, 3000\)"),
        ({b"data": np.zeros((20, 3072), np.uint8), b"labels": [0] * 19}, "has 20 images but its labels"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}, "label 10 outside 0..9"),
        ([1, 2, 3], "holds a list, not a CIFAR-10 batch"),
    ],
)
def test_malformed_batch_names_the_file(extracted, batch, match):
    parent, _ = extracted
    target = parent / cifar.FOLDER / "test_batch"
    target.write_bytes(py2_pickle(batch))
    with pytest.raises(UserError, match=match) as e:
        load_dataset("cifar10:test", 32, 3, data_dir=str(parent), cache=False)
    assert str(target) in str(e.value)


def test_truncated_pickle_names_the_file(extracted):
    parent, _ = extracted
    target = parent / cifar.FOLDER / "test_batch"
    target.write_bytes(target.read_bytes()[:500])
    with pytest.raises(UserError, match="is not a readable CIFAR-10 pickle") as e:
        load_dataset("cifar10:test", 32, 3, data_dir=str(parent), cache=False)
    assert str(target) in str(e.value)


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> None:
    with tarfile.open(path, "w:gz") as tf:
        ok = tarfile.TarInfo(f"{cifar.FOLDER}/readme.html")
        ok.size = 1
        tf.addfile(ok, io.BytesIO(b"x"))
        member.size = len(data) if member.isfile() else 0
        tf.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize(
    "name, kind, why",
    [
        ("../evil", tarfile.REGTYPE, "has a '..' component"),
        ("/tmp/evil", tarfile.REGTYPE, "is an absolute path"),
        (f"{cifar.FOLDER}/link", tarfile.SYMTYPE, "is a link"),
        (f"{cifar.FOLDER}/fifo", tarfile.FIFOTYPE, "is a device, pipe or other special file"),
    ],
)
def test_unsafe_archive_is_refused_and_leaves_nothing(tmp_path, cache_dir, name, kind, why):
    holder = tmp_path / "holder"
    holder.mkdir()
    member = tarfile.TarInfo(name)
    member.type = kind
    if kind == tarfile.SYMTYPE:
        member.linkname = "/etc/passwd"
    _tar_with(holder / cifar.ARCHIVE, member)
    with pytest.warns(DataWarning), pytest.raises(UserError, match=f"is unsafe: member .* {re.escape(why)}; refusing"):
        load_dataset("cifar10", 32, 3, data_dir=str(holder))
    home = cache_dir / "datasets" / "cifar10"
    assert not (home / cifar.FOLDER).exists() and not list(home.glob(".tmp-*"))
    assert not (tmp_path / "evil").exists()


def test_truncated_archive_is_not_half_extracted(extracted, tmp_path, cache_dir, monkeypatch):
    parent, _ = extracted
    holder = tmp_path / "holder"
    holder.mkdir()
    blob = make_archive(parent, holder / cifar.ARCHIVE)
    (holder / cifar.ARCHIVE).write_bytes(blob[: len(blob) * 2 // 3])
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "")  # skip the md5 warning: the archive itself is the subject
    with pytest.raises(UserError, match="is a corrupt or truncated archive"):
        load_dataset("cifar10", 32, 3, data_dir=str(holder))
    home = cache_dir / "datasets" / "cifar10"
    assert not list(home.rglob(cifar.FOLDER)) and not list(home.rglob(".tmp-*"))
    (holder / cifar.ARCHIVE).write_bytes(blob)  # repaired: extracts on the next call
    assert len(load_dataset("cifar10", 32, 3, data_dir=str(holder))) == 100


def test_explicit_data_dir_archive_wins_over_an_earlier_extraction(extracted, tmp_path, cache_dir, monkeypatch):
    """An intact copy extracted into the cache earlier must not hide a corrupt archive the user points at;
    only a --data-dir without CIFAR-10 files falls back to the cache, and says so."""
    parent, _ = extracted
    monkeypatch.setattr(cifar, "CIFAR10_MD5", "")
    good = tmp_path / "good"
    good.mkdir()
    blob = make_archive(parent, good / cifar.ARCHIVE)
    assert len(load_dataset("cifar10", 32, 3, data_dir=str(good), cache=False)) == 100  # extracted into the cache
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / cifar.ARCHIVE).write_bytes(blob[: len(blob) // 2])
    with pytest.raises(UserError, match=f"{re.escape(str(bad / cifar.ARCHIVE))}.*corrupt or truncated"):
        load_dataset("cifar10", 32, 3, data_dir=str(bad), cache=False)
    from ganforge.cli import main

    assert main(["data", "info", "cifar10", "--data-dir", str(bad)]) == 2
