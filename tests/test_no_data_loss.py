"""No command deletes or overwrites a user's file outside its own run dir: every refusal is checked by a
full listing + SHA-256 of the folder before and after. Inside a run dir, only the run's own outputs
are refreshed, and `train --resume` deletes nothing but the checkpoints it prunes."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_data
from PIL import Image

from ganforge.cli import main

FAST = ["model.nf=8", "train.batch_size=16", "train.tensorboard=false", "train.threads=1", "train.sample_every=2",
        "train.checkpoint_every=2", "train.eval_every=0"]


def snapshot(root: Path) -> dict[str, str]:
    """Relative path -> content hash (files), "dir", or "link -> target", hidden entries included."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli(args: list) -> int:
    """`ganforge ARGS` in-process (tests read stderr with capsys); torch's thread count is restored."""
    n = torch.get_num_threads()
    try:
        return main([str(a) for a in args])
    finally:
        torch.set_num_threads(n)


def one_error(capsys: pytest.CaptureFixture[str], rc: int, *words: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ganforge: warning:")]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("ganforge: error: "), err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def run_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step run (checkpoints 2 and 4) trained by the CLI on a folder of PNGs."""
    root = tmp_path_factory.mktemp("nodataloss")
    (root / "images").mkdir()
    for i, arr in enumerate(synthetic_data(n=32).images):
        Image.fromarray(arr[..., 0]).save(root / "images" / f"{i:02d}.png")
    rc = cli(["train", "fashion_mnist_dcgan", f"data.source={root / 'images'}", *FAST, "train.steps=4",
                    "--run-dir", root / "run", "--quiet"])
    assert rc == 0
    return root / "run"


@pytest.fixture
def run(run_src: Path, tmp_path: Path) -> Path:
    """A private copy of the run, so a test may change it."""
    dst = tmp_path / "run"
    shutil.copytree(run_src, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


@pytest.fixture
def user(tmp_path: Path) -> Path:
    """A user's folder: images, text, a sub-folder and hidden files."""
    d = tmp_path / "user"
    (d / "sub").mkdir(parents=True)
    (d / "existing.png").write_bytes(png_bytes(1))
    (d / "000003.png").write_bytes(png_bytes(2))
    (d / "notes.txt").write_text("do not lose me")
    (d / ".DS_Store").write_bytes(b"\0\1")
    (d / "sub" / "thesis.tex").write_text("precious")
    return d


# --- train ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout", ["files", "hidden-only", "empty-checkpoints-dir", "a-file", "symlink-to-folder", "own-config.yaml"]
)
def test_train_into_a_users_folder_is_refused_and_leaves_it_untouched(
    layout: str, run_src: Path, tmp_path: Path, user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = {
        "files": user,
        "hidden-only": tmp_path / "hidden",
        "empty-checkpoints-dir": tmp_path / "looks-like-a-run",
        "a-file": user / "notes.txt",
        "symlink-to-folder": tmp_path / "link",
        "own-config.yaml": tmp_path / "project",
    }[layout]
    if layout == "hidden-only":
        (target / ".git").mkdir(parents=True)
        (target / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    elif layout == "empty-checkpoints-dir":
        (target / "checkpoints").mkdir(parents=True)
    elif layout == "symlink-to-folder":
        target.symlink_to(user, target_is_directory=True)
    elif layout == "own-config.yaml":  # the user's own ganforge config lives here: not a run
        target.mkdir()
        (target / "config.yaml").write_text("name: mine\ntrain: {steps: 5}\n")
    before, before_user = snapshot(tmp_path), snapshot(user)
    rc = cli(["train", "fashion_mnist_dcgan", f"data.source={run_src.parent / 'images'}", *FAST,
                    "train.steps=2", "--run-dir", target, "--quiet"])
    one_error(capsys, rc, str(target))
    assert snapshot(tmp_path) == before and snapshot(user) == before_user


def test_resume_of_a_users_folder_leaves_it_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("name: mine\ntrain: {steps: 5}\n")  # a valid ganforge config
    before = snapshot(project)
    rc = cli(["train", "--resume", project])
    one_error(capsys, rc, str(project))
    assert snapshot(project) == before


# --- sample / compare-grid --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["existing.png", "notes.txt", "sub"])
def test_sample_grid_refuses_to_replace_a_users_file(
    name: str, run: Path, user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(user)
    rc = cli(["sample", run, "--n", "4", "--grid", user / name])
    one_error(capsys, rc, str(user / name))
    assert snapshot(user) == before


def test_overwrite_is_what_lets_sample_replace_a_file(
    run: Path, user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = (user / "existing.png").read_bytes()
    assert cli(["sample", run, "--n", "4", "--grid", user / "existing.png", "--overwrite"]) == 0
    assert (user / "existing.png").read_bytes() != old
    assert Image.open(user / "existing.png").size != (20, 20)


def test_sample_out_refuses_before_writing_anything(run: Path, user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """000003.png would be replaced: nothing is written, not even 000000-000002."""
    before = snapshot(user)
    rc = cli(["sample", run, "--n", "9", "--out", user])
    one_error(capsys, rc, "000003.png", "--overwrite")
    assert snapshot(user) == before
    rc = cli(["sample", run, "--n", "2", "--out", user / "notes.txt"])  # --out at a file
    one_error(capsys, rc, "notes.txt")
    assert snapshot(user) == before


def test_sample_out_adds_files_beside_unrelated_ones(run: Path, user: Path) -> None:
    before = snapshot(user)
    assert cli(["sample", run, "--n", "3", "--out", user]) == 0
    after = snapshot(user)
    assert {k: after[k] for k in before} == before  # every file that was there is byte-identical
    assert sorted(set(after) - set(before)) == ["000000.png", "000001.png", "000002.png"]


def test_compare_grid_refuses_to_replace_a_users_file(
    run: Path, user: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(user)
    rc = cli(["compare-grid", run, "--n", "4", "--out", user / "existing.png"])
    one_error(capsys, rc, "existing.png", "--overwrite")
    assert snapshot(user) == before


def test_a_runs_own_outputs_may_be_refreshed(run: Path) -> None:
    for _ in range(2):  # the second time the files exist: they are the run's own, so no --overwrite needed
        assert cli(["sample", run, "--n", "4", "--seed", "1"]) == 0
        assert cli(["sample", run, "--n", "4", "--grid", run / "my-grid.png"]) == 0
        assert cli(["compare-grid", run, "--n", "4"]) == 0
    for name in ("sample-seed1.png", "my-grid.png", "compare-grid.png"):
        assert Image.open(run / name).size[0] > 0


@pytest.mark.parametrize("command", ["sample", "compare-grid"])
@pytest.mark.parametrize("victim", ["config.yaml", "metrics.jsonl"])
def test_run_records_are_not_replaced_by_image_outputs(
    command: str, victim: str, run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (run / victim).read_bytes()
    flag = "--grid" if command == "sample" else "--out"
    rc = cli([command, run, "--n", "4", flag, run / victim])
    assert (run / victim).read_bytes() == before
    one_error(capsys, rc, victim)


# --- resume ------------------------------------------------------------------------------------------------
def test_resume_deletes_nothing_but_pruned_checkpoints(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run / "notes.txt").write_text("my notes about this run")
    (run / "checkpoints" / "keep-me.safetensors").write_bytes(b"a backup the user made")
    (run / "checkpoints" / "step-00000002.json.bak").write_text("{}")
    (run / "samples" / "favourite.png").write_bytes(png_bytes(3))
    before = snapshot(run)
    rc = cli(["train", "--resume", run, "train.steps=10", "train.keep_checkpoints=2", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    after = snapshot(run)
    gone = sorted(set(before) - set(after))
    assert gone == [f"checkpoints/step-0000000{s}.{ext}" for s in (2, 4) for ext in ("json", "safetensors")]
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    assert set(changed) <= {"config.yaml", "metrics.jsonl", "train.log", "events.jsonl", "loss_curves.png", ".lock"}, changed
    for kept in ("notes.txt", "checkpoints/keep-me.safetensors", "checkpoints/step-00000002.json.bak",
                 "samples/favourite.png", "samples/step-00000002.png", "samples/step-00000004.png"):
        assert after[kept] == before[kept], kept
    assert sorted(k for k in after if k.startswith("checkpoints/step-") and not k.endswith(".bak")) == [
        f"checkpoints/step-000000{s:02d}.{ext}" for s in (8, 10) for ext in ("json", "safetensors")
    ]
