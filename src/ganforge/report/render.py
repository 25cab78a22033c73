"""The report as one self-contained HTML file (inline CSS, every image a data: URI, no external URL) and as
Markdown (tables and text; images linked as files relative to it, plots only in the HTML)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ganforge.metrics.protocol import n_warnings, protocol_of
from ganforge.report import plots
from ganforge.report.facts import RunFacts, flatten
from ganforge.report.findings import DROPPED, METRICS, best_values, fmt, groups, memorization_ratio

MAX_IMAGE_BYTES = 1_500_000  # larger PNGs are downscaled before embedding, to keep the HTML openable

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;
padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ccc;padding:.25em .55em;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}
.meta{color:#666}.row{display:flex;flex-wrap:wrap;gap:1.2em;align-items:flex-start}
.row figure{margin:.3em 0;max-width:100%}.row img{display:block;max-height:400px;max-width:100%;
image-rendering:pixelated}figure{margin:.5em 0}figcaption{color:#555;font-size:.9em;max-width:36em}
img.plot{max-width:100%}
code{background:#f4f4f4;padding:0 .2em}li{margin:.25em 0}
"""


@dataclass
class Report:
    """Everything both renderings show; built once by `build`."""

    title: str
    written: str
    facts: list[RunFacts]
    findings: list[str]
    limitations: list[str]
    environment: dict[str, str]
    budget: str | None = None
    plots: dict[str, bytes | None] = field(default_factory=dict)
    seconds: float = 0.0


def data_uri(png: bytes) -> str:
    if len(png) > MAX_IMAGE_BYTES:
        from PIL import Image

        im = Image.open(io.BytesIO(png))
        scale = (MAX_IMAGE_BYTES / len(png)) ** 0.5
        im = im.resize((max(1, int(im.width * scale)), max(1, int(im.height * scale))))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _e(text: Any) -> str:
    """HTML-escaped text with **bold** made <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(str(text)))


def _img(png: bytes, alt: str, cls: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    return f'<img{c} alt="{html.escape(alt)}" src="{data_uri(png)}">'


def _duration(s: float | None) -> str:
    if s is None:
        return "–"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def metric_rows(facts: list[RunFacts]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of the metric table; each cell is (text, is the column's best)."""
    best = best_values(facts)
    head = ["run", "config", "seed", "step", "images seen", "train time", *[t for _, t, *_ in METRICS],
            "n gen / n ref", "metrics"]
    rows = []
    for f in facts:
        m = f.metrics or {}
        time_note = " (est.)" if f.train_seconds_source.startswith("estimated") else ""
        cells = [(f.label, False), (f.name, False), (str(f.seed), False),
                 (f"{f.step:,}" if f.step is not None else "–", False),
                 (f"{f.images_seen:,}" if f.images_seen is not None else "–", False),
                 (_duration(f.train_seconds) + time_note, False)]
        for key, _, _, scale, dec in METRICS:
            v = f.value(key)
            shown = None if v is None else round(v * scale, dec)
            cells.append((fmt(shown, dec), shown is not None and shown == best.get(key)))
        n = f"{m['n']:,} / {m['n_ref']:,}" if isinstance(m.get("n"), int) and isinstance(m.get("n_ref"), int) else "–"
        cells += [(n, False), (f.metrics_note, False)]
        rows.append(cells)
    return head, rows


def group_rows(facts: list[RunFacts]) -> tuple[list[str], list[list[str]]] | None:
    """Mean ± std over seeds per configuration; None when no configuration has more than one seed."""
    gs = groups(facts)
    if all(len(g.runs) < 2 for g in gs):
        return None
    head = ["config", "seeds", *[t for _, t, *_ in METRICS]]
    rows = []
    for g in gs:
        row = [g.label, ", ".join(str(r.seed) for r in g.runs)]
        for key, _, _, scale, dec in METRICS:
            m, s = g.mean(key), g.std(key)
            row.append(
                "–" if m is None else fmt(m * scale, dec) + (f" ± {fmt(s * scale, dec)}" if s is not None else "")
            )
        rows.append(row)
    return head, rows


