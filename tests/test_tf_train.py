"""`backend: tensorflow`: the mlp and dcgan families trained with Keras 3 on TensorFlow (ganforge.tf.train.trainer).

The strongest check is the checkpoint: `generate.load_generator` loads a TensorFlow run's weights into the
torch generator, which then draws the same images as the trained Keras generator (<= 1e-4). Also: the run
directory is complete, `ganforge sample/export` read it, the export's Keras mirror draws what the trained Keras
generator draws (both rooms build one graph per family), resume is bitwise, the losses, gradient penalty and
EMA match torch's on the same inputs, and unsupported configs are one-line errors.

Tiny runs (nf 4-8, 32px, batch 16, a few steps) are trained once per module; TensorFlow is imported once.
"""

from __future__ import annotations

import json
import math
import os
import types
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import torch
from conftest import FAST, need_extra, png_folder, synthetic_data

need_extra("tensorflow", "tf")

import tensorflow as tf  # noqa: E402

from ganforge import config  # noqa: E402
from ganforge.cli import main  # noqa: E402
from ganforge.data.from_config import resolve_labels  # noqa: E402
from ganforge.data.pipeline import seeded_generator  # noqa: E402
from ganforge.errors import UserError  # noqa: E402
from ganforge.generate import load_generator  # noqa: E402
from ganforge.losses import LOSSES, build_loss  # noqa: E402
from ganforge.models import build_discriminator, build_generator  # noqa: E402
from ganforge.regularizers import gradient_penalty  # noqa: E402
from ganforge.runs import checkpoint as ckpt  # noqa: E402
from ganforge.runs.rundir import RunDir  # noqa: E402
from ganforge.tf.train import losses as tf_losses  # noqa: E402
from ganforge.tf.train.models import keras_discriminator, keras_generator, load_torch_state, torch_state  # noqa: E402
from ganforge.tf.train.trainer import TF_LOSSES, KerasEMA, TFTrainer, check_config, ema_decay  # noqa: E402
from ganforge.training.ema import EMA  # noqa: E402
from ganforge.training.launch import train  # noqa: E402
from ganforge.training.loop import Loop  # noqa: E402

TOL = 1e-4
TINY = FAST + ["train.log_every=2", "train.sample_every=3", "train.checkpoint_every=3", "train.ema_decay=0.5"]
ATTRS = ["Male", "Smiling", "Eyeglasses"]


def tf_config(preset: str, overrides: list[str]) -> dict:
    """A config that trains on TensorFlow, through the schema's `backend` key (a validated override)."""
    return config.load_config(preset, [*overrides, "backend=tensorflow"])


def attribute_data(n: int = 64) -> types.SimpleNamespace:
    d = synthetic_data(n=n)
    rng = np.random.default_rng(1)
    return types.SimpleNamespace(images=d.images, labels=rng.integers(0, 2, (n, len(ATTRS))).astype(np.float32),
                                 classes=list(ATTRS), label_kind="attributes")


# name: (preset, overrides, data)
RUNS = {
    "dcgan": ("fashion_mnist_dcgan", ["model.nf=8", "train.steps=6"], lambda: synthetic_data(n=64)),
    "cgan": ("mnist_cgan", ["model.nf=4", "train.steps=4"], lambda: synthetic_data(n=64, labels=True)),
    "mlp_attr": ("fashion_mnist_mlp", ["model.hidden=8", "data.resolution=32", "model.conditional=true",
                                       "train.steps=4"], attribute_data),
    "wgan_gp": ("fashion_mnist_wgan_gp", ["model.nf=4", "train.steps=4", "train.d_steps=2"], lambda: synthetic_data(n=64)),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, TFTrainer, dict]]:
    """Each run trained once, as the launcher does it: resolved labels, a new run dir, the loop around TFTrainer."""
    out = {}
    for name, (preset, over, make) in RUNS.items():
        data = make()
        cfg = resolve_labels(tf_config(preset, TINY + over), data)
        run = RunDir.create(tmp_path_factory.mktemp("tf") / name, cfg)
        try:
            trainer = TFTrainer(cfg, run, data=data, quiet=True)
            summary = Loop(trainer).run_training()
        finally:
            run.close()
        out[name] = (run.path, trainer, summary)
    return out


