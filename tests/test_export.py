"""`ganforge export`: every family's exported generator (Keras, SavedModel, TFLite, ONNX) reproduces PyTorch on
16 fixed latents within 2e-4, loads in a process where torch cannot be imported, carries its metadata, and bad
input is one line and exit code 2.

Tiny runs (a few steps, nf 4-8, EMA decay 0.5 so G_ema and BatchNorm statistics move away from their initial
values) are trained once per module; TensorFlow is imported once here and once in the torch-less subprocess
that checks every artefact together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import torch
from conftest import FAST, need_extra, synthetic_data

need_extra("tensorflow", "tf")
need_extra("onnxruntime", "onnx")

from ganforge.cli import main  # noqa: E402
from ganforge.config import load_config  # noqa: E402
from ganforge.errors import UserError  # noqa: E402
from ganforge.export import check_labels, export, torch_images  # noqa: E402
from ganforge.generate import load_generator  # noqa: E402
from ganforge.images import to_uint8  # noqa: E402
from ganforge.models import MODELS, build_generator  # noqa: E402
from ganforge.models.sampling import sample, seed_latents  # noqa: E402
from ganforge.tf import read_metadata  # noqa: E402

TOL = 2e-4  # = export.TOLERANCE
TINY = ["train.steps=3", "train.batch_size=8", "train.ema_decay=0.5", "train.ema_kimg=null", "train.tensorboard=false",
        "train.sample_every=1000", "train.checkpoint_every=1000"]
SG2 = ["model.nf=4", "model.nf_max=8", "model.z_dim=16", "model.w_dim=16", "model.mapping_layers=2"]
# ProGAN pixel-normalises over the channels: with fewer than 8 the float32 round-off of torch itself (vs float64)
# exceeds 1e-4, so its widths stay at 8-16 (then torch and the mirrors are ~1e-5 from a float64 forward pass)
GROW = ["model.nf=8", "model.nf_max=16", "model.z_dim=16", "grow.fade_images=8", "grow.stable_images=8"]
ATTRS = ["Male", "Smiling", "Eyeglasses"]

# name: (preset, overrides, data: (resolution, channels, labels: None | "class" | "attributes"))
RUNS = {
    "mlp28": ("fashion_mnist_mlp", ["model.hidden=8"], (28, 1, None)),
    "mlp32_class": ("fashion_mnist_mlp", ["model.hidden=8", "data.resolution=32", "model.conditional=true"],
                    (32, 1, "class")),
    "dcgan32": ("fashion_mnist_dcgan", ["model.nf=8"], (32, 1, None)),
    "dcgan28_class": ("mnist_cgan", ["model.nf=4", "data.resolution=28"], (28, 1, "class")),
    "sngan32": ("fashion_mnist_sngan", ["model.nf=8", "model.d_nf=8"], (32, 1, None)),
    "sngan64_attr": ("fashion_mnist_sngan", ["model.nf=4", "model.d_nf=4", "data.resolution=64", "data.channels=3",
                                             "model.conditional=true"], (64, 3, "attributes")),
    "progan32": ("fashion_mnist32_progan", [*GROW, "grow.batch_sizes=[8,8,8,8]", "train.steps=8"], (32, 1, None)),
    "progan64_class": ("fashion_mnist32_progan", [*GROW, "data.resolution=64", "grow.batch_sizes=[8,8,8,8,8]",
                                                  "train.steps=10", "model.conditional=true"], (64, 1, "class")),
    "stylegan2_32": ("fashion_mnist32_stylegan2", SG2, (32, 1, None)),
    "stylegan2_64_class": ("fashion_mnist32_stylegan2", [*SG2, "data.resolution=64", "data.channels=3",
                                                         "model.conditional=true"], (64, 3, "class")),
}
TF_FILE_FORMATS = ("keras", "tflite")
SAVEDMODEL_RUNS = ("dcgan28_class", "stylegan2_32")  # SavedModel is the route to TFLite for all; written out for two


def _data(res: int, ch: int, labels: str | None) -> types.SimpleNamespace:
    d = synthetic_data(n=64, res=res, channels=ch, labels=labels == "class")
    if labels == "attributes":
        rng = np.random.default_rng(1)
        d.labels, d.classes, d.label_kind = rng.integers(0, 2, (64, len(ATTRS))).astype(np.float32), ATTRS, "attributes"
    return d


class _Runs(dict):
    """Run directories by name, each trained on first use (the fast tests need one or two of them)."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        from ganforge.training.launch import train

        preset, overrides, data = RUNS[name]
        steps = [o for o in overrides if o.startswith("train.steps")]  # after TINY's default
        run, _ = train(preset, FAST + TINY + overrides + steps, run_dir=self.root / name, data=_data(*data), quiet=True)
        self[name] = run.path
        return run.path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> _Runs:
    return _Runs(tmp_path_factory.mktemp("runs"))


