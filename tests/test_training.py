from __future__ import annotations

import json
import os
import pickle
import signal

import pytest
import torch
from conftest import FAST, synthetic_data
from safetensors.torch import load_file

from ganforge import config
from ganforge.errors import TrainingDiverged, UserError
from ganforge.generate import load_generator, sample, sample_to_files
from ganforge.runs import checkpoint as ckpt
from ganforge.training.launch import train
from ganforge.training.trainer import Trainer


def _g_tensors(run_dir, step):
    t = load_file(str(run_dir / "checkpoints" / f"step-{step:08d}.safetensors"))
    return {k: v for k, v in t.items() if k.startswith("G.")}


@pytest.mark.cuda
def test_short_run_writes_every_artefact(tmp_path, data32, test_device):
    run, summary = train(
        "fashion_mnist_dcgan", FAST + ["train.steps=20", f"device={test_device}"], run_dir=tmp_path / "r", data=data32,
        quiet=True,
    )
    p = run.path
    assert summary["step"] == 20
    assert (p / "config.yaml").is_file() and "dcgan" in (p / "config.yaml").read_text()
    recs = [json.loads(line) for line in (p / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [5, 10, 15, 20]
    assert all({"loss_d", "loss_g", "img_per_s", "images_seen"} <= set(r) for r in recs)
    assert sorted(x.name for x in (p / "samples").iterdir()) == ["step-00000010.png", "step-00000020.png"]
    assert (p / "loss_curves.png").stat().st_size > 1000
    assert any((p / "tb").iterdir())
    names = sorted(x.name for x in (p / "checkpoints").iterdir())
    assert names == [
        "step-00000010.json",
        "step-00000010.safetensors",
        "step-00000020.json",
        "step-00000020.safetensors",
    ]
    tensors = load_file(str(p / "checkpoints" / "step-00000020.safetensors"))
    prefixes = {k.split(".")[0] for k in tensors}
    assert {"G", "D", "G_ema", "opt_G", "opt_D"} <= prefixes
    meta = json.loads((p / "checkpoints" / "step-00000020.json").read_text())
    assert meta["step"] == 20 and meta["config"]["train"]["steps"] == 20 and "torch" in meta["rng"]
    assert meta["sha256"] == ckpt.sha256_file(p / "checkpoints" / "step-00000020.safetensors")
    from PIL import Image

    im = Image.open(p / "samples" / "step-00000020.png")
    assert im.mode == "L" and im.size == (8 * 34 + 2, 8 * 34 + 2)  # 64 images of 32 px, 2 px padding


@pytest.mark.cuda
@pytest.mark.parametrize("model", ["dcgan", "mlp"])
def test_resume_is_bitwise_exact(tmp_path, model, test_device):
    """40 steps straight == 20 steps, stop, resume to 40 (with dropout, flips and an epoch boundary)."""
    data = synthetic_data(n=300)
    common = FAST + [f"model.name={model}", "model.d_dropout=0.2", "data.hflip=true", "model.hidden=32",
                     f"device={test_device}"]
    train("fashion_mnist_dcgan", common + ["train.steps=40"], run_dir=tmp_path / "a", data=data, quiet=True)
    train("fashion_mnist_dcgan", common + ["train.steps=20"], run_dir=tmp_path / "b", data=data, quiet=True)
    train(None, ["train.steps=40"], resume=tmp_path / "b", data=data, quiet=True)
    a, b = _g_tensors(tmp_path / "a", 40), _g_tensors(tmp_path / "b", 40)
    assert a.keys() == b.keys() and len(a) > 4
    for k in a:
        assert torch.equal(a[k], b[k]), k
    full_a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000040.safetensors"))
    full_b = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000040.safetensors"))
    for k in full_a:  # D, EMA and optimizer state too
        assert torch.equal(full_a[k], full_b[k]), k
    steps_b = [json.loads(x)["step"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert steps_b == list(range(5, 45, 5))


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path, data32):
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=20"], run_dir=tmp_path / "r", data=data32, quiet=True)
    # a killed process had logged past its last checkpoint (step 20)
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 25, "loss_d": 0, "loss_g": 0}) + "\n" + '{"step": 30, "lo')
    train(None, ["train.steps=30"], resume=run.path, data=data32, quiet=True)
    steps = [json.loads(x)["step"] for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [5, 10, 15, 20, 25, 30]


def test_resume_errors(tmp_path, data32):
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=10"], run_dir=tmp_path / "r", data=data32, quiet=True)
    with pytest.raises(UserError, match="already at step 10"):
        train(None, [], resume=run.path, data=data32, quiet=True)
    with pytest.raises(UserError, match="not a ganforge run directory"):
        train(None, [], resume=tmp_path, data=data32, quiet=True)
    with pytest.raises(UserError, match="already holds a run"):
        train("fashion_mnist_dcgan", FAST, run_dir=run.path, data=data32, quiet=True)
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "thesis.tex").write_text("precious")
    with pytest.raises(UserError, match="not empty"):
        train("fashion_mnist_dcgan", FAST, run_dir=tmp_path / "user", data=data32, quiet=True)
    assert (tmp_path / "user" / "thesis.tex").read_text() == "precious"


