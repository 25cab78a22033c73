"""Evaluation as users run it: generate (or load) images, extract features, compare with cached
reference statistics, and log the result in the run.

Reference features are cached under <cache>/stats/, keyed by (source, split, network + its weights,
resolution, channels, count, seed), so a second evaluation against the same reference only has to
embed the generated images.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ganforge.data import load_dataset, parse_spec
from ganforge.data.paths import cache_root
from ganforge.errors import UserError
from ganforge.fileio import atomic_write_file
from ganforge.metrics.domain import DOMAIN_DATASETS
from ganforge.metrics.features import FeatureExtractor, build_extractor, extract
from ganforge.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kernel_inception_distance
from ganforge.metrics.precision_recall import precision_recall

ALL_METRICS = ("fid", "kid", "is", "pr")
STATS_FORMAT = 2  # 2: mean and covariance stored next to the features
# Domain networks that ganforge ships: offline, and the honest feature space for gray 28x28 data.
DOMAIN_NETWORKS = {dataset: net for net, dataset in DOMAIN_DATASETS.items()}


def default_network(spec: str) -> str:
    """The feature network a dataset is judged with: its domain CNN where ganforge ships one, else Inception."""
    kind = parse_spec(spec)[0]
    return DOMAIN_NETWORKS.get(kind, "inception-fid")


def parse_metrics(text: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [m.strip().lower() for m in (text.split(",") if isinstance(text, str) else text) if m.strip()]
    bad = [m for m in names if m not in ALL_METRICS]
    if bad or not names:
        raise UserError(f"unknown metric {', '.join(bad) or '(none)'}; choose from {', '.join(ALL_METRICS)}")
    return names


def _weights_id(net: FeatureExtractor) -> str:
    """A fingerprint of the network's weights, so a retrained network never reuses stale statistics."""
    h = hashlib.sha256(net.name.encode())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])
        h.update(str(float(v.float().sum())).encode())
    return h.hexdigest()[:16]


def subset_indices(n_total: int, n: int, seed: int) -> np.ndarray:
    """A seeded, sorted subset of n of n_total rows (all of them when n >= n_total)."""
    if n >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, n, replace=False))


def dataset_batches(images: np.ndarray, idx: np.ndarray, batch_size: int = 500) -> Iterator[torch.Tensor]:
    """uint8 NHWC rows -> float NCHW batches in [-1, 1], the same range generators produce."""
    for i in range(0, len(idx), batch_size):
        x = torch.from_numpy(np.asarray(images[idx[i : i + batch_size]]))
        yield x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def reference_features(
    spec: str, net: FeatureExtractor, *, resolution: int, channels: int, n: int | None, data_dir: str | None = None,
    seed: int = 0, device: str = "cpu", cache: bool = True, progress: bool = True,
) -> tuple[dict[str, np.ndarray], bool]:  # fmt: skip
    """Features of (a seeded subset of) a data source; returns (features, came_from_cache)."""
    data = load_dataset(spec, resolution, channels, data_dir=data_dir)
    count = len(data.images) if n is None else min(n, len(data.images))
    key_src = json.dumps([STATS_FORMAT, data.spec, net.name, _weights_id(net), resolution, channels, count, seed])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in data.spec)[-40:]
    path = cache_root() / "stats" / f"{slug}-{net.name}-{resolution}px-{count}-{key}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}, True
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # damaged: recompute
    idx = subset_indices(len(data.images), count, seed)
    feats = extract(net, dataset_batches(data.images, idx), device=device, progress=progress, total=len(idx))
    if len(feats["features"]) >= 2:  # FID's Gaussian, computed once: a cached reference costs nothing more
        feats["mu"], feats["sigma"] = gaussian_stats(feats["features"])
    if cache:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **feats)

        atomic_write_file(path, write)
    return feats, False