def _feeds(G: torch.nn.Module, kind: str | None) -> dict[str, np.ndarray]:
    """The 16 parity inputs: latents of seeds 0-15, labels (one-hot classes / bit-pattern attributes), psi 0.7."""
    feeds = {"z": seed_latents(G, list(range(16))).numpy()}
    if G.num_labels:
        feeds["labels"] = check_labels(G.num_labels, kind)
    if hasattr(G, "mapping"):
        feeds["psi"] = np.full((16, 1), 0.7, np.float32)
    return feeds


@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory) -> dict[str, dict]:
    """Every run in keras, tflite and onnx (and SavedModel for two), with torch references and inputs on disk."""
    root = tmp_path_factory.mktemp("exported")
    out = {}
    for name in RUNS:
        run = runs[name]
        G, cfg = load_generator(run)
        kind = RUNS[name][2][2]
        feeds = _feeds(G, "attributes" if kind == "attributes" else "classes")
        np.savez(root / f"{name}-inputs.npz", **feeds)
        info = {"run": run, "G": G, "feeds": feeds, "ref": torch_images(G, feeds), "artefacts": {}}
        fmts = TF_FILE_FORMATS + ("onnx",) + (("savedmodel",) if name in SAVEDMODEL_RUNS else ())
        for fmt in fmts:
            path = root / (f"{name}-sm" if fmt == "savedmodel" else f"{name}.{fmt}")
            info["artefacts"][fmt] = export(run, fmt, path)
        if hasattr(G, "mapping"):  # style mixing in w: ws of seeds 0-15 with the coarse styles of seeds 16-31
            with torch.no_grad():
                ws = G.mapping(torch.from_numpy(feeds["z"]), _torch_labels(feeds), truncation_psi=0.7)
                other = G.mapping(seed_latents(G, list(range(16, 32))), _torch_labels(feeds), truncation_psi=0.7)
                ws[:, :2] = other[:, :2]
                info["ws_ref"] = G.mapping(
                    torch.from_numpy(feeds["z"]), _torch_labels(feeds), truncation_psi=0.7
                ).numpy()
                info["mix_ref"] = G.synthesis(ws, noise_mode="const").clamp(-1, 1).numpy()
            np.save(root / f"{name}-mixed-ws.npy", ws.numpy())
        out[name] = info
    return out


def _torch_labels(feeds: dict[str, np.ndarray]) -> torch.Tensor | None:
    return torch.from_numpy(feeds["labels"]) if "labels" in feeds else None


# The README's TensorFlow snippet, verbatim (the test only replaces the file names).
README_SNIPPET = """\
import json, zipfile, keras, numpy as np
from PIL import Image
g = keras.saving.load_model("fashion.keras")  # from: ganforge export RUN --format keras --out fashion.keras
z = np.array(json.loads(zipfile.ZipFile("fashion.keras").read("ganforge_export.json"))["seed_latents"]["z"][:1], "float32")
Image.fromarray(np.round((g.predict(z, verbose=0)[0].squeeze() + 1) * 127.5).astype("uint8")).save("seed0.png")
"""