def keras_images(model, z: torch.Tensor, labels: torch.Tensor | None, num_labels: int | None) -> np.ndarray:
    """NCHW images of a Keras generator, labels as the torch model takes them (indices or attribute rows)."""
    y = None
    if labels is not None:
        y = np.eye(num_labels, dtype=np.float32)[labels.numpy()] if labels.dim() == 1 else labels.numpy()
    return (
        model(tf.constant(z.numpy()), None if y is None else tf.constant(y), training=False)
        .numpy()
        .transpose(0, 3, 1, 2)
    )


def test_run_directory_is_complete(runs):
    path, trainer, summary = runs["dcgan"]
    assert summary["step"] == 6 and summary["stopped_by"] is None and math.isfinite(summary["loss_d"])
    assert config.safe_yaml((path / "config.yaml").read_text(), "x")["backend"] == "tensorflow"
    recs = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [2, 4, 6]
    assert all(set(r) == {"step", "images_seen", "loss_d", "loss_g", "img_per_s", "time"} for r in recs)
    assert recs[-1]["images_seen"] == 6 * 16
    assert sorted(p.name for p in (path / "samples").iterdir()) == ["step-00000003.png", "step-00000006.png"]
    assert (path / "loss_curves.png").stat().st_size > 1000
    assert list((path / "tb").glob("events.out.tfevents.*"))
    c = RunDir.open(path).latest()
    assert c is not None and c.step == 6
    assert c.meta["backend"] == "tensorflow" and c.meta["optim"]["opt_G"]["format"] == "keras-adam"
    assert c.meta["optim"]["opt_G"]["iterations"] == 6 and c.meta["d_iter"] == 6
    # the torch layout, names and dtypes: exactly the torch modules' state dicts (BatchNorm buffers included)
    G, D = build_generator(c.config), build_discriminator(c.config)
    for prefix, module in (("G", G), ("G_ema", G), ("D", D)):
        sd = module.state_dict()
        got = {k[len(prefix) + 1 :]: v for k, v in c.tensors.items() if k.startswith(prefix + ".")}
        assert set(got) == set(sd), prefix
        assert all(got[k].shape == sd[k].shape and got[k].dtype == sd[k].dtype for k in sd), prefix
    assert int(c.tensors["G.norms.0.norm.num_batches_tracked"]) == 6  # one G forward per D update
    assert int(c.tensors["D.features.3.num_batches_tracked"]) == 3 * 6  # D on real, fake, and in the G step
    for prefix, module in (("opt_G", G), ("opt_D", D)):  # Adam moments per parameter, torch names and layout
        for name, p in module.named_parameters():
            assert c.tensors[f"{prefix}.{name}.exp_avg"].shape == p.shape
            assert c.tensors[f"{prefix}.{name}.exp_avg_sq"].min() >= 0
    # the sample grid is the sampling generator on the fixed noise of a torch run of this seed
    assert torch.equal(trainer.fixed_z, torch.randn(64, 100, generator=seeded_generator(0, -1)))


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("ema", [True, False])
def test_torch_generator_loads_the_tf_weights(runs, name, ema):
    """load_generator (the torch G every command uses) draws what the trained Keras generator draws (with G_ema's
    BatchNorm statistics as trained: standing statistics would recompute them)."""
    path, trainer, _ = runs[name]
    G, cfg = load_generator(path, ema=ema, standing_stats=False)
    keras_G = trainer.keras_sampler if ema else trainer.G
    z = torch.randn(16, cfg["model"]["z_dim"], generator=seeded_generator(5, 0))
    labels = None
    if cfg["model"]["conditional"]:
        labels = (torch.arange(16) % cfg["model"]["num_labels"] if cfg["model"]["label_kind"] == "class"
                  else torch.tensor(np.random.default_rng(2).integers(0, 2, (16, len(ATTRS))), dtype=torch.float32))
    with torch.no_grad():
        want = G(z, labels).numpy()
    got = keras_images(keras_G, z, labels, cfg["model"]["num_labels"])
    # small nets after a few steps draw faint images: the error must also be small relative to them
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= min(TOL, 1e-4 * scale), (np.abs(got - want).max(), scale)
    assert scale > 1e-4 and want.std() > 1e-2 * scale  # not zero, not flat
    if ema:  # G_ema really is an average (decay 0.5), not a copy of G
        w, w_ema = torch_state(trainer.G), torch_state(trainer.ema.model)
        assert all(not np.array_equal(w[k], w_ema[k]) for k in w if k.endswith("weight"))


