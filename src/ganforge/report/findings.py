"""Findings and limitations computed from the numbers, so the write-up says what this set of runs shows.

Every sentence here is conditional on a measured value crossing a stated threshold; the thresholds are
constants below so the report can quote them. Text uses **bold** for run names (rendered by render.py).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from ganforge.metrics.protocol import protocol_of
from ganforge.report.diagnostics import entropy_ratio
from ganforge.report.facts import RunFacts, group_key
from ganforge.runs.events import Stop

COLLAPSE_DIVERSITY = 0.5  # generated feature spread below this fraction of the real spread
COLLAPSE_IS = 0.5  # Inception Score below this fraction of the real images' IS
COLLAPSE_ENTROPY = 0.6  # class-distribution entropy below this fraction of the real one
MEMORIZATION = 0.5  # median sample-to-nearest-training distance below this fraction of the train-to-train one
DROPPED = 0.1  # a class is dropped when its generated share is below this fraction of its real share
UNDER = 0.5  # ... and under-represented below this fraction (the demo once gave Sandal 36% of its share, unnamed)
SMALL_N = 10_000

# (key, column title, better is lower, display scale, decimals)
METRICS: list[tuple[str, str, bool, float, int]] = [
    ("fid", "FID ↓", True, 1.0, 2),
    ("kid", "KID ×1000 ↓", True, 1000.0, 2),
    ("is", "IS ↑", False, 1.0, 2),
    ("precision", "precision ↑", False, 1.0, 3),
    ("recall", "recall ↑", False, 1.0, 3),
]


@dataclass
class Group:
    """Runs of one configuration (seeds)."""

    label: str
    runs: list[RunFacts]

    def values(self, key: str) -> list[float]:
        return [v for r in self.runs if (v := r.value(key)) is not None]

    def mean(self, key: str) -> float | None:
        v = self.values(key)
        return statistics.fmean(v) if v else None

    def std(self, key: str) -> float | None:
        v = self.values(key)
        return statistics.stdev(v) if len(v) > 1 else None


def groups(facts: list[RunFacts]) -> list[Group]:
    """Runs grouped by configuration: same name and settings, any seed (VOLATILE_KEYS ignored)."""
    out: dict[str, Group] = {}
    for f in facts:
        out.setdefault(group_key(f.cfg), Group(f.name, [])).runs.append(f)
    seen: dict[str, int] = {}
    for g in out.values():
        if len(g.runs) == 1:  # a lone run is named by its folder, which is unique
            g.label = g.runs[0].label
            continue
        seen[g.label] = seen.get(g.label, 0) + 1  # one name, different settings: number them, never merge them
        if seen[g.label] > 1:
            g.label = f"{g.label} (#{seen[g.label]})"
    return list(out.values())


def best_values(facts: list[RunFacts]) -> dict[str, float]:
    """Per metric column, the best value over the runs as displayed (scaled and rounded), for bold in the table;
    none where every run shows the same value."""
    out: dict[str, float] = {}
    for key, _, lower, scale, dec in METRICS:
        vals = [round(v * scale, dec) for f in facts if (v := f.value(key)) is not None]
        if len(set(vals)) > 1:
            out[key] = min(vals) if lower else max(vals)
    return out


def fmt(v: float | None, decimals: int = 2) -> str:
    """A number for people: fixed decimals, thousands separated; a dash when there is none."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:,.{decimals}f}" if abs(v) < 1000 else f"{v:,.0f}"


def _mean_pm(g: Group, key: str, scale: float = 1.0) -> str:
    m, s = g.mean(key), g.std(key)
    if m is None:
        return "–"
    n = len(g.values(key))
    return f"{fmt(m * scale)} ± {fmt(s * scale)} ({n} seeds)" if s is not None else fmt(m * scale)


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """(t, degrees of freedom, two-sided 5% critical t) of Welch's test that mean(b) > mean(a) by chance.
    A one-seed group borrows the other group's variance (its own is unmeasured) and adds no degrees of freedom."""
    from scipy.stats import t as student_t

    va = statistics.variance(a) if len(a) > 1 else None
    vb = statistics.variance(b) if len(b) > 1 else None
    va, vb = (va if va is not None else vb), (vb if vb is not None else va)
    qa, qb = va / len(a), vb / len(b)  # type: ignore[operator]
    se = math.sqrt(qa + qb)
    gap = statistics.fmean(b) - statistics.fmean(a)
    if se == 0:
        return (math.inf if gap > 0 else 0.0), float(len(a) + len(b) - 2), 0.0
    parts = [q**2 / (len(x) - 1) for q, x in ((qa, a), (qb, b)) if len(x) > 1]
    df = (qa + qb) ** 2 / sum(parts)
    return gap / se, df, float(student_t.ppf(0.975, df))