# Runs in a fresh interpreter where `import torch` fails: only TensorFlow/Keras, ONNX Runtime and NumPy.
STANDALONE = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None  # any import of torch (also from inside a library) now raises ImportError
    import json, os
    from pathlib import Path
    import numpy as np
    try:
        import torch  # noqa: F401
        raise SystemExit("torch is importable; the test would prove nothing")
    except ImportError:
        pass
    import keras, onnxruntime as ort, tensorflow as tf

    def keras_run(path, sig, feeds):
        model = keras.saving.load_model(path)
        model = model if sig == "serving_default" else model.get_layer(sig)
        names = [t.name for t in model.inputs]
        return model([feeds[n] for n in names] if len(names) > 1 else feeds[names[0]]).numpy()  # a tf.Tensor

    def savedmodel_run(path, sig, feeds):
        out = tf.saved_model.load(path).signatures[sig](**{k: tf.constant(v) for k, v in feeds.items()})
        return list(out.values())[0].numpy()

    def tflite_run(path, sig, feeds):
        return list(tf.lite.Interpreter(model_path=path).get_signature_runner(sig)(**feeds).values())[0]

    def onnx_run(path, sig, feeds):
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]

    RUN = {"keras": keras_run, "savedmodel": savedmodel_run, "tflite": tflite_run, "onnx": onnx_run}
    jobs = json.loads(Path(sys.argv[1]).read_text())
    results = {}
    for job in jobs:
        feeds = {k: v for k, v in np.load(job["inputs"]).items()}
        if job["feeds"] == "ws":
            feeds = {"ws": np.load(job["ws"])}
        results[job["id"]] = RUN[job["fmt"]](job["path"], job["signature"], feeds)
    np.savez(sys.argv[2], **results)
    exec(Path(sys.argv[3]).read_text())  # the README snippet, in this same torch-less process
    print("modules:", "ganforge" in sys.modules, sys.modules.get("torch"))
""")


@pytest.fixture(scope="module")
def standalone(exported, tmp_path_factory) -> dict[str, np.ndarray]:
    """Run every artefact (and the README snippet) in one subprocess that cannot import torch."""
    root = tmp_path_factory.mktemp("standalone")
    jobs = []
    for name, info in exported.items():
        inputs = str(Path(info["artefacts"]["keras"]["paths"]["generator"]).parent / f"{name}-inputs.npz")
        ws = inputs.replace("-inputs.npz", "-mixed-ws.npy")
        for fmt, result in info["artefacts"].items():
            paths = result["paths"]
            jobs.append({"id": f"{name}/{fmt}", "fmt": fmt, "path": paths["generator"], "signature": "serving_default",
                         "inputs": inputs, "feeds": "all"})
            if "ws_ref" in info:
                for part in ("mapping", "synthesis"):
                    path = paths[part] if fmt == "onnx" else paths["generator"]
                    sig = "serving_default" if fmt == "onnx" else part
                    jobs.append({"id": f"{name}/{fmt}/{part}", "fmt": fmt, "path": path, "signature": sig,
                                 "inputs": inputs, "feeds": "ws" if part == "synthesis" else "all", "ws": ws})
    (root / "jobs.json").write_text(json.dumps(jobs))
    (root / "standalone.py").write_text(STANDALONE)
    snippet_src = exported["dcgan32"]["artefacts"]["keras"]["paths"]["generator"]
    (root / "snippet.py").write_text(README_SNIPPET.replace('"fashion.keras"', repr(snippet_src)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "standalone.py", "jobs.json", "out.npz", "snippet.py"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "modules: False None" in proc.stdout  # neither ganforge nor torch was loaded
    out = dict(np.load(root / "out.npz"))
    out["readme_png"] = root / "seed0.png"
    return out


def _nchw(a: np.ndarray, fmt: str) -> np.ndarray:
    return a if fmt == "onnx" else a.transpose(0, 3, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RUNS))
def test_parity_with_pytorch(name, exported, standalone):
    """Keras, TFLite, ONNX Runtime (and SavedModel) outputs, loaded without torch, equal PyTorch's within 2e-4 (export.TOLERANCE)."""
    info = exported[name]
    ref = info["ref"]
    assert np.abs(ref[0] - ref[1]).max() > 10 * ref.std() * 1e-3  # different latents give different images
    errors = {}
    for fmt, result in info["artefacts"].items():
        got = _nchw(standalone[f"{name}/{fmt}"], fmt)
        assert got.shape == ref.shape, (fmt, got.shape)
        errors[fmt] = float(np.abs(got - ref).max())
        assert result["metadata"]["parity"]["max_abs_err"] <= TOL
    print(f"{name}: max abs error vs PyTorch: " + ", ".join(f"{k} {v:.2g}" for k, v in errors.items()))
    # a few steps leave DCGAN-style outputs small (BatchNorm's running statistics are still near their start),
    # so the error must also be small relative to the images' spread, not only below TOL
    assert max(errors.values()) <= min(TOL, 1e-3 * float(ref.std())), (errors, float(ref.std()))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["stylegan2_32", "stylegan2_64_class"])