@pytest.mark.parametrize("name", list(RUNS))
def test_export_mirror_draws_what_the_trained_keras_generator_draws(runs, name):
    """The two rooms build one graph per family (ganforge.tf.generators): the Keras mirror `ganforge export` builds
    from a TensorFlow run (built-in layers, fixed weights) draws what the Keras G trained in that run draws."""
    from ganforge.tf.export import mirrors
    from ganforge.tf.export.from_torch import numpy_weights

    path, trainer, _ = runs[name]
    G, cfg = load_generator(path, ema=False)
    info = {"z_dim": G.z_dim, "resolution": G.resolution, "channels": G.channels, "num_labels": G.num_labels}
    mirror = mirrors.build(cfg["model"]["name"], numpy_weights(G), info)
    z = tf.random.stateless_normal((16, G.z_dim), seed=(3, 0))
    y = None
    if G.num_labels:  # one-hot rows for classes, random multi-hot rows for attributes
        rows = np.eye(G.num_labels)[np.arange(16) % G.num_labels] if cfg["model"]["label_kind"] == "class" else \
            np.random.default_rng(4).integers(0, 2, (16, G.num_labels))
        y = tf.constant(rows, tf.float32)
    want = trainer.G(z, y, training=False).numpy()
    got = mirror(z if y is None else [z, y]).numpy()
    scale = np.abs(want).max()
    assert got.shape == want.shape == (16, G.resolution, G.resolution, G.channels)
    assert np.abs(got - want).max() <= 1e-5 * max(scale, 1e-2), (np.abs(got - want).max(), scale)
    assert scale > 1e-4 and want.std() > 1e-2 * scale  # not zero, not flat


def test_conditional_dcgan_follows_its_labels(runs):
    path, trainer, _ = runs["cgan"]
    G, cfg = load_generator(path)
    assert cfg["model"]["label_kind"] == "class" and cfg["model"]["num_labels"] == 10
    z = torch.randn(1, cfg["model"]["z_dim"], generator=seeded_generator(1, 0)).expand(10, -1)
    with torch.no_grad():
        x = G(z, torch.arange(10)).numpy()
    assert np.abs(x[0] - x[1]).max() > 1e-3  # one z, two classes, two images
    keys = {k for k in ckpt.read_checkpoint(RunDir.open(path).latest_checkpoint_path()).tensors}
    assert "G.norms.0.norm.gamma.weight" in keys and "D.projection.embed.proj.weight" in keys


