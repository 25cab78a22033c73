"""The evaluation protocol: every choice that moves a metric, carried with the number it produced.

FID from two tools (or two runs of one tool) differs by more than most improvements once any of these differ: the
feature network and its weights, how many generated and reference images (FID is biased upward at small n), which
reference split, how images are resized and whether they were rounded to 8 bits, truncation, EMA weights and their
BatchNorm statistics. ganforge records all of them as `protocol` in every result (eval JSON, eval.jsonl, the report)
and keys its reference-statistics cache by the reference side of it, so numbers are only ever compared knowingly.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

# FID's bias shrinks like 1/n (Chong & Forsyth 2020); below this many generated images, numbers from different n
# are not comparable and are not comparable with papers (which use 10k or 50k).
MIN_COMPARABLE_N = 10_000


@dataclass(frozen=True)
class Protocol:
    """What a metric value depends on besides the images' content. `None` = not applicable (a folder of images has
    no truncation, EMA or standing statistics)."""

    network: str
    weights: str  # fingerprint of the feature network's weights
    n: int  # generated (or --fake) images
    n_ref: int  # reference images
    ref: str  # the reference source, with its split (e.g. "fashion-mnist:train")
    resize: str  # features.RESIZE_MODES
    quantized: bool  # generated images rounded to 8 bits before the network (as saved PNGs are)
    seed: int
    truncation: float | None = None
    ema: bool | None = None
    standing_stats: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Protocol:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def comparable_key(self) -> str:
        """What must agree for two values to be compared at all: everything but the seed and the sample counts (n
        changes the bias, which `n_warnings` reports rather than hides)."""
        d = self.as_dict()
        for k in ("seed", "n", "n_ref"):
            d.pop(k)
        return json.dumps(d, sort_keys=True)

    def describe(self) -> str:
        """One line for people: `fashion-mnist-cnn (w 1a2b3c4d) | 10,000 fake vs 60,000 fashion-mnist:train | ...`."""
        parts = [f"{self.network} (weights {self.weights[:8]})", f"{self.n:,} fake vs {self.n_ref:,} {self.ref}",
                 f"{self.resize} resize", "uint8" if self.quantized else "float"]
        if self.truncation is not None and self.truncation != 1.0:
            parts.append(f"psi {self.truncation:g}")
        if self.ema is not None:
            parts.append("G_ema" if self.ema else "G")
        if self.standing_stats is not None:
            parts.append("standing BN stats" if self.standing_stats else "BN stats as trained")
        parts.append(f"seed {self.seed}")
        return " | ".join(parts)


def n_warnings(protocols: list[Protocol]) -> list[str]:
    """Why FIDs of these protocols should not be ranked at face value: different n, or n below MIN_COMPARABLE_N."""
    out = []
    ns = sorted({p.n for p in protocols})
    if len(ns) > 1:
        out.append(f"computed from different numbers of generated images ({', '.join(f'{n:,}' for n in ns)}): FID is "
                   "biased upward by about 1/n, so compare fid_inf or re-evaluate at one --n")
    small = [n for n in ns if n < MIN_COMPARABLE_N]
    if small:
        out.append(f"n = {min(small):,} < {MIN_COMPARABLE_N:,} generated images: FID is biased upward and not "
                   "comparable with published numbers (use --n 10000 or more, or fid_inf)")
    return out


def protocol_of(record: dict[str, Any]) -> Protocol | None:
    """The protocol an eval record carries (None for records written before protocols were recorded)."""
    p = record.get("protocol")
    return Protocol.from_dict(p) if isinstance(p, dict) else None
