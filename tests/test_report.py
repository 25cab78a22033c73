"""`ganforge report`: a self-contained HTML (+ Markdown) report whose findings follow from the numbers.

A constructed pair (a 2-step and a 150-step DCGAN on synthetic blobs, evaluated with the shipped
fashion-mnist-cnn) must be ranked the right way round; the HTML must load no external resource and show every
image in headless Chromium with the network blocked; runs without eval.jsonl still report."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST, need_extra, png_folder
from PIL import Image

from ganforge.cli import main
from ganforge.report import write_report
from ganforge.report.diagnostics import class_coverage, entropy_ratio
from ganforge.report.facts import RunFacts, curve, estimated_train_seconds, read_run
from ganforge.report.findings import findings, limitations, welch
from ganforge.training.launch import train

NET = "fashion-mnist-cnn"  # ships with ganforge: works offline on 32 px gray images
EXTERNAL = re.compile(r"""(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


def _user_png(path: Path, value: int) -> bytes:
    """A small PNG standing in for a file the user made (must never be replaced)."""
    Image.fromarray(np.full((6, 6), value, np.uint8)).save(path)
    return path.read_bytes()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-step run without eval.jsonl (tests copy it before changing it)."""
    root = tmp_path_factory.mktemp("tiny")
    folder = png_folder(root / "imgs", 64)
    run, _ = train("fashion_mnist_dcgan", [*FAST, "train.steps=2", "train.tensorboard=false", f"data.source={folder}"],
                   run_dir=root / "fresh", quiet=True)
    return run.path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    folder = png_folder(root / "imgs", 128)
    common = [*FAST, "train.tensorboard=false", "train.ema=false", f"data.source={folder}"]
    short, _ = train("fashion_mnist_dcgan", [*common, "train.steps=2"], run_dir=root / "short", quiet=True)
    # the long run evaluates itself during training (the trainer's eval.jsonl lines feed the FID curves)
    long_ov = ["train.steps=150", "train.log_every=10", "train.sample_every=50", "train.checkpoint_every=50",
               "train.eval_every=50", "train.eval_n=64", f"train.eval_network={NET}", "train.eval_metrics=fid"]
    long, _ = train("fashion_mnist_dcgan", [*common, *long_ov], run_dir=root / "long", quiet=True)
    user = {"long/compare-grid.png": _user_png(long.path / "compare-grid.png", 7),
            "short/nearest.png": _user_png(short.path / "nearest.png", 9)}
    out = write_report([short.path, long.path], root / "out" / "report.html", eval_n=200, network=NET)
    return root, short.path, long.path, out, user


def _evals(run: Path, n: int) -> list[dict]:
    return [r for r in map(json.loads, (run / "eval.jsonl").read_text().splitlines()) if r.get("n") == n]


@pytest.mark.slow  # shares the pair fixture: two trainings and a report, ~15-40 s
def test_findings_name_the_better_run(pair):
    root, short, long, out, _ = pair
    (s,), (lg,) = _evals(short, 200), _evals(long, 200)  # measured by the report and logged like `ganforge eval`
    assert lg["fid"] < s["fid"] and lg["step"] == 150 and s["step"] == 2 and lg["network"] == NET
    md = out.with_suffix(".md").read_text()
    gap = f"{s['fid'] - lg['fid']:,.2f}"
    assert f"Best at this budget: **long** with FID {lg['fid']:,.2f}, {gap} lower than **short**" in md
    assert "One seed per configuration" in md  # no seed spread to test the gap against
    # the table names the network and the sample counts, and bolds the better FID
    assert f"Feature network: {NET}; FID/KID/IS from 200 generated images against 128 reference images" in md
    row = next(line for line in md.splitlines() if line.startswith("| long |"))
    assert f"**{lg['fid']:,.2f}**" in row and "| 200 / 128 |" in row and "computed by the report (n=200)" in row
    assert "200 generated images, below the usual 10k-50k" in md  # the small-sample limitation, with its n


@pytest.mark.slow  # shares the pair fixture: two trainings and a report, ~15-40 s
def test_json_holds_the_tables_numbers(pair):
    _, short, long, out, _ = pair
    doc = json.loads(out.with_suffix(".json").read_text())
    runs = {r["label"]: r for r in doc["runs"]}
    (lg,) = _evals(long, 200)
    assert runs["long"]["metrics"]["fid"] == lg["fid"] and runs["long"]["step"] == 150
    assert runs["short"]["step"] == 2 and runs["long"]["network"] == NET
    d = runs["long"]["diagnostics"]
    assert 0 <= d["recall"] <= 1 and d["diversity_ratio"] > 0 and d["n"] == 128
    assert d["coverage"] is None  # an image folder has no classes to cover
    assert doc["findings"] and doc["findings"][0] in out.with_suffix(".md").read_text()


def test_json_carries_coverage_and_numpy_values():
    """Diagnostics hold numpy scalars and per-class coverage: both come out as plain JSON numbers."""
    import numpy as np

    from ganforge.report import build
    from ganforge.report.render import to_json

    diag = {"n": 2000, "precision": np.float64(0.7), "recall": np.float32(0.5), "diversity_ratio": 0.9,
            "coverage": _cov([0.1] * 9 + [0.04])}
    doc = json.loads(to_json(build([_facts("a", 12.5, diagnostics=diag)])))
    (run,) = doc["runs"]
    assert run["metrics"]["fid"] == 12.5 and run["diagnostics"]["recall"] == 0.5
    assert [c["generated"] for c in run["diagnostics"]["coverage"]][-1] == 0.04
    assert any("c9 (4.0% of samples vs 10.0% of real images)" in x for x in doc["findings"])


@pytest.mark.slow  # shares the pair fixture: two trainings and a report, ~15-40 s
def test_html_is_self_contained(pair):
    _, short, long, out, _ = pair
    html = out.read_text()
    assert not EXTERNAL.search(html) and "http://" not in html and "https://" not in html
    assert "<link" not in html and "<script" not in html  # no stylesheet or script to fetch
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", html)
    # 2 sample grids + 2 real-vs-generated + 2 nearest-neighbour grids + FID vs time, FID vs images, losses
    assert len(srcs) == 9 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<style>" in html and "Limitations" in html and "Config differences" in html
    assert "train.steps" in html and "torch" in html  # config diff and versions


@pytest.mark.slow  # shares the pair fixture: two trainings and a report, ~15-40 s
def test_fid_curve_uses_the_trainers_lines(pair):
    _, short, long, _, _ = pair
    f = read_run(long)
    pts = curve(f, NET)
    assert [p["step"] for p in pts] == [50, 100, 150]  # only the source=train lines, not the report's n=200 one
    assert [p["images_seen"] for p in pts] == [800, 1600, 2400]  # batch 16
    secs = [p["train_seconds"] for p in pts]
    assert 0 < secs[0] < secs[1] < secs[2] == pytest.approx(f.train_seconds, rel=0.1)
    assert f.train_seconds_source == "trainer"
    (only,) = curve(read_run(short), NET)  # a run without training-time lines: its one evaluation, a marker
    assert only["step"] == 2 and only["images_seen"] == 32


@pytest.mark.slow  # shares the pair fixture: two trainings and a report, ~15-40 s
def test_user_files_are_never_replaced(pair, capsys):
    root, short, long, out, user = pair
    for rel, data in user.items():
        assert (root / rel).read_bytes() == data
    # what was missing was made: short's real-vs-generated grid, long's nearest-neighbour grid
    assert Image.open(short / "compare-grid.png").width > 100 and Image.open(long / "nearest.png").width > 100
    before = out.read_bytes()
    capsys.readouterr()
    rc = main(["report", str(short), "--out", str(out), "--no-eval"])
    assert f"{out} already exists; choose another path or pass --overwrite" in capsys.readouterr().err
    assert rc == 2 and out.read_bytes() == before  # existing report: refused, untouched (byte for byte)


@pytest.mark.slow
def test_renders_offline_in_chromium(pair):
    playwright = need_extra("playwright.sync_api", "test")
    _, _, _, out, _ = pair
    requested: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page()

        def route(r):  # the network is off: anything but data: and file: is aborted and remembered
            if r.request.url.startswith(("data:", "file:")):
                r.continue_()
            else:
                requested.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.goto(out.resolve().as_uri(), wait_until="load")
        widths = page.evaluate("Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
        text = page.inner_text("body")
        browser.close()
    assert requested == []
    assert len(widths) == 9 and all(w > 0 for w in widths)
    assert "Best at this budget: long" in text


def test_run_without_eval_still_reports(tmp_path, tiny):
    run = shutil.copytree(tiny, tmp_path / "fresh")
    assert not (run / "eval.jsonl").exists()
    out = write_report([run], tmp_path / "a.html", no_eval=True, network=NET)
    md = out.with_suffix(".md").read_text()
    assert "missing (--no-eval" in md and "No run has FID numbers" in md
    assert not (run / "eval.jsonl").exists()  # --no-eval samples nothing for metrics
    rc = main(["report", str(run), "--out", str(tmp_path / "b.html"), "--eval-n", "50", "--network", NET, "--quiet"])
    assert rc == 0
    (line,) = _evals(run, 50)
    md = (tmp_path / "b.md").read_text()
    assert "computed by the report (n=50)" in md and f"{line['fid']:,.2f}" in md
    assert "Only one configuration (**fresh**) has metrics" in md


def test_bad_input_exits_2(tmp_path, capsys, tiny):
    (tmp_path / "notarun").mkdir()
    assert main(["report", str(tmp_path / "notarun"), "--out", str(tmp_path / "r.html")]) == 2
    assert "is not a ganforge run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2
    assert main(["report", str(tmp_path / "notarun"), "--out", str(tmp_path / "r.txt")]) == 2
    assert "must end in .html" in capsys.readouterr().err
    (tmp_path / "r.md").write_text("mine")
    assert main(["report", str(tmp_path / "notarun"), "--out", str(tmp_path / "r.html")]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "r.md").read_text() == "mine"
    assert main(["report", str(tmp_path / "notarun"), "--eval-n", "5", "--no-eval"]) == 2  # exclusive flags
    assert main(["report", str(tiny), "--out", str(tmp_path / "n.html"), "--network", "no-such-net"]) == 2
    assert "no-such-net" in capsys.readouterr().err and not (tmp_path / "n.html").exists()
    assert not (tmp_path / "r.html").exists()


# --- findings from constructed facts (no training) -----------------------------------------------------------
def _facts(label: str, fid: float, seed: int = 0, name: str | None = None, **kw) -> RunFacts:
    from ganforge.config import load_config

    cfg = load_config("fashion_mnist_dcgan", [f"name={name or label}", f"seed={seed}"])
    f = RunFacts(path=Path(label), label=label, cfg=cfg, step=100, network=NET)
    f.metrics = {"fid": fid, "kid": fid / 1000, "n": 10000, "n_ref": 60000, "step": 100}
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def _cov(shares: list[float]) -> list[dict]:
    return [{"class": f"c{i}", "real": 0.1, "generated": s} for i, s in enumerate(shares)]


def test_findings_flag_collapse_dropped_classes_memorization_and_divergence():
    healthy = {"n": 2000, "precision": 0.7, "recall": 0.5, "diversity_ratio": 0.95, "is_generated": 8.0,
               "is_real": 9.0, "coverage": _cov([0.1] * 10)}
    collapsed = {**healthy, "diversity_ratio": 0.2, "is_generated": 1.5,
                 "coverage": _cov([0.5, 0.45, 0.05, 0, 0, 0, 0, 0, 0, 0])}
    nn_far = {"distances": [[2.0, 2.1]] * 8, "train_nn_median_distance": 2.0, "network": NET}
    nn_close = {"distances": [[0.3, 0.5]] * 8, "train_nn_median_distance": 2.0, "network": NET}
    a = _facts("good", 10.0, diagnostics=healthy, nearest=nn_far)
    b = _facts("bad", 30.0, diagnostics=collapsed, nearest=nn_close, diverged_at=57)
    text = "\n".join(findings([a, b]))
    assert "Best at this budget: **good** with FID 10.00, 20.00 lower than **bad** (30.00; 67% lower)" in text
    assert "**bad** shows signs of mode collapse: sample diversity (mean feature distance) is 0.20x" in text
    assert "IS 1.50 against 9.00" in text and "95% of samples fall in two classes (c0, c1)" in text
    assert "**good** shows" not in text
    assert "**bad** drops 7 of 10 classes" in text and "only c0, c1, c2 remain" in text  # c2: 0.05 >= 10% of 0.1
    assert "**bad** may memorize" in text and "0.15x the typical distance" in text and "**good** may" not in text
    assert "**bad** diverged (a NaN/inf loss) at step 57" in text
    short = _facts("short", 30.0, stopped_by="SIGINT")
    budget = _facts("budget", 30.0, stopped_by="time budget")
    text = "\n".join(findings([a, short, budget]))
    assert "**short** was stopped by SIGINT at step 100 of train.steps=" in text and "its full budget" in text
    assert "**budget** was" not in text  # train.max_seconds ran out: that is the budget it was given
    few = _facts("few", 30.0, diagnostics={**healthy, "coverage": _cov([0.11] * 9 + [0.005])})
    assert "**few** drops classes: c9 (0.5% of samples vs 10.0% of real images)" in "\n".join(findings([a, few]))
    # a class at 36% of its real share (the old demo's Sandal) is named, though not dropped
    thin = _facts("thin", 30.0, diagnostics={**healthy, "coverage": _cov([0.107] * 9 + [0.036])})
    text = "\n".join(findings([a, thin]))
    assert ("**thin** under-represents classes (below 50% of their real share): c9 (3.6% of samples vs 10.0% of "
            "real images)") in text and "No run drops a class" in text and "Every run covers" not in text
    assert "Every run covers every class" in "\n".join(findings([a]))


def test_seed_spread_decides_whether_a_gap_is_real():
    tight = [_facts(f"a{s}", 10.0 + 0.1 * s, seed=s, name="a") for s in range(3)]
    far = [_facts(f"b{s}", 20.0 + 0.1 * s, seed=s, name="b") for s in range(3)]
    text = findings(tight + far)[0]
    assert text.startswith("Best at this budget: **a** with FID 10.10 ± 0.10 (3 seeds)") and "a real difference" in text
    noisy = [_facts(f"b{s}", [8.0, 13.0, 12.0][s], seed=s, name="b") for s in range(3)]
    text = findings(tight + noisy)[0]
    assert "**a**" in text and "not a reliable difference" in text
    t, df, crit = welch([10.0, 10.1, 10.2], [20.0, 20.1, 20.2])
    assert (
        t == pytest.approx(10.0 / np.sqrt(2 * 0.01 / 3))
        and df == pytest.approx(4.0)
        and crit == pytest.approx(2.776, abs=1e-3)
    )
    assert "At most 3 seeds per configuration" in " ".join(limitations(tight + far))


def test_divergence_and_stops_are_read_from_events_and_from_old_train_logs(tmp_path, tiny):
    from ganforge.runs.events import Event, Stop, log_event, read_events

    run = shutil.copytree(tiny, tmp_path / "run")
    kinds = [e["event"] for e in read_events(run)]
    assert kinds[0] == "start" and kinds[-1] == "finish"  # the trainer wrote them
    log_event(run, Event.DIVERGED, step=9, loss_d=float("nan"), loss_g=float("nan"))
    assert read_run(run).diverged_at == 9
    log_event(run, Event.RESUME, step=2, checkpoint="step-00000002.safetensors")
    log_event(run, Event.STOP, step=5, reason=Stop.SIGINT, saved=True)
    facts = read_run(run)
    assert facts.diverged_at is None and facts.stopped_by == "SIGINT"  # a later process went past the divergence

    # a run folder from before events.jsonl: the same facts from train.log, read in one place (runs/events.py)
    (run / "events.jsonl").unlink()
    with open(run / "train.log", "a") as f:
        f.write("2026-01-01 00:00:00 ERROR training diverged at step 9: D loss nan, G loss nan; ...\n")
    assert read_run(run).diverged_at == 9
    with open(run / "train.log", "a") as f:
        f.write("2026-01-01 00:00:01 resumed from step-00000002.json (step 2) to train.steps=12\n")
        f.write("2026-01-01 00:00:02 stopped by SIGINT at step 5; checkpoint saved\n")
    facts = read_run(run)
    assert facts.diverged_at is None and facts.stopped_by == "SIGINT"
    assert all(e.get("legacy") for e in read_events(run))


def test_training_time_is_rebuilt_from_throughput():
    recs = [{"step": 10, "img_per_s": 160.0}, {"step": 20, "img_per_s": 80.0}, {"step": 30, "img_per_s": 320.0}]
    # windows of 10 steps x 16 images at 160, 80, 320 img/s: 1 s, 2 s, 0.5 s
    assert estimated_train_seconds(recs, 16) == {10: 1.0, 20: 3.0, 30: 3.5}


def test_class_coverage_uses_the_classifier_on_both_sides():
    real = np.eye(3)[[0, 0, 1, 2]] * 5.0  # classifier says: half class 0, a quarter each of 1 and 2
    fake = np.eye(3)[[1, 1, 1, 2]] * 5.0
    cov = class_coverage(real, fake, ["a", "b", "c"])
    assert [(c["class"], c["real"], c["generated"]) for c in cov] == [("a", 0.5, 0.0), ("b", 0.25, 0.75),
                                                                       ("c", 0.25, 0.25)]
    assert entropy_ratio([1 / 3] * 3) == pytest.approx(1.0) and entropy_ratio([1.0, 0.0, 0.0]) == 0.0


def test_no_ranking_across_evaluation_protocols():
    """FIDs measured with another resize, quantisation, truncation, EMA or standing statistics are not ranked
    against each other; the same protocol at another seed or n is."""
    from ganforge.metrics.protocol import Protocol
    from ganforge.report.findings import ranking

    base = Protocol(NET, "w" * 16, 10000, 60000, "fashion-mnist:train", "legacy", True, 0, 1.0, True, True)
    a, b = _facts("a", 10.0), _facts("b", 12.0, name="b")
    a.metrics["protocol"] = base.as_dict()
    b.metrics["protocol"] = {**base.as_dict(), "seed": 3, "n": 5000}
    assert ranking([a, b])[0].startswith("Best at this budget: **a**")
    b.metrics["protocol"] = {**base.as_dict(), "quantized": False}
    assert "different protocols" in ranking([a, b])[0]
