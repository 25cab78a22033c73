"""`ganforge publish`: a bundle that loads on its own (same images, bitwise), says what it is, and refuses damage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import FAST, SMALL_SG, synthetic_data
from PIL import Image
from safetensors.torch import load_file

import ganforge
from ganforge import publish as publish_mod
from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.publish import publish
from ganforge.runs.bundle import MANIFEST, is_bundle, verify
from ganforge.runs.rundir import RunDir

EVAL = {"network": "lenet-fmnist", "n": 1000, "n_ref": 60000, "ref": "fashion-mnist", "fid": 12.5, "kid": 0.0123,
        "step": 4, "source": "cli"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_torch_thread):
    from ganforge.training.launch import train

    root = tmp_path_factory.mktemp("publish")
    dc = train("fashion_mnist_dcgan", FAST + ["train.steps=4"], run_dir=root / "dcgan", data=synthetic_data(n=64),
               quiet=True)[0].path
    sg = train("fashion_mnist32_stylegan2", SMALL_SG + ["train.steps=4"], run_dir=root / "sg",
               data=synthetic_data(n=64), quiet=True)[0].path
    RunDir(dc, tensorboard=False).log_eval(EVAL)
    return {"dcgan": dc, "stylegan2": sg}


@pytest.fixture(scope="module")
def bundle(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "dcgan"
    assert main(["publish", str(runs["dcgan"]), "--out", str(out)]) == 0
    return out


def test_bundle_layout_and_card(bundle, runs):
    files = sorted(p.name for p in bundle.iterdir())
    expected = ["README.md", "config.json", MANIFEST, "model.safetensors", "samples.png"]
    onnx = publish_mod._onnx_available() is None
    assert files == sorted(expected + (["generator.onnx"] if onnx else []))
    manifest = verify(bundle)
    assert set(manifest["files"]) == set(files) - {MANIFEST}
    tensors = load_file(str(bundle / "model.safetensors"))
    assert {k.split(".")[0] for k in tensors} == {"G", "G_ema"}  # G too, without --g-ema-only
    info = json.loads((bundle / "config.json").read_text())
    assert info["library"] == "ganforge" and info["step"] == 4 and info["images_seen"] == 64
    assert info["config"]["model"]["name"] == "dcgan"
    card = (bundle / "README.md").read_text()
    assert card.startswith("---\n")
    meta = yaml.safe_load(card.split("---\n")[1])
    assert meta["library_name"] == "ganforge" and meta["license"] == "mit" and "ganforge" in meta["tags"]
    assert meta["datasets"] == ["fashion-mnist"]
    metrics = {m["type"]: m for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["fid"]["value"] == 12.5 and metrics["kid"]["value"] == 0.0123
    assert metrics["fid"]["args"]["n"] == 1000 and metrics["fid"]["args"]["network"] == "lenet-fmnist"
    for text in ("images seen | 64", "| FID | 12.5 |", "1000 generated vs 60000 real", "huggingface-cli upload",
                 "ganforge.load", "keras.saving.load_model", "![samples](samples.png)", "## Limitations"):
        assert text in card, text
    if onnx:
        assert "onnxruntime" in card
    grid = np.asarray(Image.open(bundle / "samples.png"))
    assert grid.shape == (8 * 34 + 2, 8 * 34 + 2)  # 64 images of 32 px, 8 a row, 2 px padding


def test_bundle_alone_gives_the_runs_images_bitwise(bundle, runs, tmp_path):
    moved = shutil.copytree(bundle, tmp_path / "elsewhere")  # no run folder next to it
    assert is_bundle(moved)
    a = ganforge.load(moved).sample(16, seed=5).tensor
    b = ganforge.load(runs["dcgan"]).sample(16, seed=5).tensor
    assert torch.equal(a, b)
    assert main(["sample", str(moved), "--n", "16", "--seed", "5", "--grid", str(tmp_path / "b.png")]) == 0
    assert main(["sample", str(runs["dcgan"]), "--n", "16", "--seed", "5", "--grid", str(tmp_path / "r.png")]) == 0
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "r.png").read_bytes()
    if publish_mod._onnx_available() is None:  # export reads the bundle as it reads a run
        assert main(["export", str(moved), "--format", "onnx", "--out", str(tmp_path / "g.onnx")]) == 0
    # loading a bundle goes nowhere near the trainer
    code = (f"import sys, ganforge; ganforge.load({str(moved)!r}).sample(2); "
            "print(sorted(m for m in sys.modules if m.startswith('ganforge.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(Path(ganforge.__file__).parents[1])})
    assert out.stdout.strip() == "[]"


def test_g_ema_only_and_style_bundle(runs, tmp_path):
    out = publish(runs["stylegan2"], tmp_path / "sg", g_ema_only=True, onnx=False)
    tensors = load_file(str(tmp_path / "sg" / "model.safetensors"))
    assert {k.split(".")[0] for k in tensors} == {"G_ema"}
    assert "generator.onnx" not in out["files"] and any("ONNX export left out" in n for n in out["notes"])
    G = ganforge.load(tmp_path / "sg")
    assert torch.equal(G.sample(4, truncation=0.7).tensor, ganforge.load(runs["stylegan2"]).sample(4, truncation=0.7).tensor)
    card = (tmp_path / "sg" / "README.md").read_text()
    assert "model-index" not in card and "Not evaluated" in card  # no eval.jsonl: no invented numbers


def test_missing_onnx_extra_is_a_note(runs, tmp_path, monkeypatch):
    def missing(fmt: str) -> None:
        raise UserError("--format onnx needs onnx, which is not installed")

    monkeypatch.setattr("ganforge.export.require_extras", missing)
    out = publish(runs["dcgan"], tmp_path / "b")
    assert "generator.onnx" not in out["files"] and "install the onnx extra" in out["notes"][0]
    assert "onnxruntime" not in (tmp_path / "b" / "README.md").read_text()


@pytest.mark.parametrize("damage", ["alter", "remove"])
def test_damaged_bundle_is_refused(bundle, tmp_path, damage, capsys):
    b = shutil.copytree(bundle, tmp_path / "b")
    name = "model.safetensors" if damage == "alter" else "config.json"
    if damage == "alter":
        data = bytearray((b / name).read_bytes())
        data[-1] ^= 1
        (b / name).write_bytes(bytes(data))
    else:
        (b / name).unlink()
    why = "does not match its SHA-256" if damage == "alter" else "config.json is missing"
    with pytest.raises(UserError, match=why):
        ganforge.load(b)
    assert main(["sample", str(b), "--grid", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0]
    assert not (tmp_path / "x.png").exists()


def test_altered_card_is_refused_too(bundle, tmp_path):
    b = shutil.copytree(bundle, tmp_path / "b")
    (b / "README.md").write_text((b / "README.md").read_text() + "edited\n")
    with pytest.raises(UserError, match="README.md does not match"):
        verify(b)


def test_publish_refuses_and_leaves_nothing_half_written(runs, bundle, tmp_path, monkeypatch):
    with pytest.raises(UserError, match="already exists"):
        publish(runs["dcgan"], bundle)
    with pytest.raises(UserError, match="inside the run folder"):
        publish(runs["dcgan"], runs["dcgan"] / "bundle")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not a ganforge bundle"):
        publish(runs["dcgan"], tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"

    def crash(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(publish_mod, "model_card", crash)
    with pytest.raises(RuntimeError):
        publish(runs["dcgan"], tmp_path / "new", onnx=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no bundle, no staging folder
    empty = tmp_path / "fresh"
    RunDir.create(empty, ganforge.config.load_config("fashion_mnist_dcgan")).close()
    with pytest.raises(UserError, match="no intact checkpoint"):
        publish(empty, tmp_path / "x")


def test_evaluating_a_bundle_scores_its_step_and_leaves_it_intact(bundle, tmp_path):
    from conftest import png_folder, register_pixel_net

    from ganforge.evaluation import evaluate_run

    register_pixel_net()
    copy = shutil.copytree(bundle, tmp_path / "b")
    rec = evaluate_run(copy, metrics="fid", n=40, network="test-pixels", ref=str(png_folder(tmp_path / "ref", 40)),
                       progress=False)
    assert rec["step"] == json.loads((copy / "config.json").read_text())["step"] and np.isfinite(rec["fid"])
    assert not (copy / "eval.jsonl").exists()
    verify(copy)  # every file still matches its manifest hash


def test_bundle_names_its_run_without_local_paths(bundle, runs):
    from ganforge.tf import read_metadata

    meta = read_metadata(bundle / publish_mod.ONNX)
    assert meta["source_run"] == Path(runs["dcgan"]).name  # not the publisher's absolute path
