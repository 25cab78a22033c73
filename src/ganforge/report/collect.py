"""Gathering a report's facts: read each run, then measure what it does not record (metrics when eval.jsonl has
none at the final step, diagnostics, real-vs-generated and nearest-neighbour figures)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ganforge.errors import UserError
from ganforge.fileio import atomic_write_bytes
from ganforge.report.facts import RunFacts, pick_eval, read_run

DEFAULT_EVAL_N = 2000  # images per side when a run has no evaluation: minutes on a CPU, marked in the report
NEAREST_N, NEAREST_K = 12, 4  # nearest-neighbour figure: samples (rows) and neighbours per sample


def labels_for(paths: Sequence[Path]) -> list[str]:
    """Folder names, with parent folders prepended until they are unique (runs/a/demo vs runs/b/demo)."""
    paths = [p.resolve() for p in paths]
    depth = 1
    while True:
        labels = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(labels)) == len(labels) or depth >= max(len(p.parts) for p in paths):
            return labels
        depth += 1


def default_network_of(f: RunFacts) -> str:
    from ganforge.metrics.evaluate import default_network

    return default_network(f.source)


def collect(
    run_dirs: Sequence[str | Path], *, eval_n: int | None = None, no_eval: bool = False, network: str | None = None,
    device: str = "cpu", seed: int = 0, progress: bool = False,
) -> list[RunFacts]:
    """RunFacts of each run directory, measured (unless `no_eval`) with the feature network `network`
    (default: each dataset's default, as `ganforge eval` picks)."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise UserError("give at least one run directory")
    if len({p.resolve() for p in paths}) != len(paths):
        raise UserError("a run directory is named twice; give each run once")
    if eval_n is not None and eval_n < 2:
        raise UserError(f"--eval-n must be at least 2 images, got {eval_n}")
    facts = [read_run(p, label) for p, label in zip(paths, labels_for(paths), strict=True)]
    if network and not no_eval:
        from ganforge.metrics.evaluate import build_network

        build_network(network)  # a wrong --network is the user's to fix: fail before any work
    for f in facts:
        f.network = network or default_network_of(f)
        f.metrics = pick_eval(f, f.network, eval_n)
        if f.metrics is not None:
            f.metrics_note = f"from eval.jsonl (n={f.metrics.get('n')})"
        if f.step is None:
            f.notes.append("no checkpoint yet: nothing to sample or evaluate")
            continue
        if no_eval:
            if f.metrics is None:
                f.metrics_note = "missing (--no-eval and no evaluation at the final step in eval.jsonl)"
            continue
        measure(f, eval_n=eval_n or DEFAULT_EVAL_N, explicit_n=eval_n is not None, device=device, seed=seed,
                progress=progress)
    for f in facts:
        figures(f, device=device, seed=seed, skip_nearest=no_eval, progress=progress)
    return facts


def measure(f: RunFacts, *, eval_n: int, explicit_n: bool, device: str, seed: int, progress: bool) -> None:
    """Metrics (when eval.jsonl has none for the final step) and diagnostics of one run."""
    from ganforge.evaluation import evaluate_run
    from ganforge.generate import load_generator
    from ganforge.metrics.evaluate import build_network, reference_features
    from ganforge.report.diagnostics import coverage_available, diagnose

    try:
        net = build_network(f.network)
    except UserError as e:  # e.g. Inception weights missing offline: this run is reported without metrics
        f.notes.append(f"not evaluated: {e}")
        if f.metrics is None:
            f.metrics_note = "missing (its feature network is unavailable; see Notes)"
        return
    metric_names = "fid,kid,is" if getattr(net, "num_classes", None) else "fid,kid"
    if f.metrics is None:
        if progress:
            print(f"report: evaluating {f.label} (n={eval_n}, {f.network})", file=sys.stderr)
        try:
            f.metrics = evaluate_run(f.path, metrics=metric_names, n=eval_n, network=f.network, device=device,
                                     seed=seed, progress=progress, log=True)
        except UserError as e:  # e.g. its training data is not on this machine
            f.notes.append(f"not evaluated: {e}")
            f.metrics_note = "missing (evaluation failed; see Notes)"
            return
        f.evals.append(f.metrics)
        f.metrics_note = f"computed by the report (n={eval_n}{'' if explicit_n else ', the default'})"
    d = f.cfg["data"]
    try:
        real, _ = reference_features(d["source"], net, resolution=d["resolution"], channels=d["channels"], n=None,
                                     data_dir=d["data_dir"], seed=0, device=device, progress=progress)
        G, cfg = load_generator(f.path, device=device)
    except UserError as e:
        f.notes.append(f"diagnostics not computed: {e}")
        return
    names = _class_names(cfg) if coverage_available(f.network, d["source"], net) else None
    f.diagnostics = diagnose(G, cfg, net, f.network, real, n=min(eval_n, DEFAULT_EVAL_N), seed=seed, device=device,
                             progress=progress, class_names=names)


def _class_names(cfg: dict[str, Any]) -> list[str] | None:
    from ganforge.data import load_dataset

    d = cfg["data"]
    try:
        return load_dataset(d["source"], d["resolution"], d["channels"], data_dir=d["data_dir"]).classes
    except UserError:
        return None


def figures(f: RunFacts, *, device: str, seed: int, skip_nearest: bool, progress: bool) -> None:
    """RUN_DIR/compare-grid.png and RUN_DIR/nearest.png, made only where missing (a user's file is never
    replaced); the nearest-neighbour distances are always computed afresh, into a temporary file."""
    from ganforge.visualize import compare_grid, nearest_neighbours

    if f.step is None:
        return
    grid = f.path / "compare-grid.png"
    try:
        f.compare_png = grid if grid.is_file() else compare_grid(f.path, grid, seed=seed, device=device)
    except (UserError, OSError) as e:
        f.notes.append(f"real-vs-generated grid not made: {e}")
    if skip_nearest:
        return
    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = nearest_neighbours(f.path, Path(tmp) / "nearest.png", n=NEAREST_N, k=NEAREST_K, network=f.network,
                                     seed=seed, device=device, progress=progress)
        except UserError as e:
            f.notes.append(f"nearest-neighbour check not made: {e}")
            return
        png = Path(res["png"])
        res["png_bytes"] = png.read_bytes()
        own = f.path / "nearest.png"
        if not own.exists():
            try:
                atomic_write_bytes(own, res["png_bytes"])
            except OSError as e:
                f.notes.append(f"could not save {own}: {e}")
        res["png"] = str(own) if own.is_file() else None
        f.nearest = res