def test_stylegan2_mapping_and_synthesis(name, exported, standalone):
    """The mapping (z, psi -> ws) and synthesis (ws -> image) parts reproduce torch, so style mixing works in TF."""
    info = exported[name]
    for fmt in info["artefacts"]:
        ws = standalone[f"{name}/{fmt}/mapping"]
        assert ws.shape == info["ws_ref"].shape and np.abs(ws - info["ws_ref"]).max() <= TOL, fmt
        mixed = _nchw(standalone[f"{name}/{fmt}/synthesis"], fmt)
        assert np.abs(mixed - info["mix_ref"]).max() <= TOL, fmt
        assert np.abs(mixed - info["ref"]).max() > 1e-3  # the mixed styles did change the images


@pytest.mark.slow
def test_readme_snippet_writes_the_seed_image(exported, standalone):
    """The README's five lines (run without torch) write the same PNG as `ganforge sample --seed 0 --n 1`."""
    from PIL import Image

    G = exported["dcgan32"]["G"]
    want = to_uint8(sample(G, 1, seed=0))[0, :, :, 0]
    got = np.asarray(Image.open(standalone["readme_png"]))
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # float round-off may move a pixel across a .5


@pytest.mark.slow
def test_metadata_travels_with_every_artefact(runs, exported):
    info = exported["sngan64_attr"]
    G = info["G"]
    for fmt, result in info["artefacts"].items():
        path = result["paths"]["generator"]
        meta = read_metadata(path)
        stored = {**result["metadata"], **({"part": "generator"} if fmt == "onnx" else {})}
        assert meta == json.loads(json.dumps(stored))  # what export returned is what was stored
        assert meta["model"] == "sngan" and meta["z_dim"] == G.z_dim and meta["resolution"] == 64
        assert meta["labels"]["kind"] == "attributes" and meta["labels"]["names"] == ATTRS
        assert meta["output"]["layout"] == ("NCHW" if fmt == "onnx" else "NHWC")
        assert meta["output"]["shape"][1:] == ([3, 64, 64] if fmt == "onnx" else [64, 64, 3])
        assert meta["source_run"] == str(runs["sngan64_attr"].resolve()) and meta["step"] == 3
        assert meta["generator"] == "G_ema"
        z = np.asarray(meta["seed_latents"]["z"], np.float32)
        assert np.array_equal(z, seed_latents(G, list(range(16))).numpy())  # exact float32 round trip
    keras_path = info["artefacts"]["keras"]["paths"]["generator"]
    assert "ganforge_export.json" in zipfile.ZipFile(keras_path).namelist()
    assert Path(info["artefacts"]["tflite"]["paths"]["metadata"]) == Path(keras_path).with_suffix(".tflite.json")
    sm = exported["stylegan2_32"]["artefacts"]
    assert (Path(sm["savedmodel"]["paths"]["generator"]) / "ganforge_export.json").is_file()
    root = Path(keras_path).parent
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")]  # no staging folders or temp files left
    style = read_metadata(sm["onnx"]["paths"]["mapping"])
    assert style["part"] == "mapping" and style["style"]["num_ws"] == exported["stylegan2_32"]["G"].num_ws
    assert style["inputs"] == {"z": [None, 16], "psi": [None, 1]}


# every family at every resolution it supports: the Keras mirror alone, on untrained generators whose BatchNorm
# statistics, biases, noise strengths and w_avg are randomised (the trained runs above cover two sizes each)
MIRROR_CASES = [(name, res) for name in MODELS.names() for res in MODELS.get(name).resolutions]