def config_diff(facts: list[RunFacts]) -> tuple[list[str], list[list[str]]]:
    """Flattened dotted keys whose values differ between runs (empty rows with one run)."""
    flats = [flatten(f.cfg) for f in facts]
    keys = sorted(set().union(*flats)) if flats else []
    rows = []
    for k in keys:
        vals = [json.dumps(fl.get(k, "(absent)"), default=str) for fl in flats]
        if len(set(vals)) > 1:
            rows.append([k, *[v if len(v) <= 60 else v[:57] + "..." for v in vals]])
    return ["key", *[f.label for f in facts]], rows


def coverage_tables(facts: list[RunFacts]) -> list[tuple[list[str], list[list[Any]]]]:
    """Per dataset: rows of class, real share, and each run's generated share (dropped classes marked)."""
    by_source: dict[str, list[RunFacts]] = {}
    for f in facts:
        if (f.diagnostics or {}).get("coverage"):
            by_source.setdefault(f.source, []).append(f)
    out = []
    for runs in by_source.values():
        covs = [f.diagnostics["coverage"] for f in runs]  # type: ignore[index]
        rows = []
        for i, c in enumerate(covs[0]):
            row: list[Any] = [c["class"], f"{c['real']:.1%}"]
            for cov in covs:
                g, real = cov[i]["generated"], cov[i]["real"]
                dropped = real > 0 and g < DROPPED * real
                row.append((f"{g:.1%}" + (" dropped" if dropped else ""), dropped))
            rows.append(row)
        out.append((["class", "real", *[f.label for f in runs]], rows))
    return out


def protocol_tables(facts: list[RunFacts]) -> list[tuple[list[RunFacts], list[str]]]:
    """Runs split by evaluation protocol (metrics/protocol.py; seed and n aside): one metric table each, with the lines
    that go above it (its protocol, small-n and different-n warnings, and a loud note when there are several)."""
    groups: dict[str, list[RunFacts]] = {}
    for f in facts:
        p = protocol_of(f.metrics or {})
        groups.setdefault("" if p is None else p.comparable_key(), []).append(f)
    out = []
    for key, runs in groups.items():
        protos = [p for p in (protocol_of(f.metrics or {}) for f in runs) if p is not None]
        if key:
            lines = [f"Protocol: {protos[0].describe()}."]
        elif any(f.metrics for f in runs):
            lines = ["Protocol: not recorded (evaluated before ganforge recorded protocols)."]
        else:
            lines = ["No metrics."]
        if len(groups) > 1:
            lines.insert(0, f"NOT COMPARABLE with the other {len(groups) - 1} table(s): these runs were evaluated "
                            "with another protocol (network, weights, reference, resize, quantisation, truncation, "
                            "EMA or standing statistics differ).")
        lines += [f"Warning: {w}." for w in n_warnings(protos)]
        out.append((runs, lines))
    return out


def measurement_caption(facts: list[RunFacts]) -> str:
    nets = sorted({f.network for f in facts if f.metrics})
    n = sorted({int(f.metrics["n"]) for f in facts if f.metrics and isinstance(f.metrics.get("n"), int)})
    ref = sorted({int(f.metrics["n_ref"]) for f in facts if f.metrics and isinstance(f.metrics.get("n_ref"), int)})
    pr = sorted({int(f.diagnostics["n"]) for f in facts if f.diagnostics})
    parts = [f"Feature network: {', '.join(nets) or 'none (no metrics)'}"]
    if n:
        parts.append(f"FID/KID/IS from {', '.join(f'{x:,}' for x in n)} generated images against "
                     f"{', '.join(f'{x:,}' for x in ref)} reference images")
    if pr:
        parts.append(f"precision/recall from {', '.join(f'{x:,}' for x in pr)} generated vs as many real images")
    parts.append("EMA generator; best value per column in bold")
    return "; ".join(parts) + "."


