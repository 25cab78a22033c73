"""Numbers behind the findings that FID alone hides: sample diversity, precision/recall on equal-size sets,
per-class coverage by a domain classifier (mode dropping), and the Inception Score of real data for scale.

All come from one batch of generated images embedded once, against the run's cached reference features
(the same cache `ganforge eval` and `ganforge nearest` use, so nothing real is embedded twice).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ganforge.data import parse_spec
from ganforge.metrics.domain import DOMAIN_DATASETS
from ganforge.metrics.features import FeatureExtractor, extract
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.precision_recall import precision_recall

# at most this many images per side for the pairwise statistics (O(n^2) distances)
DIVERSITY_N = 500


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance between distinct rows: the spread of a set of features."""
    t = torch.from_numpy(np.ascontiguousarray(x)).double()
    n = len(t)
    if n < 2:
        return float("nan")
    return float(torch.cdist(t, t).sum() / (n * (n - 1)))


def coverage_available(network: str, source: str, net: FeatureExtractor) -> bool:
    """Per-class coverage needs a classifier trained on the run's own dataset (its classes are the data's)."""
    return DOMAIN_DATASETS.get(network) == parse_spec(source)[0] and bool(getattr(net, "num_classes", None))


def class_coverage(real_logits: np.ndarray, fake_logits: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    """Share of real and of generated images the classifier assigns to each class.

    The real share uses the same classifier on the real images (not their labels), so its own errors cancel:
    a class the classifier rarely predicts is not mistaken for a dropped mode.
    """
    k = real_logits.shape[1]
    real = np.bincount(real_logits.argmax(1), minlength=k) / len(real_logits)
    fake = np.bincount(fake_logits.argmax(1), minlength=k) / len(fake_logits)
    names = names if len(names) == k else [f"class {i}" for i in range(k)]
    return [{"class": names[i], "real": float(real[i]), "generated": float(fake[i])} for i in range(k)]


def entropy_ratio(shares: list[float]) -> float:
    """Entropy of a class distribution over the entropy of the uniform one (1 = every class equally often)."""
    p = np.asarray([s for s in shares if s > 0], dtype=np.float64)
    return float(-(p * np.log(p)).sum() / np.log(len(shares))) if len(shares) > 1 else 1.0


def diagnose(
    G: torch.nn.Module, cfg: dict[str, Any], net: FeatureExtractor, network: str, real: dict[str, np.ndarray],
    *, n: int, seed: int = 0, device: str = "cpu", progress: bool = False, class_names: list[str] | None = None,
) -> dict[str, Any]:
    """Diagnostics of `n` samples of G against the reference features `real` (features, maybe logits)."""
    from ganforge.metrics.evaluate import generated_batches
    from ganforge.models.sampling import run_label_kind

    batches = generated_batches(G, n, seed + 7, label_kind=run_label_kind(cfg))
    fake = extract(net, batches, device=device, progress=progress, total=n)
    rng = np.random.default_rng(seed)
    m = min(n, len(real["features"]))
    idx = np.sort(rng.choice(len(real["features"]), m, replace=False))
    rf, ff = real["features"][idx], fake["features"][:m]
    precision, recall = precision_recall(rf, ff)
    d = min(DIVERSITY_N, m)
    out: dict[str, Any] = {
        "n": int(m),
        "precision": precision,
        "recall": recall,
        "diversity_ratio": mean_pairwise_distance(ff[:d]) / max(mean_pairwise_distance(rf[:d]), 1e-12),
        "coverage": None,
    }
    if "logits" in fake and "logits" in real:
        splits = min(10, m)
        out["is_generated"] = inception_score(fake["logits"][:m], splits=splits)[0]
        out["is_real"] = inception_score(real["logits"][idx], splits=splits)[0]
    if "logits" in fake and "logits" in real and coverage_available(network, cfg["data"]["source"], net):
        out["coverage"] = class_coverage(real["logits"], fake["logits"], class_names or [])
    return out
