"""The objective's parts: chosen from the config, composed by the trainer, checkpointed; EMA in images."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, synthetic_data

from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.losses import PARTS, DStep, Part, Terms, gp_weight
from ganforge.training.ema import EMA, ema_decay
from ganforge.training.loop import Loop
from ganforge.training.objective import Objective
from ganforge.training.trainer import Trainer


def _parts(*over: str) -> list[str]:
    cfg = load_config("fashion_mnist_dcgan", ["model.nf=8", *over])
    from ganforge.models import build_discriminator, build_generator

    return list(Objective.from_config(cfg, build_generator(cfg), build_discriminator(cfg)).parts)


def test_parts_follow_the_config_in_a_fixed_order():
    assert _parts() == []
    assert _parts("loss.name=wgan-gp", "model.d_norm=none") == ["gp"]
    assert _parts("loss.name=wgan-gp", "loss.gp_weight=0", "model.d_norm=none") == []
    assert _parts("augment.name=ada", "loss.drift=0.001", "loss.r1_gamma=1", "loss.gp_weight=5") == [
        "augment", "drift", "gp", "r1"]
    with pytest.raises(UserError, match="loss.pl_weight needs a style-based generator"):
        _parts("loss.pl_weight=2")


def test_gp_default_has_one_owner():
    assert gp_weight(load_config(None, ["loss.name=wgan-gp"])) == 10.0
    assert gp_weight(load_config(None, ["loss.name=hinge"])) == 0.0
    assert gp_weight(load_config(None, ["loss.name=wgan-gp", "loss.gp_weight=3"])) == 3.0


class _Probe(Part):
    """A test-only part: adds w * mean(D(real)) to D's loss, logs it, counts D steps, checkpoints the count."""

    def __init__(self) -> None:
        self.count = 0

    @classmethod
    def from_config(cls, cfg, G, D):  # noqa: ANN001
        return cls()

    logged = ("probe",)

    def d_terms(self, s: DStep) -> Terms:
        return {"probe": (0.5, s.d_real.mean())}

    def after_d_step(self, s: DStep) -> None:
        self.count += 1

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict | None) -> None:
        self.count = state["count"] if state else 0


def test_a_new_part_is_one_registration_and_the_trainer_uses_it(tmp_path, monkeypatch):
    monkeypatch.setitem(PARTS._items, "probe", _Probe)
    data = synthetic_data(n=64)
    cfg = load_config("fashion_mnist_dcgan", FAST + ["train.steps=3", "train.d_steps=2", "train.tensorboard=false"])
    tr = Trainer(cfg, None, data=data, quiet=True)
    out = tr.train_step()
    assert "probe" in out and torch.isfinite(out["probe"])
    assert tr.objective.parts["probe"].count == 2  # after_d_step ran after each of the 2 D updates
    _, meta = tr.state()
    assert meta["parts"]["probe"] == {"count": 2}
    tr2 = Trainer(cfg, None, data=data, quiet=True)
    tr2.objective.load_state_dict(meta["parts"], meta)
    assert tr2.objective.parts["probe"].count == 2


def test_legacy_checkpoint_meta_restores_part_state():
    cfg = load_config("fashion_mnist_dcgan", ["model.nf=8", "augment.name=ada", "augment.ada_p=0.0"])
    from ganforge.models import build_discriminator, build_generator

    obj = Objective.from_config(cfg, build_generator(cfg), build_discriminator(cfg))
    state = dict(obj.parts["augment"].fn.state_dict(), p=0.25)
    obj.load_state_dict(None, {"ada": state, "pl_mean": 0.0})  # a checkpoint from before parts existed
    assert obj.parts["augment"].fn.p == 0.25
    with pytest.raises(UserError, match="without ADA state"):
        obj.load_state_dict(None, {"pl_mean": 0.0})


def test_ema_half_life_in_images_is_independent_of_the_batch():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999, kimg=8.8)
    # after 8,800 images the old weights keep half their weight, whether seen in batches of 16 or 64
    for batch in (16, 64):  # past the warm-up cap (step 10^6)
        assert ema_decay(10**6, batch, 0.999, kimg=8.8) ** (8800 / batch) == pytest.approx(0.5, rel=1e-9)
    assert ema_decay(10**6, 64, 0.999) == 0.999  # the old per-step key still works
    with torch.no_grad():
        src = torch.nn.Linear(2, 2)
        for p in src.parameters():
            p.fill_(1.0)
        for p in ema.model.parameters():
            p.fill_(0.0)
    ema.update(src, step=10_000, images=64)  # past the warm-up
    d = 0.5 ** (64 / 8800)
    assert torch.allclose(ema.model.weight, torch.full((2, 2), 1 - d), atol=1e-7)