def compute_metrics(
    real: dict[str, np.ndarray], fake: dict[str, np.ndarray], metrics: list[str], *, kid_subsets: int = 100,
    kid_subset_size: int = 1000, k: int = 3,
) -> dict[str, float]:  # fmt: skip
    """metric name -> value, from two feature dicts (features, logits)."""
    out: dict[str, float] = {}
    if "fid" in metrics:
        if "mu" in real or "mu" in fake:  # a cached reference brings its Gaussian: no 60k x D covariance again
            out["fid"] = frechet_distance(*_gaussian(real), *_gaussian(fake))
        else:
            out["fid"] = fid_from_features(real["features"], fake["features"])
    if "kid" in metrics:
        size = min(kid_subset_size, len(real["features"]), len(fake["features"]))
        out["kid"], out["kid_std"] = kernel_inception_distance(real["features"], fake["features"], kid_subsets, size)
    if "is" in metrics:
        if "logits" not in fake:
            raise UserError("the chosen --network has no class logits, so it cannot give an Inception Score")
        out["is"], out["is_std"] = inception_score(fake["logits"], splits=min(10, len(fake["logits"])))
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall(real["features"], fake["features"], k=k)
    return {key: float(v) for key, v in out.items()}


def _gaussian(feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (feats["mu"], feats["sigma"]) if "mu" in feats else gaussian_stats(feats["features"])


def generated_batches(G: torch.nn.Module, n: int, seed: int, batch_size: int = 250) -> Iterator[torch.Tensor]:
    from ganforge.models.inference import inference_copy
    from ganforge.models.sampling import sample

    G = inference_copy(G)  # BN folded into the convs, channels-last: the same images, faster
    for i in range(0, n, batch_size):
        # seeds per block keep the images the same whatever the block size
        with torch.inference_mode():  # no autograd bookkeeping; only features are taken from these
            x = sample(G, min(batch_size, n - i), seed=seed * 1_000_003 + i // batch_size)
        yield x


def evaluate_generator(
    G: torch.nn.Module, cfg: dict[str, Any], *, metrics: str | list[str] = "fid,kid,is", n: int = 10000,
    network: str | FeatureExtractor | None = None, ref: str | None = None, device: str = "cpu", seed: int = 0,
    inception_weights: str | None = None, progress: bool = True, n_ref: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Metrics of `n` images of generator G (trained with config `cfg`) against a reference source (default:
    its training data), as a record for eval.jsonl. The function behind `ganforge eval` and FID during
    training; `network` may be a built extractor, so a trainer builds it once."""
    names = parse_metrics(metrics)
    if n < 2:
        raise UserError(f"--n must be at least 2 images, got {n}")
    d = cfg["data"]
    ref = ref or d["source"]
    net = network if isinstance(network, FeatureExtractor) else build_network(network or default_network(d["source"]),
                                                                             inception_weights)  # fmt: skip
    t0 = time.perf_counter()
    real, cached = reference_features(ref, net, resolution=d["resolution"], channels=d["channels"], n=n_ref,
                                      data_dir=d["data_dir"], seed=seed, device=device, progress=progress)  # fmt: skip
    fake = extract(net, generated_batches(G, n, seed + 1), device=device, progress=progress, total=n)
    result = compute_metrics(real, fake, names)
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "network": net.name, "n": n,
            "n_ref": int(len(real["features"])), "ref": ref, "ref_cached": cached,
            "seconds": round(time.perf_counter() - t0, 2), **result}  # fmt: skip


def evaluate_sources(
    real: str, fake: str, *, metrics: str | list[str] = "fid,kid", n: int | None = None, network: str | None = None,
    resolution: int | None = None, channels: int | None = None, device: str = "cpu", seed: int = 0,
    inception_weights: str | None = None, data_dir: str | None = None, progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Metrics between any two image sources (folders, zips, dataset specs), like pytorch-fid's CLI."""
    names = parse_metrics(metrics)
    net_name = network or default_network(real)
    net = build_network(net_name, inception_weights)
    res = resolution or min(int(net.input_size), 128)
    ch = channels or int(net.channels)
    t0 = time.perf_counter()
    fr, cached = reference_features(real, net, resolution=res, channels=ch, n=n, data_dir=data_dir, seed=seed,
                                    device=device, progress=progress)  # fmt: skip
    ff, _ = reference_features(fake, net, resolution=res, channels=ch, n=n, seed=seed, device=device,
                               progress=progress, cache=False)  # fmt: skip
    result = compute_metrics(fr, ff, names)
    return {"network": net_name, "n_real": int(len(fr["features"])), "n_fake": int(len(ff["features"])),
            "resolution": res, "ref_cached": cached, "seconds": round(time.perf_counter() - t0, 2), **result}  # fmt: skip


def build_network(name: str, inception_weights: str | None = None) -> FeatureExtractor:
    """A feature network by name; Inception takes an optional local weights file."""
    if name == "inception-fid":
        return build_extractor(name, weights=inception_weights)
    return build_extractor(name)