# --------------------------------------------------------------------------------------------------------------
def _table(head: list[str], rows: list[list[Any]], left: int = 1) -> str:
    def cell(tag: str, i: int, c: Any) -> str:
        text, bold = c if isinstance(c, tuple) else (c, False)
        cls = ' class="l"' if i < left else ""
        inner = f"<strong>{_e(text)}</strong>" if bold else _e(text)
        return f"<{tag}{cls}>{inner}</{tag}>"

    h = "".join(cell("th", i, c) for i, c in enumerate(head))
    b = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _nearest_caption(f: RunFacts) -> str:
    nn = f.nearest or {}
    r = memorization_ratio(f)
    if r is None:
        return ""
    med = sorted(row[0] for row in nn["distances"])[len(nn["distances"]) // 2]
    return (f"median distance of a sample to its nearest training image {med:.3g}; between two training images "
            f"{nn['train_nn_median_distance']:.3g} (ratio {r:.2f}; {nn['network']} features)")


def to_html(r: Report) -> str:
    facts = r.facts
    out = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_e(r.title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{_e(r.title)}</h1>",
           f"<p class=\"meta\">Written {_e(r.written)} in {r.seconds:.0f} s; {len(facts)} run(s): "
           f"{_e(', '.join(f.label for f in facts))}.</p>"]
    out.append("<h2>Findings</h2><ul>" + "".join(f"<li>{_e(x)}</li>" for x in r.findings) + "</ul>")
    out.append(f"<h2>Metrics</h2><p>{_e(measurement_caption(facts))}</p>")
    for runs, lines in protocol_tables(facts):
        head, rows = metric_rows(runs)
        out.append("".join(f"<p class=\"protocol\">{_e(x)}</p>" for x in lines) + _table(head, rows, 2))
    g = group_rows(facts)
    if g:
        out.append("<h3>Mean ± standard deviation over seeds</h3>" + _table(*g, left=2))
    out.append("<h2>FID during training</h2>")
    shown = False
    for key, cap in (("fid_time", "FID against training wall-clock"), ("fid_images", "FID against real images seen")):
        if r.plots.get(key):
            out.append(f"<figure>{_img(r.plots[key], cap, 'plot')}<figcaption>{_e(cap)}</figcaption></figure>")
            shown = True
    if not shown:
        out.append("<p>No FID values with a step in eval.jsonl: no curve to draw.</p>")
    out.append("<h2>Losses</h2>")
    out.append(_img(r.plots["losses"], "loss curves", "plot") if r.plots.get("losses") else
               "<p>No losses in metrics.jsonl.</p>")
    out.append("<h2>Samples</h2>")
    for f in facts:
        parts = [f'<h3>{_e(f.label)}</h3><div class="row">']
        if f.samples_png and f.samples_png.is_file():
            parts.append(f"<figure>{_img(f.samples_png.read_bytes(), 'final samples')}<figcaption>final sample grid "
                         f"({_e(f.samples_png.name)}, fixed noise)</figcaption></figure>")
        if f.compare_png and f.compare_png.is_file():
            parts.append(f"<figure>{_img(f.compare_png.read_bytes(), 'real vs generated')}<figcaption>real (left) vs "
                         "generated (right)</figcaption></figure>")
        if f.nearest and f.nearest.get("png_bytes"):
            parts.append(f"<figure>{_img(f.nearest['png_bytes'], 'nearest neighbours')}<figcaption>each row: a sample, "
                         f"then its nearest training images; {_e(_nearest_caption(f))}</figcaption></figure>")
        parts.append("</div>")
        out.append("".join(parts))
    out.append("<h2>Per-class coverage</h2><p>Share of generated images the domain classifier puts in each class, "
               "beside the share of real images it puts there; a class under "
               f"{DROPPED:.0%} of its real share is marked dropped.</p>")
    for head_c, rows_c in coverage_tables(facts):
        out.append(_table(head_c, rows_c))
    charts = [(f, plots.coverage_bars(f.diagnostics["coverage"], f"{f.label} ({f.network})"))  # type: ignore[index]
              for f in facts if (f.diagnostics or {}).get("coverage")]
    if charts:
        out.append('<div class="row">' + "".join(f"<figure>{_img(png, f.label + ' coverage', 'plot')}</figure>"
                                                 for f, png in charts) + "</div>")
    for f in facts:
        if not (f.diagnostics or {}).get("coverage"):
            why = ("no domain classifier with class logits for its dataset" if f.diagnostics else
                   "no diagnostics (--no-eval or no checkpoint)")
            out.append(f"<p><strong>{_e(f.label)}</strong>: not available ({why}).</p>")
    head_d, rows_d = config_diff(facts)
    out.append("<h2>Config differences</h2>")
    out.append(_table(head_d, rows_d) if rows_d else "<p>One run, or all configs are equal.</p>")
    out.append("<h2>Environment</h2><p>Machine writing this report (timings of runs made elsewhere come from "
               "there):</p>" + _table(["", "value"], [[k, v] for k, v in r.environment.items()], 2))
    run_rows = [[f.label, f.versions.get("ganforge_version", "–"), f.versions.get("torch_version", "–"),
                 f.started or "–", f.finished or "–", _duration(f.train_seconds), f.train_seconds_source or "–"]
                for f in facts]
    out.append(_table(["run", "ganforge", "torch", "train.log first", "train.log last", "training time",
                       "time from"], run_rows))
    out.append("<h2>Limitations</h2><ul>" + "".join(f"<li>{_e(x)}</li>" for x in r.limitations) + "</ul>")
    notes = [(f.label, n) for f in facts for n in f.notes]
    if notes:
        out.append("<h2>Notes</h2><ul>" + "".join(f"<li><strong>{_e(a)}</strong>: {_e(b)}</li>" for a, b in notes)
                   + "</ul>")
    out.append("</body></html>\n")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------------------
def _md_cell(c: Any) -> str:
    text, bold = c if isinstance(c, tuple) else (c, False)
    text = str(text).replace("|", "\\|")
    return f"**{text}**" if bold and text != "–" else text


def _md_table(head: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _md_link(path: Path | str | None, base: Path, alt: str) -> str | None:
    if not path or not Path(path).is_file():
        return None
    rel = os.path.relpath(Path(path).resolve(), base.resolve()).replace(os.sep, "/")
    return f"![{alt}]({rel.replace(' ', '%20')})"


def to_json(r: Report) -> str:
    """The report's numbers for scripts (benchmarks/recipes.py reads it): per run its metrics record as eval.jsonl
    holds it, its diagnostics (precision/recall, diversity, class coverage) and where it stands; then the findings."""
    runs = [{
        "label": f.label, "path": str(f.path), "name": f.name, "seed": f.seed, "step": f.step,
        "images_seen": f.images_seen, "train_seconds": f.train_seconds, "network": f.network,
        "metrics": f.metrics, "metrics_note": f.metrics_note, "diagnostics": f.diagnostics,
        "diverged_at": f.diverged_at, "notes": f.notes,
    } for f in r.facts]
    doc = {"title": r.title, "written": r.written, "budget": r.budget, "runs": runs, "findings": r.findings,
           "limitations": r.limitations, "environment": r.environment}
    return json.dumps(doc, indent=1, default=_json_value)


def _json_value(v: Any) -> Any:
    """numpy scalars and paths, which diagnostics and records may hold, as plain JSON values."""
    if isinstance(v, Path):
        return str(v)
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def to_markdown(r: Report, base: Path) -> str:
    """Markdown beside the HTML: images link to the run folders' PNGs, relative to `base`."""
    facts = r.facts
    out = [f"# {r.title}", "", f"Written {r.written}; {len(facts)} run(s). Plots are in the HTML report.", "",
           "## Findings", ""]
    out += [f"- {x}" for x in r.findings] + ["", "## Metrics", "", measurement_caption(facts), ""]
    for runs, lines in protocol_tables(facts):
        out += [*lines, ""] + _md_table(*metric_rows(runs))
    g = group_rows(facts)
    if g:
        out += ["Mean ± standard deviation over seeds:", ""] + _md_table(*g)
    out += ["## Samples", ""]
    for f in facts:
        links = [x for x in (_md_link(f.samples_png, base, f"{f.label} samples"),
                             _md_link(f.compare_png, base, f"{f.label} real vs generated"),
                             _md_link((f.nearest or {}).get("png"), base, f"{f.label} nearest neighbours")) if x]
        out += [f"### {f.label}", "", *links, ""]
        if f.nearest:
            out += [_nearest_caption(f), ""]
    tables = coverage_tables(facts)
    out += ["## Per-class coverage", ""]
    for head_c, rows_c in tables:
        out += _md_table(head_c, rows_c)
    if not tables:
        out += ["Not available (no run with a domain classifier for its dataset, or --no-eval).", ""]
    head_d, rows_d = config_diff(facts)
    out += ["## Config differences", ""] + (_md_table(head_d, rows_d) if rows_d else ["All configs are equal.", ""])
    out += ["## Environment", ""] + _md_table(["", "value"], [[k, v] for k, v in r.environment.items()])
    out += ["## Limitations", ""] + [f"- {x}" for x in r.limitations] + [""]
    notes = [f"- {f.label}: {n}" for f in facts for n in f.notes]
    if notes:
        out += ["## Notes", "", *notes, ""]
    return "\n".join(out)
