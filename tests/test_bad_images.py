"""Folder sources against what real folders contain, beyond tests/test_data_folder.py: truncated PNGs,
text saved as images, deep or alpha colour modes, unreadable files and folders, FIFOs, dangling and
looping symlinks. Each bad file is skipped with a warning that names it, or with strict=True it is a
one-line UserError; nothing hangs."""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import time_limit
from PIL import Image

from ganforge.data import SkippedFileWarning, load_dataset
from ganforge.data.sources import folder as folder_mod
from ganforge.errors import UserError


def png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    return buf.getvalue()


def good(d: Path, n: int = 2) -> None:
    for i in range(n):
        (d / f"good{i}.png").write_bytes(png(np.full((8, 8, 3), 40 * (i + 1), np.uint8)))


def load(d: Path, strict: bool = False):  # noqa: ANN201
    with time_limit(30):
        return load_dataset(str(d), 8, 3, strict=strict, cache=False)


def skipped_names(rec: list) -> list[str]:
    return [str(w.message) for w in rec if str(w.message).startswith("skipping ")]


def assert_skipped_then_strict(d: Path, bad: str, reason: str, n_good: int = 2) -> None:
    """Without strict: the good images load and one warning names `bad`; with strict: a one-line error."""
    with pytest.warns(SkippedFileWarning) as rec:
        data = load(d)
    assert len(data) == n_good
    named = skipped_names(rec)
    assert len(named) == 1 and bad in named[0] and reason in named[0], named
    with pytest.raises(UserError, match=f"cannot read image .*{bad}") as e:
        load(d, strict=True)
    assert "\n" not in str(e.value) and reason in str(e.value)


def test_truncated_png(tmp_path: Path) -> None:
    good(tmp_path)
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible
    raw = png(noisy)
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    assert_skipped_then_strict(tmp_path, "cut.png", "truncated")


@pytest.mark.parametrize(
    "content", [b"<html><body>404 Not Found</body></html>\n", b"hello\n", b"\x89PNG\r\n\x1a\n", b"GIF89a"]
)
def test_text_or_a_bare_signature_named_like_an_image(tmp_path: Path, content: bytes) -> None:
    good(tmp_path)
    (tmp_path / "download.jpg").write_bytes(content)  # what a failed download leaves behind
    assert_skipped_then_strict(tmp_path, "download.jpg", "")


def test_zero_byte_member_of_a_zip(tmp_path: Path) -> None:
    z = tmp_path / "set.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.png", png(np.zeros((8, 8, 3), np.uint8)))
        zf.writestr("b.png", b"")
    with pytest.warns(SkippedFileWarning) as rec:
        assert len(load_dataset(str(z), 8, 3, cache=False)) == 1
    assert skipped_names(rec) == [f"skipping {z}:b.png: empty file (0 bytes)"]


def test_more_colour_modes_load(tmp_path: Path) -> None:
    """Gray+alpha, 16-bit RGB and partly transparent palette entries: composited on white, not skipped."""
    la = np.zeros((8, 8, 2), np.uint8)
    la[..., 0], la[:4, :, 1] = 100, 255  # top opaque gray 100, bottom transparent
    (tmp_path / "a_la.png").write_bytes(png(la, "LA"))
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.info["transparency"] = bytes([255, 0])  # index 0 opaque red, index 1 fully transparent
    pal.paste(0, (0, 0, 8, 4))
    pal.save(tmp_path / "b_palette_alpha.png")
    rgb48 = Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).convert("RGB")
    rgb48.save(tmp_path / "c_rgb.png")
    with contextlib.suppress(Exception):  # 16-bit RGB is written only where Pillow supports it
        Image.fromarray(np.full((8, 8, 3), 51400, np.uint16), "RGB;16").save(tmp_path / "d_rgb16.png")
    with time_limit(30):
        data = load_dataset(str(tmp_path), 8, 3, cache=False)
    imgs = data.images
    assert (imgs[0, :3] == 100).all() and (imgs[0, 5:] == 255).all()  # LA on white
    assert (imgs[1, :3] == (255, 0, 0)).all() and (imgs[1, 5:] == 255).all()  # palette alpha on white
    assert (imgs[2] == 200).all()