def test_cli_sample_and_export_read_a_tf_run(runs, tmp_path):
    path, trainer, _ = runs["cgan"]
    assert main(["sample", str(path), "--n", "4", "--class", "3", "--out", str(tmp_path / "png")]) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 4
    out = tmp_path / "g.keras"
    assert main(["export", str(path), "--format", "keras", "--out", str(out)]) == 0
    import keras

    exported = keras.saving.load_model(out)
    z = np.random.default_rng(0).standard_normal((8, 100)).astype(np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(8)]
    # the export carries what ganforge samples: G_ema with standing statistics (test_torch_generator_loads_the_tf_
    # weights checks the Keras weights themselves, without them)
    G, _ = load_generator(path)
    with torch.no_grad():
        want = G(torch.from_numpy(z), torch.arange(8)).numpy().transpose(0, 2, 3, 1)
    assert np.abs(exported([z, y]).numpy() - want).max() <= TOL


@pytest.mark.parametrize("preset,over,labels", [
    ("fashion_mnist_wgan_gp", ["model.nf=4", "train.d_steps=2", "data.hflip=true"], False),  # GP, d_steps, flips
    ("fashion_mnist_mlp", ["model.hidden=8", "data.resolution=32", "model.conditional=true"], True),  # dropout
])
def test_resume_is_bitwise(tmp_path, preset, over, labels):
    """10 steps == 5 steps, then resume to 10: every tensor of the step-10 checkpoint (weights, BatchNorm
    statistics, G_ema, Adam moments) and every logged loss are identical."""
    data = synthetic_data(n=64, labels=labels)
    base = TINY + over + ["train.checkpoint_every=5", "train.ema_decay=0.9"]
    train(tf_config(preset, base + ["train.steps=10"]), run_dir=tmp_path / "a", data=data, quiet=True)
    train(tf_config(preset, base + ["train.steps=5"]), run_dir=tmp_path / "b", data=data, quiet=True)
    _, summary = train(None, ["train.steps=10"], resume=tmp_path / "b", data=data, quiet=True)
    assert summary["step"] == 10
    a, b = (ckpt.read_checkpoint(tmp_path / r / "checkpoints" / "step-00000010.safetensors") for r in "ab")
    assert set(a.tensors) == set(b.tensors)
    assert [k for k in a.tensors if not torch.equal(a.tensors[k], b.tensors[k])] == []
    assert {k: a.meta[k] for k in ("d_iter", "images_seen", "data")} == {k: b.meta[k] for k in ("d_iter", "images_seen",
                                                                                             "data")}
    ma, mb = ({r["step"]: (r["loss_d"], r["loss_g"]) for r in RunDir(tmp_path / x).read_metrics()} for x in "ab")
    assert set(ma) == {2, 4, 6, 8, 10} and set(mb) == set(ma) | {5}  # the 5-step run also logged its last step
    assert {k: mb[k] for k in ma} == ma
    assert "resumed from step-00000005.safetensors" in (tmp_path / "b" / "train.log").read_text()


@pytest.mark.parametrize("loss", ["nsgan", "lsgan", "hinge", "wgan-gp"])
def test_each_loss_trains_finitely(loss):
    over = ["model.nf=4", f"loss.name={loss}"] + (["model.d_norm=none"] if loss == "wgan-gp" else [])
    tr = TFTrainer(tf_config("fashion_mnist_dcgan", TINY + over), None, data=synthetic_data(n=64), quiet=True)
    before = torch_state(tr.G)
    outs = [tr.train_step() for _ in range(3)]
    assert all(np.isfinite(v) for o in outs for v in o.values())
    assert ("gp" in outs[0]) == (loss == "wgan-gp")
    after = torch_state(tr.G)
    assert all(not np.array_equal(before[k], after[k]) for k in ("convs.0.weight", "to_img.weight"))


def test_losses_match_torch():
    assert set(TF_LOSSES) == set(tf_losses.LOSSES) and set(TF_LOSSES) <= set(LOSSES.names())
    rng = np.random.default_rng(0)
    r, f = (rng.standard_normal(32).astype(np.float32) * 3 for _ in range(2))
    for name in TF_LOSSES:
        d, g = tf_losses.LOSSES[name]
        ref = build_loss(name)
        want_d = ref.d_loss(torch.from_numpy(r), torch.from_numpy(f)).item()
        want_g = ref.g_loss(torch.from_numpy(f)).item()
        assert float(d(tf.constant(r), tf.constant(f))) == pytest.approx(want_d, rel=1e-6, abs=1e-6), name
        assert float(g(tf.constant(f))) == pytest.approx(want_g, rel=1e-6, abs=1e-6), name


