"""The report's plots as PNG bytes (matplotlib's Agg canvas directly: no pyplot state, no display, no
global backend switch in the caller's process)."""

from __future__ import annotations

import io
from typing import Any

from ganforge.report.facts import RunFacts, curve


def _figure(width: float = 7.0, height: float = 3.6) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def fid_curves(facts: list[RunFacts], x: str) -> bytes | None:
    """FID of every run against `x` ("train_seconds" or "images_seen") on one axis; a lone point is a marker."""
    fig = _figure()
    ax = fig.add_subplot()
    drawn = 0
    for f in facts:
        pts = [p for p in curve(f, f.network) if p.get(x) is not None]
        if not pts:
            continue
        xs = [p[x] / 60 if x == "train_seconds" else p[x] for p in pts]
        ax.plot(xs, [p["fid"] for p in pts], marker="o", ms=4 if len(pts) > 1 else 7, lw=1.4, label=f.label)
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("training time (min)" if x == "train_seconds" else "real images seen")
    ax.set_ylabel("FID (lower is better)")
    nets = sorted({f.network for f in facts})
    ax.set_title(f"FID vs {'wall-clock' if x == 'train_seconds' else 'images seen'} ({', '.join(nets)} features)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _smooth(v: list[float], k: int) -> list[float]:
    out, acc = [], 0.0
    for i, x in enumerate(v):
        acc += x
        if i >= k:
            acc -= v[i - k]
        out.append(acc / min(i + 1, k))
    return out


def loss_curves(facts: list[RunFacts]) -> bytes | None:
    """D and G losses of all runs against step (raw, faint, and a moving average)."""
    fig = _figure(9.0, 3.4)
    axes = fig.subplots(1, 2)
    drawn = 0
    for i, f in enumerate(facts):
        recs = [r for r in f.losses if isinstance(r.get("loss_d"), (int, float)) and isinstance(r.get("step"), int)]
        if not recs:
            continue
        drawn += 1
        steps = [r["step"] for r in recs]
        color = f"C{i % 10}"
        for ax, key in zip(axes, ("loss_d", "loss_g"), strict=True):
            v = [float(r.get(key, float("nan"))) for r in recs]
            ax.plot(steps, v, color=color, lw=0.6, alpha=0.3)
            ax.plot(steps, _smooth(v, max(1, len(v) // 25)), color=color, lw=1.4, label=f.label)
    if not drawn:
        return None
    for ax, title in zip(axes, ("D loss", "G loss"), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return _png(fig)


def coverage_bars(cov: list[dict[str, Any]], title: str) -> bytes:
    """Per class: share of real images (as the classifier sees them) beside the share of samples."""
    fig = _figure(5.4, 2.9)
    ax = fig.add_subplot()
    xs = range(len(cov))
    ax.bar([x - 0.2 for x in xs], [c["real"] for c in cov], width=0.4, label="real", color="#888")
    ax.bar([x + 0.2 for x in xs], [c["generated"] for c in cov], width=0.4, label="generated", color="C0")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([c["class"] for c in cov], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("share")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)
