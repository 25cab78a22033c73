"""`ganforge report`: one self-contained HTML file (plus Markdown) that compares runs and says what they show.

    write_report(["runs/dcgan", "runs/stylegan2"], "report.html")   # also writes report.md and report.json

facts.py reads what each run recorded, collect.py measures what it did not (metrics, diagnostics, figures),
findings.py turns the numbers into findings and limitations, plots.py and render.py draw and write them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ganforge.errors import UserError
from ganforge.fileio import atomic_write_bytes
from ganforge.images import check_new_file
from ganforge.report.facts import RunFacts

if TYPE_CHECKING:
    from ganforge.report.render import Report

__all__ = ["RunFacts", "build", "report_paths", "write_report"]


def report_paths(out: str | Path, overwrite: bool = False) -> tuple[Path, Path, Path]:
    """(html, md, json) paths, checked before any work: never replace a user's file without `overwrite`."""
    html = Path(out)
    if html.suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {html} must end in .html (the Markdown copy goes beside it as .md)")
    md, js = html.with_suffix(".md"), html.with_suffix(".json")
    for p in (html, md, js):
        check_new_file(p, overwrite)
    return html, md, js


def build(
    facts: list[RunFacts], *, title: str | None = None, budget: str | None = None, seconds: float = 0.0
) -> Report:
    """A render.Report of measured facts: findings, limitations, plots, environment."""
    from ganforge.report import plots
    from ganforge.report.environment import environment
    from ganforge.report.findings import findings, limitations
    from ganforge.report.render import Report

    names = ", ".join(f.label for f in facts)
    r = Report(
        title=title or (f"ganforge report: {names}" if len(names) <= 80 else f"ganforge report: {len(facts)} runs"),
        written=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        facts=facts,
        findings=findings(facts, budget),
        limitations=limitations(facts, budget),
        environment=environment(),
        budget=budget,
        seconds=seconds,
    )
    r.plots = {
        "fid_time": plots.fid_curves(facts, "train_seconds"),
        "fid_images": plots.fid_curves(facts, "images_seen"),
        "losses": plots.loss_curves(facts),
    }
    return r


def write_report(
    run_dirs: Sequence[str | Path], out: str | Path, *, eval_n: int | None = None, no_eval: bool = False,
    network: str | None = None, device: str = "cpu", seed: int = 0, overwrite: bool = False, title: str | None = None,
    budget: str | None = None, progress: bool = False,
) -> Path:
    """Write OUT (.html, self-contained), OUT with .md and OUT with .json (the numbers); returns the HTML path.

    Runs without an evaluation at their final step are evaluated with `eval_n` images (default 2000, marked
    in the table; the result is appended to their eval.jsonl like `ganforge eval` does), unless `no_eval`.
    `budget` is a sentence describing the common budget, when the runs had one (`ganforge compare` sets it).
    """
    from ganforge.report.collect import collect
    from ganforge.report.render import to_html, to_json, to_markdown

    html, md, js = report_paths(out, overwrite)
    t0 = time.perf_counter()
    facts = collect(run_dirs, eval_n=eval_n, no_eval=no_eval, network=network, device=device, seed=seed,
                    progress=progress)
    r = build(facts, title=title, budget=budget, seconds=time.perf_counter() - t0)
    atomic_write_bytes(html, to_html(r).encode("utf-8"))
    atomic_write_bytes(md, to_markdown(r, md.parent).encode("utf-8"))
    atomic_write_bytes(js, to_json(r).encode("utf-8"))
    return html
