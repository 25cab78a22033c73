"""`ganforge compare`: train several configurations under one budget, evaluate each, write the report.

    compare(["fashion_mnist_dcgan", "fashion_mnist32_stylegan2"], "runs/budget", images=200_000, seeds=[0, 1, 2])

Each configuration x seed trains into OUT/<label>-seed<S>/. The budget is real images seen (train.steps
follows from the batch size, d_steps and a progressive schedule) or minutes of training on this machine
(the trainer's own time budget, `train.max_seconds`: training wall-clock carried across resumes, evaluation
excluded, so every run gets the same time however often it was interrupted).

OUT/compare.json records the plan (budget, steps per configuration, evaluation), so a rerun of the same
command skips finished runs (checkpoint at the planned step and an evaluation line present), resumes
interrupted ones from their newest checkpoint: targets stay fixed across reruns.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ganforge.config import load_config
from ganforge.errors import TrainingDiverged, UserError
from ganforge.fileio import atomic_write_bytes
from ganforge.runs.events import Stop

PLAN = "compare.json"
FORMAT = "ganforge-compare/1"
DEFAULT_EVAL_N = 2000
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")


@dataclass(frozen=True)
class Entry:
    """One configuration to compare: a label (folder and table name), a config or preset, its own overrides."""

    label: str
    config: str
    overrides: tuple[str, ...] = ()


def parse_entry(text: str) -> Entry:
    """'LABEL=CONFIG key=value ...' (the --run flag) -> Entry."""
    parts = text.split()
    head = parts[0] if parts else ""
    label, sep, config = head.partition("=")
    if not sep or not config or "=" in config:
        raise UserError(f"--run {text!r}: write LABEL=CONFIG followed by key=value overrides, "
                        "e.g. --run 'sg2-2k=fashion_mnist32_stylegan2 data.limit=2000'")
    bad = [p for p in parts[1:] if "=" not in p]
    if bad:
        raise UserError(f"--run {text!r}: {bad[0]!r} is not a key=value override")
    return Entry(check_label(label), config, tuple(parts[1:]))


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise UserError(f"label {label!r} must be 1-64 letters, digits, '.', '_', '+' or '-' (it names a folder)")
    return label


def entries_of(configs: Sequence[str], runs: Sequence[str] = ()) -> list[Entry]:
    """Entries of plain configs (labelled by their file or preset name) and of --run specs; labels must differ."""
    out = [Entry(check_label(Path(c).stem if c.endswith((".yaml", ".yml")) else c), c) for c in configs]
    out += [parse_entry(r) for r in runs]
    if not out:
        raise UserError("give at least one config or preset to compare (see `ganforge presets`)")
    labels = [e.label for e in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise UserError(f"{dup[0]!r} is compared twice; give variants distinct labels with "
                        f"--run 'LABEL=CONFIG key=value ...'")
    return out


# ------------------------------------------------------------------------------------------------------------
def _grows(cfg: dict[str, Any]) -> bool:
    from ganforge.models import build_generator

    return hasattr(build_generator(cfg), "set_stage")


def steps_for_images(cfg: dict[str, Any], images: int) -> int:
    """G steps after which the trainer has shown `images` real images: each step draws d_steps batches, whose
    size follows the growing schedule for progressive models."""
    t = cfg["train"]
    if not _grows(cfg):
        return max(1, math.ceil(images / (t["batch_size"] * t["d_steps"])))
    from ganforge.training.schedule import GrowSchedule

    grow = GrowSchedule.from_config(cfg)
    seen = steps = 0
    while seen < images:
        for _ in range(t["d_steps"]):
            seen += grow.stage(seen).batch_size
        steps += 1
    return steps


# ------------------------------------------------------------------------------------------------------------
def _load_plan(out: Path) -> dict[str, Any] | None:
    p = out / PLAN
    if not p.is_file():
        return None
    try:
        plan = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{p} is damaged ({e}); delete it to plan again (finished runs are kept)") from None
    if not isinstance(plan, dict) or plan.get("format") != FORMAT:
        raise UserError(f"{p} is not a ganforge compare plan; choose another --out")
    return plan


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the runs and the report")
    if out.is_dir() and any(out.iterdir()) and not (out / PLAN).is_file():
        raise UserError(f"--out {out} exists and was not made by `ganforge compare` (no {PLAN}); "
                        "choose a new or empty folder")


def _same(plan: dict[str, Any], key: str, value: Any, flag: str) -> None:
    if plan.get(key) != value:
        raise UserError(f"{flag} differs from the plan in the --out folder ({plan.get(key)!r} there, {value!r} now); "
                        "rerun with the same value to resume, or choose another --out")


def run_state(path: Path, target: int | None, max_seconds: float | None = None) -> tuple[str, int | None]:
    """("new" | "partial" | "trained" | "diverged", newest checkpoint step) of a planned run folder: trained when
    its newest checkpoint reached the step target or the time budget."""
    from ganforge.report.facts import read_run
    from ganforge.runs import checkpoint as ckpt
    from ganforge.runs.rundir import is_run_dir

    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return "new", None
    if not is_run_dir(path):
        raise UserError(f"{path} exists but is not a ganforge run; move it away so compare can train there")
    have = ckpt.list_checkpoints(path / "checkpoints")
    step = have[-1][0] if have else None
    if step is not None and target is not None and step >= target:
        return "trained", step
    if step is not None and max_seconds is not None:
        try:
            spent = float(json.loads(have[-1][1].read_text()).get("train_seconds", 0.0))
        except (OSError, ValueError):
            spent = 0.0
        if spent >= max_seconds:
            return "trained", step
    if read_run(path).diverged_at is not None:
        return "diverged", step
    return "partial", step


def compare(
    entries: Sequence[Entry | str], out: str | Path, *, minutes: float | None = None, images: int | None = None,
    seeds: Sequence[int] = (0,), eval_n: int = DEFAULT_EVAL_N, network: str | None = None,
    overrides: Sequence[str] = (), device: str | None = None, quiet: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Train every entry x seed under one budget into OUT, evaluate each, write OUT/report.html (+ .md).
    Returns the report's path. Rerunning resumes: see the module docstring."""
    from ganforge.device import resolve_device
    from ganforge.metrics.evaluate import build_network, default_network
    from ganforge.report import write_report
    from ganforge.training.launch import train

    if (minutes is None) == (images is None):
        raise UserError("give exactly one budget: --minutes N or --images N")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise UserError(f"--minutes must be a positive number, got {minutes}")
    if images is not None and images < 1:
        raise UserError(f"--images must be a positive number of images, got {images}")
    if eval_n < 2:
        raise UserError(f"--eval-n must be at least 2 images, got {eval_n}")
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must be distinct, got {list(seeds)}")
    ents = [e if isinstance(e, Entry) else Entry(check_label(Path(e).stem), e) for e in entries]
    if not ents:
        raise UserError("give at least one config or preset to compare (see `ganforge presets`)")
    out = Path(out)
    _check_out(out)
    budget = {"minutes": float(minutes)} if minutes is not None else {"images": int(images)}  # type: ignore[arg-type]
    plan = _load_plan(out) or {"format": FORMAT, "budget": budget, "eval_n": eval_n, "network": network, "runs": {}}
    _same(plan, "budget", budget, "the budget (--minutes/--images)")
    _same(plan, "eval_n", eval_n, "--eval-n")
    _same(plan, "network", network, "--network")

    # 1. plan: resolve each entry's config and step target (checked before anything trains)
    cfgs = {}
    for e in ents:
        ov = [*overrides, *e.overrides]
        cfg = load_config(e.config, [*ov, f"name={e.label}"])
        cfgs[e.label] = cfg
        known = plan["runs"].get(e.label)
        if known is not None and (known["config"], known["overrides"]) != (e.config, ov):
            raise UserError(f"{e.label!r} was planned in {out} as {known['config']} {' '.join(known['overrides'])}; "
                            "use another label or another --out")
    net_names = {e.label: network or default_network(cfgs[e.label]["data"]["source"]) for e in ents}
    for name in sorted(set(net_names.values())):
        build_network(name)  # missing weights fail now, not after an hour of training
    out.mkdir(parents=True, exist_ok=True)
    for e in ents:
        if e.label in plan["runs"]:
            continue
        ov = [*overrides, *e.overrides]
        entry_plan: dict[str, Any] = {"config": e.config, "overrides": ov}
        if images is not None:
            entry_plan["steps"] = steps_for_images(cfgs[e.label], images)
        else:  # the trainer stops itself at the time budget: no step target (train.steps=null)
            entry_plan.update(steps=None, max_seconds=float(minutes) * 60)
        plan["runs"][e.label] = entry_plan
        atomic_write_bytes(out / PLAN, json.dumps(plan, indent=1).encode())

    # 2. train and evaluate each entry x seed
    eval_device = str(resolve_device(device or "auto"))
    run_dirs = []
    for e in ents:
        target = plan["runs"][e.label]["steps"]  # None under a time budget (plans of older versions: 10**9)
        max_s = plan["runs"][e.label].get("max_seconds")
        limit = [f"train.steps={'null' if target is None else int(target)}"] + (
            [f"train.max_seconds={max_s}"] if max_s else [])
        for seed in seeds:
            path = out / f"{e.label}-seed{seed}"
            run_dirs.append(path)
            ov = [*plan["runs"][e.label]["overrides"], f"name={e.label}", f"seed={seed}", *limit]
            if network:  # FID during training in the report's feature space
                ov.append(f"train.eval_network={network}")
            state, step = run_state(path, target, max_s)
            t0 = time.perf_counter()
            try:
                if state == "new":
                    log(f"{path.name}: training " + (f"{max_s:g} s" if max_s else f"{target:,} steps"))
                    _, summary = train(e.config, ov, run_dir=path, device=device, quiet=quiet)
                elif state == "partial":
                    log(f"{path.name}: resuming at step {step or 0:,}" + ("" if max_s else f" of {target:,}"))
                    _, summary = train(None, limit, resume=path, device=device, quiet=quiet)
                else:
                    summary = {}
                    log(f"{path.name}: {'already trained' if state == 'trained' else 'diverged earlier'} "
                        f"(step {step}); skipped")
            except TrainingDiverged as err:
                log(f"{path.name}: diverged ({err}); evaluating its last good checkpoint")
                summary = {}
            if summary.get("stopped_by") in (Stop.SIGINT, Stop.SIGTERM):
                log(f"{path.name}: stopped at step {summary.get('step')}; rerun the same command to resume")
                raise KeyboardInterrupt
            if state in ("new", "partial"):
                log(f"{path.name}: trained in {time.perf_counter() - t0:.0f} s")
            _evaluate(path, net_names[e.label], eval_n, eval_device, quiet, log)
    plan["seeds"] = sorted(set(plan.get("seeds", [])) | set(seeds))
    atomic_write_bytes(out / PLAN, json.dumps(plan, indent=1).encode())

    # 3. the report over this invocation's runs
    report = write_report(run_dirs, out / "report.html", eval_n=eval_n, network=network, device=eval_device,
                          overwrite=True, title=f"ganforge compare: {', '.join(e.label for e in ents)}",
                          budget=budget_text(plan, [e.label for e in ents]), progress=not quiet)
    log(f"report: {report}")
    return report