def test_resume_falls_back_to_newest_intact_checkpoint(tmp_path, data32, capsys):
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=20"], run_dir=tmp_path / "r", data=data32, quiet=True)
    newest = run.path / "checkpoints" / "step-00000020.safetensors"
    raw = bytearray(newest.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    newest.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupted or truncated"):
        ckpt.read_checkpoint(newest)
    found, warnings = ckpt.latest_checkpoint(run.path / "checkpoints")
    assert found.step == 10 and len(warnings) == 1
    _, summary = train(None, ["train.steps=30"], resume=run.path, data=data32, quiet=True)
    assert summary["step"] == 30
    assert "newest intact checkpoint, step 10" in capsys.readouterr().err


def test_keep_last_k_checkpoints(tmp_path, data32):
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=50", "train.checkpoint_every=10", "train.keep_checkpoints=2"],
                   run_dir=tmp_path / "r", data=data32, quiet=True)
    assert [s for s, _ in ckpt.list_checkpoints(run.path / "checkpoints")] == [40, 50]
    assert not list((run.path / "checkpoints").glob(".*tmp"))


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, data32, monkeypatch):
    real_step = Trainer.train_step

    def poisoned(self):
        out = real_step(self)
        if self.step >= 13:
            out["loss_d"] = out["loss_d"] * float("nan")
        return out

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(TrainingDiverged, match="diverged at step 13.*step-00000010.safetensors"):
        train("fashion_mnist_dcgan", FAST + ["train.steps=40"], run_dir=tmp_path / "r", data=data32, quiet=True)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "r" / "checkpoints")] == [10]
    assert "diverged" in (tmp_path / "r" / "train.log").read_text()


def test_sigterm_saves_a_checkpoint_and_returns(tmp_path, data32, monkeypatch):
    real_step = Trainer.train_step

    def step_then_signal(self):
        out = real_step(self)
        if self.step == 7:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    before = signal.getsignal(signal.SIGTERM)
    run, summary = train(
        "fashion_mnist_dcgan", FAST + ["train.steps=100"], run_dir=tmp_path / "r", data=data32, quiet=True
    )
    assert summary["stopped_by"] == "SIGTERM" and summary["step"] == 7
    assert [s for s, _ in ckpt.list_checkpoints(run.path / "checkpoints")] == [7]
    assert signal.getsignal(signal.SIGTERM) is before  # the handler from before training is back
    # and the run resumes from there
    monkeypatch.setattr(Trainer, "train_step", real_step)
    _, s2 = train(None, ["train.steps=12"], resume=run.path, data=data32, quiet=True)
    assert s2["step"] == 12


def test_init_from_finetunes_with_fresh_optimizer(tmp_path, data32):
    """G, D and G_ema come from the source run; the optimizers (Adam moments, step counters) and the step start
    fresh."""
    src, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=10"], run_dir=tmp_path / "src", data=data32, quiet=True)
    c = ckpt.read_checkpoint(src.path / "checkpoints" / "step-00000010.safetensors")
    tr = Trainer(config.load_config("fashion_mnist_dcgan", FAST), data=data32, quiet=True)
    tr.init_from(c)
    for prefix, module in (("G", tr.G), ("D", tr.D), ("G_ema", tr.ema.model)):
        for k, v in module.state_dict().items():
            assert torch.equal(v, c.tensors[f"{prefix}.{k}"]), f"{prefix}.{k}"
    assert not tr.opt_G.state and not tr.opt_D.state  # no Adam moments carried over
    run, summary = train("fashion_mnist_dcgan", FAST + ["train.steps=1", "train.lr_g=0", "train.lr_d=0"],
                         run_dir=tmp_path / "ft", init_from=src.path, data=data32, quiet=True)
    a, b = (load_file(str(r / "checkpoints" / f"step-{s:08d}.safetensors")) for r, s in ((src.path, 10), (run.path, 1)))
    weights = [k for k in a if k.split(".")[0] in ("G", "D") and k.endswith("weight")]
    assert len(weights) > 4 and all(torch.equal(a[k], b[k]) for k in weights)  # lr 0: exactly the source's
    steps = {k: v.item() for k, v in b.items() if k.startswith("opt_") and k.endswith(".step")}
    assert steps and set(steps.values()) == {1.0} and {a[k].item() for k in steps} == {10.0}  # counters restart
    assert summary["step"] == 1
    with pytest.raises(UserError, match="does not fit this model"):
        train("fashion_mnist_dcgan", FAST + ["model.nf=16", "train.steps=1"], run_dir=tmp_path / "ft2",
              init_from=src.path, data=data32, quiet=True)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pt"
    with open(bad, "wb") as f:
        pickle.dump({"G.main.0.weight": Evil()}, f)
    with pytest.raises(UserError, match="refused to load"):
        ckpt.read_checkpoint(bad)
    assert not marker.exists()
    # a weights-only torch file of plain tensors is fine
    good = tmp_path / "good.pt"
    torch.save({"G.x": torch.ones(2)}, good)
    assert torch.equal(ckpt.read_checkpoint(good).tensors["G.x"], torch.ones(2))