def ranking(facts: list[RunFacts]) -> list[str]:
    """Which configuration is best at the budget and by how much, against the seed spread."""
    measured = [f for f in facts if f.value("fid") is not None]
    if not measured:
        return ["No run has FID numbers (no evaluation in eval.jsonl and none computed): nothing can be ranked. "
                "Run the report without --no-eval, or `ganforge eval RUN_DIR` first."]
    nets = sorted({f.network for f in measured})
    if len(nets) > 1:
        return [f"The runs were measured with different feature networks ({', '.join(nets)}), whose FIDs are on "
                "different scales: no ranking is made. Pass one --network for all runs."]
    protocols = {p.comparable_key() for p in (protocol_of(f.metrics or {}) for f in measured) if p}  # old: none
    if len(protocols) > 1:
        return ["The runs' FIDs were measured under different protocols (resize, quantisation, truncation, EMA or "
                "standing statistics differ; see the tables): no ranking is made. Evaluate all runs the same way."]
    gs = sorted((g for g in groups(measured)), key=lambda g: g.mean("fid"))  # type: ignore[arg-type, return-value]
    out = []
    if len(gs) == 1:
        g = gs[0]
        return [f"Only one configuration (**{g.label}**) has metrics: FID {_mean_pm(g, 'fid')}; nothing to compare."]
    best, second = gs[0], gs[1]
    mb, ms = best.mean("fid"), second.mean("fid")
    assert mb is not None and ms is not None
    gap = ms - mb
    rel = 100 * gap / ms if ms else 0.0
    text = (f"Best at this budget: **{best.label}** with FID {_mean_pm(best, 'fid')}, {fmt(gap)} lower than "
            f"**{second.label}** ({_mean_pm(second, 'fid')}; {fmt(rel, 0 if rel >= 10 else 1)}% lower).")
    sb, ss = best.std("fid"), second.std("fid")
    if sb is None and ss is None:
        text += (" One seed per configuration, so the seed-to-seed spread is not measured; small gaps may be noise "
                 "(rerun with `--seeds 0,1,2`).")
    else:
        t, df, crit = welch(best.values("fid"), second.values("fid"))
        verdict = "a real difference" if t > crit else "not a reliable difference"
        text += (f" Against the seed spread: Welch t = {fmt(t, 1)} with {fmt(df, 1)} degrees of freedom (two-sided 5% "
                 f"threshold {fmt(crit, 2)}): {verdict} at this budget.")
    out.append(text)
    if len(gs) > 2:
        out.append("Ranking by FID: " + " < ".join(f"{g.label} ({fmt(g.mean('fid'))})" for g in gs) + ".")
    kid = [g for g in gs if g.mean("kid") is not None]
    if len(kid) >= 2:
        by_kid = min(kid, key=lambda g: g.mean("kid"))  # type: ignore[arg-type, return-value]
        if by_kid is best:
            out.append(f"KID agrees: **{best.label}** is also best by KID ({_mean_pm(best, 'kid', 1000)} ×10⁻³ vs "
                       f"{_mean_pm(second, 'kid', 1000)} ×10⁻³ for **{second.label}**).")
        else:
            out.append(f"KID disagrees: it ranks **{by_kid.label}** first ({_mean_pm(by_kid, 'kid', 1000)} ×10⁻³ vs "
                       f"{_mean_pm(best, 'kid', 1000)}), so the FID ranking is not robust.")
    return out