def _evaluate(path: Path, network: str, n: int, device: str, quiet: bool, log: Callable[[str], None]) -> None:
    """Append an evaluation of the run's newest checkpoint to its eval.jsonl, unless one with this network
    and n is there; the line carries images_seen and train_seconds like the trainer's own lines."""
    from ganforge.evaluation import evaluate_run
    from ganforge.metrics.evaluate import build_network
    from ganforge.report.facts import pick_eval, read_run
    from ganforge.runs.rundir import RunDir

    facts = read_run(path)
    if facts.step is None:
        log(f"{path.name}: no checkpoint to evaluate")
        return
    if pick_eval(facts, network, n) is not None:
        return
    log(f"{path.name}: evaluating {n:,} samples ({network})")
    metrics = "fid,kid,is" if getattr(build_network(network), "num_classes", None) else "fid,kid"
    rec = evaluate_run(path, metrics=metrics, n=n, network=network, device=device, progress=not quiet, log=False)
    rec.update(images_seen=facts.images_seen, train_seconds=facts.train_seconds, source="compare")
    RunDir(path, tensorboard=False).log_eval(rec)


def budget_text(plan: dict[str, Any], labels: list[str]) -> str:
    """The budget as a sentence for the report: what each run got and how the steps were found."""
    runs = plan["runs"]
    if "images" in plan["budget"]:
        steps = ", ".join(f"{lb} {runs[lb]['steps']:,} steps" for lb in labels)
        return f"{plan['budget']['images']:,} real images per run (train.steps from batch size and d_steps: {steps})"
    return (f"{plan['budget']['minutes']:g} minutes of training wall-clock per run on this machine (train.max_seconds: "
            "evaluation excluded, carried across resumes)")