def test_unreadable_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file without read permission. Root reads any file, so the denial is simulated for that path."""
    good(tmp_path)
    locked = tmp_path / "locked.png"
    locked.write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
    if os.geteuid() == 0:
        real_open = builtins.open

        def guarded(file, *args, **kwargs):  # noqa: ANN001, ANN202
            if Path(file) == locked.resolve():
                raise PermissionError(13, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(folder_mod, "open", guarded, raising=False)
    else:
        locked.chmod(0)
    assert_skipped_then_strict(tmp_path, "locked.png", "Permission denied")


def test_unreadable_sub_folder_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.walk drops a folder it cannot list without a word; the user must hear which one was left out."""
    good(tmp_path)
    hidden_from_us = tmp_path / "private"
    hidden_from_us.mkdir()
    (hidden_from_us / "x.png").write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
    if os.geteuid() == 0:
        real_scandir = os.scandir

        def guarded(path="."):  # noqa: ANN001, ANN202
            if Path(path) == hidden_from_us:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", guarded)
    else:
        hidden_from_us.chmod(0)
    try:
        with pytest.warns(SkippedFileWarning) as rec:
            data = load(tmp_path)
        assert len(data) == 2
        msgs = [str(w.message) for w in rec]
        assert any("private" in m and "Permission denied" in m for m in msgs), msgs
        with pytest.raises(UserError, match="private") as e:
            load(tmp_path, strict=True)
        assert "\n" not in str(e.value)
    finally:
        if os.geteuid() != 0:
            hidden_from_us.chmod(0o755)


def test_unreadable_dataset_folder_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "x.png").write_bytes(png(np.zeros((8, 8, 3), np.uint8)))
    real_scandir = os.scandir
    denied = {tmp_path.resolve(), (tmp_path / "only").resolve()}

    def guarded(path="."):  # noqa: ANN001, ANN202
        if Path(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", guarded)
    with pytest.raises(UserError, match=r"cannot list dataset folder .*Permission denied"):
        load(tmp_path)
    denied.remove(tmp_path.resolve())  # every image lies in the one folder that cannot be listed
    with pytest.raises(UserError, match=r"no images found in .*; cannot list .*only \(Permission denied\)"):
        load(tmp_path)


def test_fifo_named_like_an_image_does_not_block(tmp_path: Path) -> None:
    good(tmp_path)
    os.mkfifo(tmp_path / "pipe.png")  # opening it for reading would wait for a writer forever
    assert_skipped_then_strict(tmp_path, "pipe.png", "not a regular file")


def test_symlinks_dangling_self_and_loops(tmp_path: Path) -> None:
    """A folder link back to its parent, a second link to a folder, a file link to itself and a
    dangling one: listing ends, each image is read once, the two broken links are named."""
    (tmp_path / "a").mkdir()
    good(tmp_path / "a")
    (tmp_path / "a" / "up").symlink_to("..", target_is_directory=True)  # a/up/a/up/a/... forever
    (tmp_path / "b").symlink_to("a", target_is_directory=True)  # the same images under another name
    (tmp_path / "a" / "self.png").symlink_to("self.png")
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "deleted.png")
    with pytest.warns(SkippedFileWarning) as rec:
        data = load(tmp_path)
    assert len(data) == 2
    named = skipped_names(rec)
    assert len(named) == 2
    assert "gone.png" in named[0] and "No such file" in named[0], named
    assert "self.png" in named[1] and "symbolic links" in named[1], named
    with pytest.raises(UserError, match="gone.png"):
        load(tmp_path, strict=True)
