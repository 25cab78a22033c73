"""ganforge.data.download and the IDX datasets' download path, against a loopback HTTP server."""

import dataclasses
import functools
import hashlib
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ganforge.data import download as dl
from ganforge.data import load_dataset
from ganforge.data.download import download, file_hash, verify_file
from ganforge.data.sources import DataWarning, idx
from ganforge.errors import UserError


class RangeHandler(SimpleHTTPRequestHandler):
    """Serves files from `directory` with single-range support (the stdlib handler ignores Range)."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        path = Path(self.directory) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng or "")
        if m and srv.honor_range:
            start = int(m[1])
            end = min(int(m[2]) if m[2] else len(data) - 1, len(data) - 1)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    srv.daemon_threads = True
    srv.requests, srv.honor_range = [], True
    srv.root, srv.url = root, f"http://127.0.0.1:{srv.server_address[1]}/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def payload(server):
    data = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    (server.root / "blob.bin").write_bytes(data)
    return data, hashlib.md5(data).hexdigest()


def test_full_download_verifies_md5(server, payload, tmp_path):
    data, md5 = payload
    dest = tmp_path / "out" / "blob.bin"
    assert download(server.url + "blob.bin", dest, md5=md5) == dest
    assert dest.read_bytes() == data
    assert not dest.with_name("blob.bin.part").exists()
    assert verify_file(dest, md5=md5, sha256=hashlib.sha256(data).hexdigest())
    assert file_hash(dest, "md5") == md5
    n = len(server.requests)
    download(server.url + "blob.bin", dest, md5=md5)  # already there: no request
    assert len(server.requests) == n


def test_resumes_a_partial_file_with_range(server, payload, tmp_path):
    data, md5 = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data[:123_456])
    download(server.url + "blob.bin", dest, md5=md5)
    assert server.requests == [("/blob.bin", "bytes=123456-")]
    assert dest.read_bytes() == data


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    data, md5 = payload
    server.honor_range = False
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"junk" * 1000)
    download(server.url + "blob.bin", dest, md5=md5)
    assert dest.read_bytes() == data


def test_complete_part_answered_416_is_kept(server, payload, tmp_path):
    data, md5 = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(data)
    download(server.url + "blob.bin", dest, md5=md5)
    assert server.requests == [("/blob.bin", f"bytes={len(data)}-")]
    assert dest.read_bytes() == data


def test_wrong_checksum_leaves_nothing(server, payload, tmp_path):
    data, md5 = payload
    dest = tmp_path / "blob.bin"
    with pytest.raises(UserError) as e:
        download(server.url + "blob.bin", dest, md5="0" * 32)
    msg = str(e.value)
    assert "blob.bin" in msg and "0" * 32 in msg and md5 in msg and "\n" not in msg
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def test_unreachable_and_missing_urls_raise_user_error(server, tmp_path):
    dest = tmp_path / "x"
    with pytest.raises(UserError, match=r"could not download http://127\.0\.0\.1:1/x .*put the file at"):
        download("http://127.0.0.1:1/x", dest, timeout=5)
    with pytest.raises(UserError, match="HTTP 404"):
        download(server.url + "missing.gz", dest)
    assert not dest.exists()


def test_retries_and_keeps_part_when_the_server_drops_out(server, payload, tmp_path, monkeypatch):
    data, md5 = payload
    monkeypatch.setattr(dl, "RETRY_WAIT_S", 0)
    server.honor_range = False
    (server.root / "blob.bin").write_bytes(data[:1000])  # shorter than announced below

    class Short(RangeHandler):
        def send_header(self, key, value):
            super().send_header(key, str(len(data)) if key == "Content-Length" else value)

    server.RequestHandlerClass = functools.partial(Short, directory=str(server.root))
    dest = tmp_path / "blob.bin"
    with pytest.raises(UserError, match="run again to resume"):
        download(server.url + "blob.bin", dest, md5=md5, timeout=5)
    assert len(server.requests) == dl.ATTEMPTS
    assert dest.with_name("blob.bin.part").stat().st_size == 1000 and not dest.exists()


# ------------------------------------------------------------------- Fashion-MNIST through a mirror


@pytest.fixture
def fake_fashion(server, tmp_path, monkeypatch):
    """Tiny Fashion-MNIST served by the loopback mirror; no system copy; an empty cache."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    table = {}
    for stem, arr in (("train-images-idx3-ubyte", images), ("train-labels-idx1-ubyte", labels)):
        path = idx.write_idx(server.root / f"{stem}.gz", arr)
        table[stem] = (hashlib.md5(path.read_bytes()).hexdigest(), None)
    monkeypatch.setitem(idx.CHECKSUMS, "fashion-mnist", table)
    no_system = dataclasses.replace(idx.FASHION_MNIST, system_dir=str(tmp_path / "no-system-copy"))
    monkeypatch.setattr(idx.FashionMnistSource, "dataset", no_system)
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GANFORGE_FASHION_MNIST_MIRROR", server.url)
    return images, labels


def test_fashion_mnist_downloads_from_mirror_into_cache(server, fake_fashion, tmp_path):
    images, labels = fake_fashion
    data = load_dataset("fashion-mnist", 28, 1)
    assert np.array_equal(data.images[..., 0], images)
    assert np.array_equal(data.labels, labels)
    assert data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    got = sorted(p.name for p in (tmp_path / "cache" / "datasets" / "fashion-mnist").glob("*.gz"))
    assert got == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    n = len(server.requests)
    load_dataset("fashion-mnist", 28, 1)
    assert len(server.requests) == n


def test_fashion_mnist_offline_message(fake_fashion, monkeypatch, tmp_path):
    monkeypatch.setenv("GANFORGE_FASHION_MNIST_MIRROR", "http://127.0.0.1:1/")
    with pytest.raises(UserError) as e:
        load_dataset("fashion-mnist", 28, 1)
    msg = str(e.value)
    assert msg.startswith("Fashion-MNIST (train) not found: put train-images-idx3-ubyte.gz and ")
    assert str(tmp_path / "cache" / "datasets" / "fashion-mnist") in msg and "--data-dir" in msg
    assert "http://127.0.0.1:1/train-images-idx3-ubyte.gz failed" in msg and "\n" not in msg


def test_corrupt_partial_file_gets_one_clean_retry(server, payload, tmp_path):
    data, md5 = payload
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"x" * 5000)  # resumable, but not the file's start
    download(server.url + "blob.bin", dest, md5=md5)
    assert server.requests == [("/blob.bin", "bytes=5000-"), ("/blob.bin", None)]
    assert dest.read_bytes() == data


def test_offline_with_a_wrong_data_dir_points_there(fake_fashion, monkeypatch, tmp_path):
    monkeypatch.setenv("GANFORGE_FASHION_MNIST_MIRROR", "http://127.0.0.1:1/")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(DataWarning, match=f"files are not in {empty}"), pytest.raises(UserError) as e:
        load_dataset("fashion-mnist:test", 28, 1, data_dir=str(empty))
    msg = str(e.value)
    assert msg.startswith(
        f"Fashion-MNIST (test) not found: put t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in {empty} "
    )
    assert "--data-dir" not in msg