def test_sample_api_is_deterministic(tmp_path, data32):
    run, _ = train("fashion_mnist_dcgan", FAST + ["train.steps=10"], run_dir=tmp_path / "r", data=data32, quiet=True)
    G, cfg = load_generator(run.path)
    a, b = sample(G, 10, seed=3, batch_size=4), sample(G, 10, seed=3, batch_size=10)
    assert a.shape == (10, 1, 32, 32) and torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a, sample(G, 10, seed=4))
    out = sample_to_files(run.path, n=5, out_dir=tmp_path / "imgs", grid=tmp_path / "g.png")
    assert len(out["files"]) == 5 and (tmp_path / "g.png").is_file()


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_disk_full_keeps_previous_checkpoint(tmp_path, data32, monkeypatch, policy):
    """ENOSPC while writing the step-20 checkpoint: step 10 stays intact, nothing half-written remains."""
    import errno

    from ganforge.runs import checkpoint as ck

    real_save = ck.save_file
    calls = {"n": 0}

    def full_disk(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] >= 2:  # from the second checkpoint (step 20) on, the disk is full mid-write
            with open(filename, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, metadata=metadata)

    monkeypatch.setattr(ck, "save_file", full_disk)
    run, summary = train("fashion_mnist_dcgan", FAST + ["train.steps=30", f"train.on_disk_full={policy}"],
                         run_dir=tmp_path / "r", data=data32, quiet=True)
    steps = [s for s, _ in ck.list_checkpoints(run.path / "checkpoints")]
    if policy == "stop":
        assert summary["stopped_by"] == "disk full" and summary["step"] == 20
        assert steps == [10]
    else:
        assert summary["stopped_by"] is None and summary["step"] == 30 and steps == [10]
    assert not [p for p in (run.path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert not (run.path / "checkpoints" / "step-00000020.safetensors").exists()
    ck.read_checkpoint(run.path / "checkpoints" / "step-00000010.safetensors")  # intact, hash verified
    assert "disk full" in (run.path / "train.log").read_text()


def test_training_never_imports_tensorflow(tmp_path):
    """TensorBoard would import TensorFlow (installed by the tf extra) into every training process."""
    import subprocess
    import sys

    code = ("import sys; from ganforge.runs.rundir import RunDir; from pathlib import Path; "
            f"r = RunDir(Path({str(tmp_path / 'r')!r})); r.tb.add_scalar('x', 1.0, 0); r.tb.flush(); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert list((tmp_path / "r" / "tb").glob("events.out.tfevents.*"))


@pytest.mark.slow  # two 4-step trainings: ~20-45 s on a busy machine
def test_channels_last_changes_cpu_results_only_by_float_round_off(tmp_path, data32):
    """`train.channels_last` (on by default) is a memory layout, not a different computation: it really is used
    (the trainer's conv weights are channels-last), and 4 steps with and without it agree to float32 round-off.
    Not bitwise: oneDNN sums convolutions in another order for channels-last tensors (~1e-6 relative here)."""
    base = FAST + ["train.steps=4", "train.checkpoint_every=4", "train.tensorboard=false"]
    tr = Trainer(config.load_config("fashion_mnist_dcgan", base), data=data32, quiet=True)
    conv = next(p for p in tr.D.parameters() if p.dim() == 4)
    assert tr.channels_last and conv.is_contiguous(memory_format=torch.channels_last)
    t = {}
    for on in ("true", "false"):
        train("fashion_mnist_dcgan", base + [f"train.channels_last={on}"], run_dir=tmp_path / on, data=data32,
              quiet=True)
        t[on] = load_file(str(tmp_path / on / "checkpoints" / "step-00000004.safetensors"))
    assert t["true"].keys() == t["false"].keys()
    for k, a in t["true"].items():
        b = t["false"][k]
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6 * float(b.abs().max()) + 1e-12), k