def collapse_signs(f: RunFacts) -> list[str]:
    """Why a run looks collapsed (empty when it does not)."""
    d = f.diagnostics or {}
    why = []
    r = d.get("diversity_ratio")
    if isinstance(r, float) and r < COLLAPSE_DIVERSITY:
        why.append(f"sample diversity (mean feature distance) is {r:.2f}x the real data's")
    ig, ir = d.get("is_generated"), d.get("is_real")
    if isinstance(ig, float) and isinstance(ir, float) and ig < COLLAPSE_IS * ir:
        why.append(f"IS {ig:.2f} against {ir:.2f} for real images")
    cov = d.get("coverage")
    if cov:
        e_gen = entropy_ratio([c["generated"] for c in cov])
        e_real = entropy_ratio([c["real"] for c in cov])
        if e_gen < COLLAPSE_ENTROPY * e_real:
            top = sorted(cov, key=lambda c: -c["generated"])[:2]
            share = sum(c["generated"] for c in top)
            why.append(f"{share:.0%} of samples fall in two classes ({', '.join(c['class'] for c in top)})")
    if f.collapse_warned:
        why.append("the trainer warned that samples from different noise were nearly identical (a collapse event)")
    return why


def dropped_classes(f: RunFacts, below: float = DROPPED) -> list[dict[str, Any]]:
    """Classes whose share of the samples is under `below` times their share of the real images."""
    cov = (f.diagnostics or {}).get("coverage") or []
    return [c for c in cov if c["real"] > 0 and c["generated"] < below * c["real"]]


def _shares(classes: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['class']} ({c['generated']:.1%} of samples vs {c['real']:.1%} of real images)"
                     for c in classes)


def memorization_ratio(f: RunFacts) -> float | None:
    """Median distance of a sample to its nearest training image over the median train-to-train one."""
    nn = f.nearest or {}
    rows, base = nn.get("distances"), nn.get("train_nn_median_distance")
    if not rows or not base:
        return None
    return statistics.median(row[0] for row in rows) / base


def findings(facts: list[RunFacts], budget: str | None = None) -> list[str]:
    """The findings section: ranking, budget, collapse, divergence, memorization, dropped classes."""
    out = ranking(facts)
    out.append(_budget(facts, budget))
    diverged = [f for f in facts if f.diverged_at is not None]
    for f in diverged:
        at = f"step {f.step}" if f.step is not None else "no checkpoint"
        out.append(f"**{f.label}** diverged (a NaN/inf loss) at step {f.diverged_at}; its numbers are of the last "
                   f"good checkpoint ({at}).")
    for f in facts:
        # a time-budget stop (train.max_seconds) is the end the run was given, not a short run
        if f not in diverged and f.step is not None and (f.target_steps is None or f.step < f.target_steps) and f.stopped_by != Stop.TIME_BUDGET:
            how = f"stopped by {f.stopped_by}" if f.stopped_by else "interrupted"
            out.append(f"**{f.label}** was {how} at step {f.step} of train.steps={f.target_steps}: it did not get "
                       "its full budget.")
    if not diverged:
        out.append("No run diverged (no divergence event).")
    measured = [f for f in facts if f.diagnostics]
    collapsed = [(f, why) for f in facts if (why := collapse_signs(f))]
    for f, why in collapsed:
        out.append(f"**{f.label}** shows signs of mode collapse: {'; '.join(why)}.")
    if measured and not collapsed:
        lo = min(f.diagnostics["diversity_ratio"] for f in measured)  # type: ignore[index]
        out.append(f"No run shows collapse: the lowest sample diversity is {lo:.2f}x the real data's "
                   f"(threshold {COLLAPSE_DIVERSITY}x).")
    ratios = [(f, r) for f in facts if (r := memorization_ratio(f)) is not None]
    memo = [(f, r) for f, r in ratios if r < MEMORIZATION]
    for f, r in memo:
        out.append(f"**{f.label}** may memorize: its samples' median distance to the nearest training image is "
                   f"{r:.2f}x the typical distance between two training images (threshold {MEMORIZATION}x); "
                   "look at its nearest-neighbour grid.")
    if ratios and not memo:
        lo, hi = min(r for _, r in ratios), max(r for _, r in ratios)
        span = f"{lo:.2f}x" if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}-{hi:.2f}x"
        out.append(f"No sign of memorization: samples lie {span} the typical training-image distance "
                   f"from their nearest training image (threshold {MEMORIZATION}x).")
    with_cov = [f for f in facts if (f.diagnostics or {}).get("coverage")]
    for f in with_cov:
        drop = dropped_classes(f)
        cov = f.diagnostics["coverage"]  # type: ignore[index]
        if len(drop) > 3:
            kept = [c["class"] for c in cov if c not in drop]
            out.append(f"**{f.label}** drops {len(drop)} of {len(cov)} classes (below {DROPPED:.0%} of their real "
                       f"share); only {', '.join(kept) or 'none'} remain.")
        elif drop:
            out.append(f"**{f.label}** drops classes: {_shares(drop)}.")
        under = [c for c in dropped_classes(f, UNDER) if c not in drop]
        if under:
            out.append(f"**{f.label}** under-represents classes (below {UNDER:.0%} of their real share): "
                       f"{_shares(under)}.")
    if with_cov and not any(dropped_classes(f, UNDER) for f in with_cov):
        out.append(f"Every run covers every class (each gets at least {UNDER:.0%} of its real share of samples).")
    elif with_cov and not any(dropped_classes(f) for f in with_cov):
        out.append(f"No run drops a class (every class gets at least {DROPPED:.0%} of its real share of samples).")
    if measured and not with_cov:
        out.append("Per-class coverage: not available (no domain classifier with class logits for "
                   f"{', '.join(sorted({f.source for f in measured}))}).")
    return out