def test_minibatch_stddev_discriminator_matches_torch():
    """model.d_mbstd in the Keras twin: the same logits as torch's D (the stddev map over the same strided
    groups), in training and eval mode, for a batch the group divides and one it does not."""
    cfg = config.load_config("fashion_mnist_dcgan", ["model.nf=4", "model.d_mbstd=4"])
    D = build_discriminator(cfg)
    KD = keras_discriminator(D, (32, 32, 1))
    for n, training in ((8, False), (6, False), (8, True)):  # eval first: a training pass moves BN statistics
        x = torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(n)) * 2 - 1
        D.train(training)
        with torch.no_grad():
            want = D(x).numpy()
        got = KD(tf.constant(x.numpy().transpose(0, 2, 3, 1)), training=training).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_gradient_penalty_matches_torch():
    """Value and D-weight gradients of the penalty (a double backward) equal torch's on a conditional critic."""
    cfg = config.load_config("mnist_cgan", ["model.nf=4", "model.d_norm=none"])
    cfg["model"].update(num_labels=10, label_kind="class")
    D = build_discriminator(cfg)
    KD = keras_discriminator(D, (32, 32, 1))
    g = torch.Generator().manual_seed(3)
    real, fake = torch.rand(8, 1, 32, 32, generator=g) * 2 - 1, torch.rand(8, 1, 32, 32, generator=g) * 2 - 1
    labels = torch.arange(8) % 10
    want = gradient_penalty(D, real, fake, labels, seeded_generator(7, 0))
    want.backward()
    eps = torch.rand(8, 1, 1, 1, generator=seeded_generator(7, 0)).numpy().transpose(0, 2, 3, 1)
    nhwc = [tf.constant(x.numpy().transpose(0, 2, 3, 1)) for x in (real, fake)]
    with tf.GradientTape() as tape:
        got = tf_losses.gradient_penalty(KD, *nhwc, tf.one_hot(labels.numpy(), 10), tf.constant(eps), training=True)
    grads = tape.gradient(got, [e.var for e in KD.entries])
    assert float(got) == pytest.approx(want.item(), rel=1e-5)
    from ganforge.tf.layout import to_torch_layout

    for e, gr in zip(KD.entries, grads, strict=True):
        ref = dict(D.named_parameters())[e.key].grad
        if ref is None:  # biases right before the output do not change grad_x D
            assert gr is None or not np.any(gr.numpy()), e.key
            continue
        ref = ref.numpy()
        np.testing.assert_allclose(to_torch_layout(e, gr.numpy()), ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


@pytest.mark.parametrize("step,images,decay,start,kimg", [
    (0, 16, 0.999, 0, None),  # warm-up: decay (1+0)/(10+0) = 0.1, torch's lerp from the end
    (40, 16, 0.999, 0, None),  # warm-up still caps: 41/50
    (3000, 64, 0.999, 0, None),  # the configured decay
    (2, 16, 0.999, 5, None),  # before ema_start: a copy
    (3000, 64, 0.999, 0, 0.5),  # ema_kimg half-life: 0.5 ** (64 / 500)
])
def test_ema_matches_torch(step, images, decay, start, kimg):
    assert ema_decay(step, images, decay, start, kimg) == pytest.approx(
        0.0 if step < start else min(0.5 ** (images / (kimg * 1000)) if kimg else decay, (1 + step) / (10 + step))
    )
    cfg = config.load_config("fashion_mnist_dcgan", ["model.nf=4"])
    torch.manual_seed(0)
    G = build_generator(cfg)
    ema_t = EMA(G, decay, start, kimg)
    ema_k = KerasEMA(keras_generator(G, "E"), keras_generator(G, "S"), decay, start, kimg)
    with torch.no_grad():  # G moves away from G_ema: new weights and BatchNorm statistics
        for t in G.state_dict().values():
            t.add_(torch.randn(t.shape) if t.is_floating_point() else 3)
    load_torch_state(ema_k.source, {k: v.numpy() for k, v in G.state_dict().items()})
    ema_t.update(G, step, images)
    ema_k.update(step, images)
    got = torch_state(ema_k.model)
    for k, v in ema_t.model.state_dict().items():  # tolerance: float32 round-off of O(1) operands
        np.testing.assert_allclose(got[k], v.numpy(), rtol=3e-7, atol=1e-6, err_msg=k)


def test_unsupported_configs_are_one_line_errors(tmp_path):
    for preset in ("fashion_mnist_sngan", "fashion_mnist32_progan", "fashion_mnist32_stylegan2"):
        with pytest.raises(UserError) as e:
            check_config(tf_config(preset, []))
        msg = str(e.value)
        assert "\n" not in msg and "mlp" in msg and "dcgan" in msg and repr(preset.split("_")[-1]) in msg
    with pytest.raises(UserError, match="augment.name=ada is not supported with backend tensorflow"):
        check_config(tf_config("fashion_mnist_dcgan", ["augment.name=ada"]))
    with pytest.raises(UserError, match="model.d_spectral_norm=True"):
        check_config(tf_config("fashion_mnist_dcgan", ["model.d_spectral_norm=true"]))
    with pytest.raises(UserError, match="model.name='sngan'"):  # refused before any data or folder
        train(tf_config("fashion_mnist_sngan", []), run_dir=tmp_path / "r", data=synthetic_data(n=16))
    assert not (tmp_path / "r").exists()


def test_resuming_a_torch_checkpoint_is_refused(runs):
    path, trainer, _ = runs["dcgan"]
    c = RunDir.open(path).latest()
    c.meta = {**c.meta, "backend": "torch"}
    with pytest.raises(UserError, match="written by the torch backend"):
        trainer.load_state(c)


def test_ganforge_train_backend_tensorflow(tmp_path, capsys):
    """Through the CLI, nothing patched: a new run on TensorFlow, a resume that stays on TensorFlow (its optimizer
    counters go on), and the unsupported-family exit 2 before any folder."""
    images = png_folder(tmp_path / "imgs", 32)
    run = tmp_path / "r"
    args = ["model.nf=4", "train.batch_size=16", "train.checkpoint_every=3", f"data.source={images}"]
    assert main(["train", "fashion_mnist_dcgan", *args, "backend=tensorflow", "train.steps=3", "--run-dir", str(run),
                 "--quiet"]) == 0, capsys.readouterr().err
    assert RunDir.open(run).latest().meta["backend"] == "tensorflow"
    assert config.load_config(str(run / "config.yaml"), [])["backend"] == "tensorflow"
    assert main(["train", "--resume", str(run), "train.steps=5", "--quiet"]) == 0, capsys.readouterr().err
    c = RunDir.open(run).latest()
    assert c.meta["step"] == 5 and c.meta["backend"] == "tensorflow" and c.meta["optim"]["opt_G"]["iterations"] == 5
    capsys.readouterr()
    assert main(["train", "fashion_mnist_sngan", "backend=tensorflow", "--run-dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "mlp and dcgan" in err and not (tmp_path / "s").exists()
    # one process only: --nproc is refused before any worker, data or folder
    assert main(["train", "fashion_mnist_dcgan", *args, "backend=tensorflow", "--nproc", "2", "--run-dir",
                 str(tmp_path / "n")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ganforge: error: backend tensorflow trains in one process; leave out --nproc / torchrun"
    assert not (tmp_path / "n").exists()
