"""The command line end to end: exit codes, one-line errors, train -> resume -> sample."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, FMNIST_DIR, assert_png_is_grid, attribute_data, need_fashion_mnist, png_folder
from PIL import Image

from ganforge.cli import main
from ganforge.config import load_config
from ganforge.data.from_config import load_data
from ganforge.generate import load_generator, sample


@pytest.fixture
def image_folder(tmp_path):
    """A folder of 64 real PNG files (blobs) plus one corrupt file that must be skipped."""
    d = png_folder(tmp_path / "imgs", 64)
    (d / "broken.png").write_bytes(b"not a png at all")
    return d


def run_cli(args, capsys):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *words):
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("ganforge: warning")]
    assert len(lines) == 1, err
    assert lines[0].startswith("ganforge: error: ")
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def test_train_resume_sample_end_to_end(tmp_path, image_folder, capsys):
    run = tmp_path / "run"
    rc, out, err = run_cli(["train", "fashion_mnist_dcgan", f"data.source={image_folder}", *FAST, "train.steps=10",
                            "--run-dir", run, "--quiet"], capsys)
    assert rc == 0, err
    assert "broken.png" in err  # the corrupt file is named in a warning, and training went on
    assert f"run: {run}" in out and "step 10" in out
    rc, out, err = run_cli(["train", "--resume", run, "train.steps=20", "--quiet"], capsys)
    assert rc == 0, err
    assert "step 20" in out
    rc, out, err = run_cli(
        ["sample", run, "--n", "9", "--grid", tmp_path / "g.png", "--out", tmp_path / "files"], capsys
    )
    assert rc == 0, err
    assert Image.open(tmp_path / "g.png").size == (3 * 34 + 2, 3 * 34 + 2)
    assert len(list((tmp_path / "files").glob("*.png"))) == 9
    rc, out, err = run_cli(["sample", run, "--no-ema", "--seed", "5"], capsys)
    assert rc == 0 and (run / "sample-seed5.png").is_file()
    raw = sample(load_generator(run, ema=False)[0], 64, seed=5)  # --no-ema: G, not G_ema; --seed: its latents
    assert_png_is_grid(run / "sample-seed5.png", raw)
    assert not torch.equal(raw, sample(load_generator(run)[0], 64, seed=5))


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "fashion_mnist_dcgan", "train.stepz=3"], ["train.stepz", "did you mean"]),
        (["train", "fashion_mnist_dcgan", "train.steps=-3"], ["train.steps"]),
        (["train", "no_such_preset"], ["not found", "fashion_mnist_dcgan"]),
        (["train"], ["give a config"]),
        (["train", "fashion_mnist_dcgan", "extra_positional"], ["unexpected argument"]),
        (["train", "fashion_mnist_dcgan", "data.source=/no/such/dir"], ["/no/such/dir"]),
        (["train", "--resume", "/no/such/run"], ["not a ganforge run directory"]),
        (["train", "fashion_mnist_dcgan", "--device", "tpu"], ["invalid choice"]),
        (["train", "fashion_mnist_dcgan", "--bogus-flag"], ["unrecognized arguments"]),
        (["sample", "/no/such/run"], ["not a ganforge run directory"]),
        (["sample", ".", "--n", "abc"], ["invalid int value"]),
        (["data", "info", "nope"], ["unknown dataset 'nope'"]),
        (["nonsense"], ["invalid choice"]),
    ],
)
def test_bad_input_is_one_line_exit_2(args, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(args, capsys)
    assert_one_line_error(rc, err, *words)


def test_bad_config_file_and_checkpoint_of_other_architecture(tmp_path, image_folder, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: dcgan\n")
    rc, _, err = run_cli(["train", bad], capsys)
    assert_one_line_error(rc, err, "not valid YAML")
    run = tmp_path / "run"
    assert run_cli(["train", "fashion_mnist_dcgan", f"data.source={image_folder}", *FAST, "train.steps=2",
                    "--run-dir", run, "--quiet"], capsys)[0] == 0
    rc, _, err = run_cli(["train", "fashion_mnist_dcgan", f"data.source={image_folder}", *FAST, "model.nf=16",
                          "--init-from", run, "--run-dir", tmp_path / "ft", "--quiet"], capsys)
    assert_one_line_error(rc, err, "does not fit this model", "nf=8")
    not_ckpt = tmp_path / "weights.txt"
    not_ckpt.write_text("hello")
    rc, _, err = run_cli(["train", "fashion_mnist_dcgan", "--init-from", not_ckpt, "--run-dir", tmp_path / "x"], capsys)
    assert_one_line_error(rc, err, "not a checkpoint")
    assert not (tmp_path / "x").exists()


def test_debug_shows_traceback(capsys):
    rc = main(["--debug", "train", "no_such_preset"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" in err


def test_data_info_folder_json(image_folder, capsys):
    rc, out, err = run_cli(["data", "info", image_folder, "--json"], capsys)
    assert rc == 0, err
    info = json.loads(out)
    assert info["count"] == 64 and info["skipped"] == 1


def test_presets_and_models_listing(capsys):
    rc, out, _ = run_cli(["presets"], capsys)
    assert rc == 0 and "fashion_mnist_dcgan" in out and "mnist_dcgan" in out
    rc, out, _ = run_cli(["models"], capsys)
    assert rc == 0 and "dcgan" in out and "mlp" in out and "nsgan" in out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_a_real_process_saves_and_exits_0(tmp_path, image_folder, sig):
    """A real `ganforge train` process gets SIGTERM or SIGINT (Ctrl-C) mid-run: it checkpoints the current step,
    records why it stopped and exits 0 (the README's "Ctrl-C or SIGTERM save a checkpoint and exit 0")."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ganforge", "train", "fashion_mnist_dcgan", f"data.source={image_folder}", *FAST,
         "train.steps=100000", "train.checkpoint_every=0", "train.sample_every=0", "--run-dir", str(run), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (metrics.exists() and metrics.stat().st_size > 0):
        time.sleep(0.1)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"stopped by {sig.name}" in out and "Traceback" not in err
    ck = sorted(Path(run / "checkpoints").glob("step-*.safetensors"))
    assert len(ck) == 1 and int(ck[0].stem.split("-")[1]) >= 5
    stop = json.loads((run / "events.jsonl").read_text().splitlines()[-1])
    assert stop["stopped_by"] == sig.name and stop["step"] == int(ck[0].stem.split("-")[1])


def test_nan_through_the_cli_exits_3_with_the_last_good_checkpoint(tmp_path, image_folder, capsys, monkeypatch):
    from ganforge.training.trainer import Trainer

    real_step = Trainer.train_step

    def poisoned(self):
        out = real_step(self)
        if self.step >= 13:
            out["loss_g"] = out["loss_g"] * float("inf")
        return out

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    run = tmp_path / "run"
    rc, out, err = run_cli(["train", "fashion_mnist_dcgan", f"data.source={image_folder}", *FAST, "train.steps=40",
                            "--run-dir", run, "--quiet"], capsys)
    assert rc == 3, err
    lines = [ln for ln in err.splitlines() if ln.startswith("ganforge: error: ")]
    assert len(lines) == 1 and "diverged at step 13" in lines[0] and "Traceback" not in err
    assert str(run / "checkpoints" / "step-00000010.safetensors") in lines[0]


def test_python_dash_m_and_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ganforge", "train", "fashion_mnist_dcgan", "train.steps=zero"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "train.steps" in r.stderr
    assert not (tmp_path / "runs").exists()  # a bad config writes nothing


def test_real_fashion_mnist_source_trains(tmp_path, capsys):
    need_fashion_mnist()
    rc, out, err = run_cli(["train", "fashion_mnist_dcgan", *FAST, "train.steps=3", "--run-dir", tmp_path / "r",
                            "--quiet"], capsys)
    assert rc == 0, err
    run = tmp_path / "r"
    start = json.loads((run / "events.jsonl").read_text().splitlines()[0])
    assert (start["event"], start["source"]) == ("start", "fashion-mnist")
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3 and metrics[-1]["images_seen"] == 48 and np.isfinite(metrics[-1]["loss_d"])
    # what it trained on is the real set: 60,000 labelled images, each with content, as bright as the raw IDX bytes
    data = load_data(load_config(str(run / "config.yaml"), []))
    images = np.asarray(data.images)
    raw = np.frombuffer(gzip.open(FMNIST_DIR / "train-images-idx3-ubyte.gz").read()[16:], np.uint8)
    assert images.shape == (60_000, 32, 32, 1) and sorted(set(data.labels.tolist())) == list(range(10))
    assert images.reshape(60_000, -1).std(axis=1).min() > 5  # no constant image (a black grid padding can't pass)
    assert abs(images.mean() - raw.mean()) < 1.0


def test_demo_command_is_idempotent(tmp_path, capsys):
    need_fashion_mnist()
    run = tmp_path / "demo"
    rc, out, err = run_cli(["demo", "--run-dir", run, "--steps", "3", "--no-eval"], capsys)
    assert rc == 0, err
    assert "step 3" in out and (run / "samples" / "step-00000003.png").is_file()
    rc, out, err = run_cli(["demo", "--run-dir", run, "--steps", "3", "--no-eval"], capsys)
    assert rc == 0 and "already trained" in out


def test_demo_keeps_an_older_demo_run_and_says_whose_it_is(tmp_path, capsys):
    """A runs/demo trained by an earlier ganforge (the old demo preset) is neither retrained nor mixed with the new
    recipe: the note names both presets, and the folder is left as it was."""
    need_fashion_mnist()
    run = tmp_path / "demo"
    rc, _, err = run_cli(["train", "fashion_mnist_dcgan", "train.steps=3", "train.eval_every=0", "--run-dir", run],
                         capsys)
    assert rc == 0, err
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    rc, out, _ = run_cli(["demo", "--run-dir", run, "--steps", "3", "--no-eval"], capsys)
    assert rc == 0 and "already trained with 'fashion_mnist_dcgan', not the current 'fashion_mnist_dcgan_fast'" in out
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


@pytest.mark.slow  # 10,000 generated images and the 60,000 real ones through the domain CNN: ~1-2 min
def test_demo_with_evaluation_writes_grid_metrics_and_report(tmp_path, capsys):
    """`ganforge demo` without --no-eval: after training, the real-vs-generated grid, FID/KID/IS of 10,000 images
    with the dataset's own feature network, logged in eval.jsonl, and report.html -- each printed by path."""
    need_fashion_mnist()
    run = tmp_path / "demo"
    rc, out, err = run_cli(["demo", "--run-dir", run, "--steps", "2"], capsys)
    assert rc == 0, err
    lines = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
    line = lines[-1]  # the demo's own evaluation, after the training-time one (train.eval_every) of the final step
    assert (line["step"], line["n"], line["network"]) == (2, 10_000, "fashion-mnist-cnn"), lines
    assert line["fid"] > 0 and line["is"] >= 1 and "kid" in line
    assert f"real vs generated: {run / 'compare-grid.png'}" in out and f"report:      {run / 'report.html'}" in out
    assert Image.open(run / "compare-grid.png").width > 100
    html = (run / "report.html").read_text()
    assert html.lower().startswith("<!doctype html>") and "ganforge report: demo" in html


def test_overrides_may_follow_options(tmp_path, capsys):
    png_folder(tmp_path / "imgs", 32)
    rc, out, err = run_cli(["train", "fashion_mnist_dcgan", "--run-dir", tmp_path / "r", "--quiet", *FAST,
                            f"data.source={tmp_path / 'imgs'}", "train.steps=2"], capsys)
    assert rc == 0, err
    assert "step 2" in out
    rc, _, err = run_cli(["train", "fashion_mnist_dcgan", "--quiet", "stray"], capsys)
    assert rc == 2 and "unrecognized arguments: stray" in err


def test_sample_attr_draws_the_attribute_conditioned_images(tmp_path, capsys):
    """`ganforge sample --attr Smiling=1,Male=0` (the README's example): the grid is the generator's images for the
    label vector (Smiling, Male) = (1, 0), not (0, 0) or (0, 1); a bad attribute is a one-line error."""
    from ganforge.training.launch import train

    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=2", "model.conditional=true"], run_dir=tmp_path / "r",
                   data=attribute_data(), quiet=True)
    G, cfg = load_generator(run.path)
    assert cfg["model"]["label_names"] == ["Smiling", "Male"]
    rc, out, err = run_cli(["sample", run.path, "--n", "4", "--attr", "Smiling=1,Male=0", "--grid", tmp_path / "g.png"],
                           capsys)
    assert rc == 0, err
    want = sample(G, 4, labels=torch.tensor([[1.0, 0.0]] * 4))
    assert_png_is_grid(tmp_path / "g.png", want)
    for other in ([0.0, 0.0], [0.0, 1.0]):
        assert not torch.equal(want, sample(G, 4, labels=torch.tensor([other] * 4)))
    rc, _, err = run_cli(["sample", run.path, "--attr", "Bald=1"], capsys)
    assert_one_line_error(rc, err, "--attr 'Bald=1'", "Smiling, Male")
    rc, _, err = run_cli(["sample", run.path, "--class", "3"], capsys)
    assert_one_line_error(rc, err, "conditioned on attributes, not classes")


def test_data_strict_true_turns_a_skipped_file_into_an_error(tmp_path, image_folder, capsys):
    """`data.strict=true` as a config key: the corrupt file that a normal run skips (with a warning) is a one-line
    error naming it, before any run folder -- also when the dataset cache was built without strict mode."""
    args = ["train", "fashion_mnist_dcgan", f"data.source={image_folder}", *FAST, "train.steps=2", "--quiet"]
    rc, _, err = run_cli([*args, "data.strict=true", "--run-dir", tmp_path / "s1"], capsys)
    assert_one_line_error(rc, err, "broken.png")
    assert not (tmp_path / "s1").exists()
    rc, _, err = run_cli([*args, "--run-dir", tmp_path / "ok"], capsys)
    assert rc == 0 and "broken.png" in err  # skipped with a warning; the cache now holds the 64 good images
    rc, _, err = run_cli([*args, "data.strict=true", "--run-dir", tmp_path / "s2"], capsys)
    assert_one_line_error(rc, err, "broken.png")
    assert not (tmp_path / "s2").exists()