@torch.no_grad()
def _randomize(G: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in G.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.3, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    for n, p in G.named_parameters():
        if n.endswith((".bias", "noise_strength", "gamma.weight", "beta.weight")):
            p.normal_(0, 0.2, generator=g)
    for n, b in G.named_buffers():
        if n.endswith("w_avg"):
            b.normal_(0, 0.5, generator=g)


@pytest.mark.parametrize("name,res", MIRROR_CASES)
def test_keras_mirror_every_resolution(name, res):

    from ganforge.tf.export import mirrors
    from ganforge.tf.export.from_torch import numpy_weights

    conditional = res != 32  # the conditional path at every size but 32
    nf = ["model.nf=16", "model.nf_max=16"] if name == "progan" else ["model.nf=2", "model.nf_max=8"]  # see GROW
    ov = [f"model.name={name}", f"data.resolution={res}", "data.channels=3", *nf, "model.hidden=8", "model.z_dim=8",
          "model.mapping_layers=2"]
    if conditional:
        ov += ["model.conditional=true", "model.num_labels=3", "model.label_kind=attributes"]
    torch.manual_seed(0)
    G = build_generator(load_config(None, ov)).eval()
    _randomize(G)
    feeds = _feeds(G, "attributes")
    model = mirrors.build(name, numpy_weights(G), {"z_dim": 8, "resolution": res, "channels": 3,
                                                     "num_labels": 3 if conditional else None})
    inputs = [feeds[k] for k in ("z", "labels", "psi") if k in feeds]
    got = model(inputs if len(inputs) > 1 else inputs[0]).numpy().transpose(0, 3, 1, 2)
    ref = torch_images(G, feeds)
    assert got.shape == ref.shape == (16, 3, res, res)
    assert np.abs(got - ref).max() <= TOL
    if name == "stylegan2":  # a different w for every layer: each must reach its own layer
        ws = torch.randn(4, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(2))
        got = model.get_layer("synthesis")(ws.numpy()).numpy().transpose(0, 3, 1, 2)
        with torch.no_grad():
            ref = G.synthesis(ws, noise_mode="const").clamp(-1, 1).numpy()
        assert np.abs(got - ref).max() <= TOL


# --- the command line and bad input ---------------------------------------------------------------------------------
def test_cli_export_overwrite_and_no_ema(runs, tmp_path, capsys):
    out = tmp_path / "g.keras"
    assert main(["export", str(runs["dcgan32"]), "--format", "keras", "--out", str(out), "--no-ema"]) == 0
    printed = capsys.readouterr().out
    assert f"generator: {out}" in printed and "max abs difference from PyTorch" in printed
    meta = read_metadata(out)
    assert meta["generator"] == "G" and meta["step"] == 3
    import keras

    G, _ = load_generator(runs["dcgan32"], ema=False)
    G_ema, _ = load_generator(runs["dcgan32"])
    feeds = {"z": seed_latents(G, [0, 1]).numpy()}
    got = keras.saving.load_model(out)(feeds["z"]).numpy().transpose(0, 3, 1, 2)
    err_g, err_ema = (float(np.abs(got - torch_images(g, feeds)).max()) for g in (G, G_ema))
    assert err_g <= TOL and err_ema > 100 * err_g  # it is the raw G, not G_ema

    before = out.read_bytes()
    assert main(["export", str(runs["dcgan32"]), "--format", "keras", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists" in err and "--overwrite" in err
    assert out.read_bytes() == before  # untouched
    assert main(["export", str(runs["dcgan32"]), "--format", "keras", "--out", str(out), "--overwrite"]) == 0
    assert read_metadata(out)["generator"] == "G_ema"


@pytest.mark.slow
def test_cli_exports_tflite_and_savedmodel_of_a_chosen_checkpoint(runs, tmp_path, capsys):
    """`ganforge export --format tflite|savedmodel --checkpoint FILE --no-ema`: the artefact is that checkpoint's G
    (not the newest one's), and it draws the same images as PyTorch when run by TensorFlow."""
    import shutil

    import tensorflow as tf

    from ganforge.training.launch import train

    run = tmp_path / "run"
    shutil.copytree(runs["dcgan32"], run)
    train(None, ["train.steps=5"], resume=run, data=_data(*RUNS["dcgan32"][2]), quiet=True)
    old = run / "checkpoints" / "step-00000003.safetensors"
    G3, G5 = load_generator(run, checkpoint=old, ema=False)[0], load_generator(run, ema=False)[0]
    feeds = {"z": seed_latents(G3, [0, 1, 2]).numpy()}
    want, newest = torch_images(G3, feeds), torch_images(G5, feeds)
    apart = float(np.abs(want - newest).max())  # a tiny model's outputs are small: judge the error against this
    assert apart > 0.1 * np.abs(want).max()
    got = {}
    for fmt, out in (("tflite", tmp_path / "g.tflite"), ("savedmodel", tmp_path / "sm")):
        assert main(["export", str(run), "--format", fmt, "--out", str(out), "--checkpoint", str(old), "--no-ema"]) == 0
        assert f"generator: {out}" in capsys.readouterr().out
        meta = read_metadata(out)
        assert (meta["step"], meta["generator"]) == (3, "G")
    runner = tf.lite.Interpreter(model_path=str(tmp_path / "g.tflite")).get_signature_runner("serving_default")
    got["tflite"] = list(runner(**feeds).values())[0]
    sig = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"]
    got["savedmodel"] = list(sig(z=tf.constant(feeds["z"])).values())[0].numpy()
    for fmt, nhwc in got.items():
        assert np.abs(nhwc.transpose(0, 3, 1, 2) - want).max() <= min(TOL, 0.01 * apart), fmt


@pytest.mark.slow
def test_savedmodel_overwrite_swaps_the_whole_folder(runs, tmp_path):
    out = tmp_path / "sm"
    export(runs["dcgan32"], "savedmodel", out)
    (out / "stale.txt").write_text("from the old export")
    with pytest.raises(UserError, match="already exists"):
        export(runs["dcgan32"], "savedmodel", out)
    export(runs["dcgan32"], "savedmodel", out, ema=False, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / "saved_model.pb").is_file()
    assert read_metadata(out)["generator"] == "G"
    assert [p.name for p in tmp_path.iterdir()] == ["sm"]  # the old folder and the staging folder are gone


def _fails(argv: list[str], capsys, *needles: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ganforge: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err


def test_bad_input_is_one_line_and_exit_2(runs, tmp_path, capsys, monkeypatch):
    run = str(runs["dcgan32"])
    _fails(["export", run, "--format", "pb", "--out", str(tmp_path / "x")], capsys, "unknown export format", "onnx")
    _fails(["export", run, "--format", "keras", "--out", str(tmp_path / "g.h5")], capsys, ".keras")
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    _fails(["export", run, "--format", "savedmodel", "--out", str(folder), "--overwrite"], capsys, "not a SavedModel")
    assert (folder / "notes.txt").read_text() == "mine"
    _fails(
        ["export", str(tmp_path), "--format", "onnx", "--out", str(tmp_path / "g.onnx")], capsys, "not a ganforge run"
    )
    empty = tmp_path / "fresh-run"  # a run directory before its first checkpoint
    empty.mkdir()
    (empty / "checkpoints").mkdir()
    (empty / "config.yaml").write_text((runs["dcgan32"] / "config.yaml").read_text())
    _fails(
        ["export", str(empty), "--format", "onnx", "--out", str(tmp_path / "g.onnx")], capsys, "no intact checkpoint"
    )
    for module, fmt, extra in [("tensorflow", "tflite", "ganforge[tf]"), ("onnxruntime", "onnx", "ganforge[onnx]")]:
        with monkeypatch.context() as m:
            m.setitem(sys.modules, module, None)  # as if the extra were not installed
            _fails(["export", run, "--format", fmt, "--out", str(tmp_path / f"g.{fmt}")], capsys, module, extra)
    assert not list(tmp_path.glob("g.*"))  # nothing was written by any failed export


def test_growing_progan_is_refused(runs, tmp_path):
    """Only the finished network is exported: a checkpoint from the middle of growing is a one-line error."""
    from safetensors.torch import load_file, save_file

    ck = sorted((runs["progan32"] / "checkpoints").glob("*.safetensors"))[-1]
    tensors = load_file(str(ck))
    for k in tensors:
        if k.endswith("stage_level"):
            tensors[k] = torch.tensor(1.0)
    mid = tmp_path / "mid-growth.safetensors"
    save_file(tensors, str(mid))
    with pytest.raises(UserError, match="still growing.*8x8"):
        export(runs["progan32"], "onnx", tmp_path / "g.onnx", checkpoint=mid)