def _budget(facts: list[RunFacts], budget: str | None) -> str:
    seen = [f.images_seen for f in facts if f.images_seen]
    secs = [f.train_seconds for f in facts if f.train_seconds]
    span = []
    if seen:
        span.append(f"images seen {min(seen):,}" + (f"-{max(seen):,}" if max(seen) != min(seen) else " by every run"))
    if secs:
        lo, hi = _duration(min(secs)), _duration(max(secs))
        span.append(f"training time {lo}" + (f"-{hi}" if hi != lo else ""))
    tail = f" ({'; '.join(span)})" if span else ""
    if budget:
        return f"Budget: {budget}{tail}."
    return f"No common budget was declared (these runs were not made by `ganforge compare`){tail}."


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def limitations(facts: list[RunFacts], budget: str | None = None) -> list[str]:
    from ganforge.metrics.domain import DOMAIN_DATASETS

    out = []
    nets = sorted({f.network for f in facts if f.metrics})
    for net in nets:
        if net in DOMAIN_DATASETS:
            out.append(f"The metrics use {net} features, a small classifier trained on {DOMAIN_DATASETS[net]} and "
                       "shipped with ganforge: they rank runs on this dataset but are not comparable with the "
                       "Inception-V3 FID figures of papers.")
        elif net == "inception-fid":
            out.append("The metrics use Inception-V3 features (ImageNet-trained): small or gray images are upsampled "
                       "to 299 px, so values compare with published FIDs only at the same resolution, n and "
                       "reference set.")
        else:
            out.append(f"The metrics use {net} features: compare them only with numbers from the same network.")
    ns = sorted({int(f.metrics["n"]) for f in facts if f.metrics and isinstance(f.metrics.get("n"), int)})
    if ns and ns[0] < SMALL_N:
        out.append(f"FID was computed from {', '.join(f'{n:,}' for n in ns)} generated images, below the usual "
                   "10k-50k: FID is biased upwards at small n (the bias shrinks like 1/n and differs between "
                   "models), so only equal-n values are comparable; KID is unbiased.")
    if len(ns) > 1:
        out.append("The runs were evaluated with different sample counts; their FIDs carry different biases.")
    pr = sorted({int(f.diagnostics["n"]) for f in facts if f.diagnostics})
    if pr:
        out.append(f"Precision, recall, diversity and coverage use {', '.join(f'{n:,}' for n in pr)} generated and "
                   "as many real images (k = 3 nearest neighbours for precision/recall).")
    gs = groups(facts)
    most = max(len(g.runs) for g in gs) if gs else 0
    out.append(f"{'One seed' if most <= 1 else f'At most {most} seeds'} per configuration: seed-to-seed spread "
               f"{'is not measured' if most <= 1 else f'is estimated from {most} values'}.")
    if budget:
        out.append(f"Budget: {budget}. Rankings at a small budget favour cheap, fast-converging models and may "
                   "change with longer training.")
    else:
        out.append("The runs may not have had equal budgets; rankings at small budgets favour cheap, fast-converging "
                   "models and may change with longer training.")
    if any(f.train_seconds_source.startswith("estimated") for f in facts):
        out.append("Training times marked 'estimated' are reconstructed from metrics.jsonl throughput (each logged "
                   "window's steps x batch size / img_per_s); they exclude start-up and pauses between resumes.")
    return out