def test_evaluation_during_training_logs_keeps_best_and_resumes_exactly(tmp_path):
    """train.eval_every: eval.jsonl gets step, images seen and training time; checkpoints/best holds the best FID;
    evaluating does not disturb training (10 steps == 5 + resume + 5, bitwise) and a resume drops nothing."""
    from conftest import png_folder

    from ganforge.runs import checkpoint as ckpt
    from ganforge.runs.rundir import RunDir
    from ganforge.training.launch import train

    folder = png_folder(tmp_path / "imgs", 64)
    over = FAST + [f"data.source={folder}", "train.eval_every=5", "train.eval_n=64", "train.eval_metrics=fid,kid",
                   "train.eval_network=fashion-mnist-cnn", "train.checkpoint_every=5", "train.tensorboard=false"]
    a, _ = train("fashion_mnist_dcgan", over + ["train.steps=10"], run_dir=tmp_path / "a", quiet=True)
    b, _ = train("fashion_mnist_dcgan", over + ["train.steps=5"], run_dir=tmp_path / "b", quiet=True)
    train(None, ["train.steps=10"], resume=b.path, quiet=True)
    ea, eb = RunDir(a.path).read_eval(), RunDir(b.path).read_eval()
    assert [r["step"] for r in ea] == [5, 10] == [r["step"] for r in eb]
    assert [r["images_seen"] for r in ea] == [80, 160]
    assert all(r["source"] == "train" and r["network"] == "fashion-mnist-cnn" and r["n"] == 64 for r in ea)
    assert 0 < ea[0]["train_seconds"] < ea[1]["train_seconds"]
    assert [r["fid"] for r in ea] == [r["fid"] for r in eb]  # the same generator at the same steps
    ca, cb = ckpt.latest_checkpoint(a.checkpoints)[0], ckpt.latest_checkpoint(b.checkpoints)[0]
    assert all(torch.equal(ca.tensors[k], cb.tensors[k]) for k in ca.tensors)
    best, _ = ckpt.latest_checkpoint(a.path / "checkpoints" / "best")
    assert best.meta["fid"] == min(r["fid"] for r in ea) and best.step == min(ea, key=lambda r: r["fid"])["step"]


def test_evaluation_failure_warns_and_training_goes_on(tmp_path, capsys):
    from ganforge.runs.rundir import RunDir
    from ganforge.training.launch import train

    over = FAST + ["train.eval_every=2", "train.eval_network=no-such-net", "train.steps=4", "train.tensorboard=false"]
    run, summary = train("fashion_mnist_dcgan", over, run_dir=tmp_path / "r", data=synthetic_data(n=64), quiet=True)
    assert summary["step"] == 4 and RunDir(run.path).read_eval() == []
    assert "evaluation during training is off for this run" in capsys.readouterr().err


def test_time_budget_stops_with_a_checkpoint_and_a_resume_keeps_the_clock(tmp_path):
    """No wall-clock bound that a loaded machine could break: a resume whose budget is already spent takes exactly
    one step (the clock was carried over, not restarted), and a resume adds at most its own wall time."""
    import time

    from ganforge.runs import checkpoint as ckpt
    from ganforge.training.launch import train

    data = synthetic_data(n=64)
    over = FAST + ["train.steps=100000", "train.max_seconds=0.5", "train.tensorboard=false"]
    run, summary = train("fashion_mnist_dcgan", over, run_dir=tmp_path / "r", data=data, quiet=True)
    assert summary["stopped_by"] == "time budget" and 0 < summary["step"] < 100000
    c, _ = ckpt.latest_checkpoint(run.checkpoints)
    assert c.step == summary["step"] and c.meta["train_seconds"] >= 0.5
    _, spent = train(None, [f"train.max_seconds={c.meta['train_seconds']}"], resume=run.path, data=data, quiet=True)
    assert spent["stopped_by"] == "time budget" and spent["step"] == summary["step"] + 1
    c1, _ = ckpt.latest_checkpoint(run.checkpoints)
    budget = c1.meta["train_seconds"] + 0.5
    t0 = time.perf_counter()
    _, again = train(None, [f"train.max_seconds={budget}"], resume=run.path, data=data, quiet=True)
    wall = time.perf_counter() - t0
    assert again["stopped_by"] == "time budget" and again["step"] > spent["step"]
    c2, _ = ckpt.latest_checkpoint(run.checkpoints)
    assert budget <= c2.meta["train_seconds"] <= c1.meta["train_seconds"] + wall  # carried over, counted once


def test_a_time_budget_progress_bar_counts_seconds_of_training_not_a_placeholder_step_total(tmp_path, capsys):
    """`ganforge compare --minutes` sets no step total (train.steps=null); the bar shows the budget's seconds."""
    from ganforge.training.launch import train

    over = FAST + ["train.steps=null", "train.max_seconds=1", "train.tensorboard=false", "train.log_every=1"]
    train("fashion_mnist_dcgan", over, run_dir=tmp_path / "r", data=synthetic_data(n=64), quiet=False)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    final = [line for line in bar if "s of training" in line][-1]
    assert "1000000000" not in "\n".join(bar)
    assert "1/1 s of training" in final and "step=" in final, final  # the budget reached
    trainer = Trainer(load_config("fashion_mnist_dcgan", FAST + ["train.steps=50"]), data=synthetic_data(n=64))
    steps_bar = Loop(trainer).progress_bar()
    assert (steps_bar.total, steps_bar.unit) == (50, "step")
    steps_bar.close()


def test_attribute_grid_labels_repeat_when_the_data_is_small():
    from ganforge.training.trainer import fixed_labels

    cfg = load_config(None, ["model.conditional=true"])
    cfg["model"].update(label_kind="attributes", num_labels=2, label_names=["a", "b"])
    data = synthetic_data(n=3)
    data.labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]).numpy()
    lab = fixed_labels(cfg, data, 8, torch.device("cpu"))
    assert lab.shape == (8, 2) and torch.equal(lab[3], lab[0]) and torch.equal(lab[7], lab[1])
