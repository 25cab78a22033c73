"""`ganforge compare`: one budget for every configuration, evaluation, the report, and reruns that skip what is
finished and resume what was interrupted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import FAST, png_folder

from ganforge.cli import main
from ganforge.compare import PLAN, Entry, compare, parse_entry, steps_for_images
from ganforge.config import load_config
from ganforge.errors import UserError

NET = "fashion-mnist-cnn"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def common(tmp_path_factory):
    folder = png_folder(tmp_path_factory.mktemp("cmp") / "imgs", 64)
    return [*FAST, "train.tensorboard=false", f"data.source={folder}", "train.log_every=2", "train.checkpoint_every=2"]


def _mtimes(run: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted((run / "checkpoints").glob("step-*"))}


@pytest.mark.slow  # two trainings, their evaluations and three reports: ~20-40 s on a busy machine
def test_images_budget_then_rerun_skips_and_resumes(tmp_path, common):
    out = tmp_path / "cmp"
    logs: list[str] = []
    kw = {"images": 96, "seeds": [0, 1], "eval_n": 64, "network": NET, "overrides": common, "log": logs.append}
    report = compare(["fashion_mnist_dcgan"], out, **kw)
    plan = json.loads((out / PLAN).read_text())
    assert plan["runs"]["fashion_mnist_dcgan"]["steps"] == 6  # 96 images / batch 16
    runs = [out / "fashion_mnist_dcgan-seed0", out / "fashion_mnist_dcgan-seed1"]
    for seed, run in enumerate(runs):
        assert max(_mtimes(run)) == "step-00000006.safetensors"
        (line,) = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
        assert (line["source"], line["step"], line["n"], line["network"]) == ("compare", 6, 64, NET)
        assert line["images_seen"] == 96 and line["train_seconds"] > 0 and line["fid"] > 0
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        assert (cfg["seed"], cfg["name"], cfg["train"]["eval_network"]) == (seed, "fashion_mnist_dcgan", NET)
    md = report.with_suffix(".md").read_text()
    assert report == out / "report.html" and "Budget: 96 real images per run" in md
    assert "| fashion_mnist_dcgan | 0, 1 |" in md  # the two seeds form one configuration: mean ± std

    # rerun: nothing is trained or evaluated again
    before = {r: (_mtimes(r), (r / "eval.jsonl").read_bytes()) for r in runs}
    logs.clear()
    compare(["fashion_mnist_dcgan"], out, **kw)
    assert sum("already trained (step 6); skipped" in x for x in logs) == 2
    assert not any("training" in x or "evaluating" in x for x in logs)
    assert {r: (_mtimes(r), (r / "eval.jsonl").read_bytes()) for r in runs} == before

    # an interrupted run (its last checkpoint lost) resumes from the newest one it has
    for p in (runs[1] / "checkpoints").glob("step-00000006.*"):
        p.unlink()
    logs.clear()
    compare(["fashion_mnist_dcgan"], out, **kw)
    assert "fashion_mnist_dcgan-seed1: resuming at step 4 of 6" in logs
    after = _mtimes(runs[1])
    assert {k: v for k, v in after.items() if "00000006" not in k} == {
        k: v for k, v in before[runs[1]][0].items() if "00000006" not in k
    }  # the older checkpoints were not rewritten
    assert "step-00000006.safetensors" in after and "resumed from" in (runs[1] / "train.log").read_text()
    assert _mtimes(runs[0]) == before[runs[0]][0]


@pytest.mark.slow  # two time-budgeted trainings and a report
def test_minutes_budget_is_the_trainers_time_budget(tmp_path, common):
    out = tmp_path / "m"
    logs: list[str] = []
    kw = {"minutes": 0.01, "eval_n": 32, "network": NET, "overrides": common, "log": logs.append}
    compare([Entry("dc", "fashion_mnist_dcgan", ("model.nf=4",))], out, **kw)
    p = json.loads((out / PLAN).read_text())["runs"]["dc"]
    assert p["max_seconds"] == pytest.approx(0.6)
    cfg = yaml.safe_load((out / "dc-seed0" / "config.yaml").read_text())
    assert cfg["model"]["nf"] == 4 and cfg["train"]["max_seconds"] == pytest.approx(0.6)  # the entry's own + budget
    newest = sorted((out / "dc-seed0" / "checkpoints").glob("step-*.json"))[-1]
    assert json.loads(newest.read_text())["train_seconds"] >= 0.6  # stopped by the budget, with a checkpoint
    assert "stopped by time budget" in (out / "dc-seed0" / "train.log").read_text()
    before = _mtimes(out / "dc-seed0")
    logs.clear()
    compare([Entry("dc", "fashion_mnist_dcgan", ("model.nf=4",))], out, **kw)
    assert any("already trained" in x for x in logs) and _mtimes(out / "dc-seed0") == before  # not retrained


def test_steps_for_images_follow_batch_d_steps_and_growing():
    assert steps_for_images(load_config("fashion_mnist_dcgan"), 1000) == 16  # ceil(1000 / 64)
    assert steps_for_images(load_config("fashion_mnist_wgan_gp"), 3200) == 10  # 5 critic batches of 64 per step
    grow = ["grow.fade_images=100", "grow.stable_images=100", "grow.batch_sizes=[10,20,30,40]"]
    # 4x4 at batch 10 for 100 images (10 steps), 8x8 fade + stable at 20 (5 + 5), 16x16 at 30 until 500 (7)
    assert steps_for_images(load_config("fashion_mnist32_progan", grow), 500) == 27


def test_run_specs():
    e = parse_entry("sg2-2k=fashion_mnist32_stylegan2 data.limit=2000 augment.name=ada")
    assert e == Entry("sg2-2k", "fashion_mnist32_stylegan2", ("data.limit=2000", "augment.name=ada"))
    for bad in ("fashion_mnist_dcgan", "=x", "a b=fashion_mnist_dcgan", "a=dcgan notanoverride", "a/b=x"):
        with pytest.raises(UserError):
            parse_entry(bad)


def test_bad_input_exits_2(tmp_path, capsys):
    def run(*args: str) -> int:
        return main(["compare", *args])

    def refused(*args: str, says: str) -> None:
        """Exit 2 with one line that says what is wrong (not only the exit code)."""
        assert run(*args, "--out", str(tmp_path / "a")) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and err.startswith("ganforge: error: ") and says in err, err

    refused("fashion_mnist_dcgan", "--images", "10", "--minutes", "1", says="--minutes: not allowed with argument --images")
    refused("fashion_mnist_dcgan", says="one of the arguments --minutes --images is required")  # no budget
    refused("fashion_mnist_dcgan", "fashion_mnist_dcgan", "--images", "10", says="compared twice")
    refused("no_such_preset", "--images", "10", says="config 'no_such_preset' not found")
    refused("fashion_mnist_dcgan", "--images", "10", "--seeds", "x", says="--seeds takes 1 to 32 comma-separated")
    refused("--run", "nolabel", "--images", "10", says="--run 'nolabel': write LABEL=CONFIG")
    assert not (tmp_path / "a").exists()  # nothing was created for bad input
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert run("fashion_mnist_dcgan", "--images", "10", "--out", str(tmp_path / "mine")) == 2
    assert "was not made by `ganforge compare`" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    (tmp_path / "file").write_text("x")
    assert run("fashion_mnist_dcgan", "--images", "10", "--out", str(tmp_path / "file")) == 2
    assert "is a file; give a folder" in capsys.readouterr().err
    planned = tmp_path / "planned"
    planned.mkdir()
    plan = {"format": "ganforge-compare/1", "budget": {"images": 96}, "eval_n": 2000, "network": None, "runs": {}}
    (planned / PLAN).write_text(json.dumps(plan))
    assert run("fashion_mnist_dcgan", "--images", "50", "--out", str(planned)) == 2  # another budget than planned
    assert "differs from the plan" in capsys.readouterr().err


@pytest.mark.slow  # four 2-step trainings, their evaluations and a report
def test_compare_success_through_the_cli(tmp_path, common, capsys):
    """`ganforge compare CONFIG key=value ... --run 'LABEL=CONFIG key=value' --images --seeds --eval-n`: trailing
    overrides reach every run, a --run entry's own overrides win over them, each seed is a run, each run is
    evaluated with --eval-n images, and the report names both configurations."""
    out = tmp_path / "cli"
    rc = main(["compare", "fashion_mnist_dcgan", *common, "--run", "small=fashion_mnist_dcgan model.nf=4",
               "--images", "32", "--seeds", "0,1", "--eval-n", "24", "--network", NET, "--out", str(out), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    plan = json.loads((out / PLAN).read_text())
    assert set(plan["runs"]) == {"fashion_mnist_dcgan", "small"} and plan["budget"] == {"images": 32}
    assert plan["eval_n"] == 24 and plan["network"] == NET
    for label, nf in (("fashion_mnist_dcgan", 8), ("small", 4)):
        for seed in (0, 1):
            run = out / f"{label}-seed{seed}"
            cfg = yaml.safe_load((run / "config.yaml").read_text())
            assert (cfg["seed"], cfg["model"]["nf"], cfg["train"]["batch_size"]) == (seed, nf, 16)
            assert f"data.source={cfg['data']['source']}" in common  # the trailing override reached it
            assert max(_mtimes(run)) == "step-00000002.safetensors"  # 32 images / batch 16
            (line,) = [json.loads(x) for x in (run / "eval.jsonl").read_text().splitlines()]
            assert (line["source"], line["step"], line["n"], line["network"]) == ("compare", 2, 24, NET)
    md = (out / "report.md").read_text()
    assert (out / "report.html").is_file() and "Budget: 32 real images per run" in md
    assert "| fashion_mnist_dcgan | 0, 1 |" in md and "| small | 0, 1 |" in md
