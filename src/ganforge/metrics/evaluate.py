"""Evaluation as users run it: generate (or load) images, extract features, compare with cached
reference statistics, and log the result in the run.

One path for every image: generated images are rounded to 8 bits by default (`images.quantize`, as StyleGAN's
metrics and torch-fidelity do), so a run's FID equals the FID of the PNGs it would write (`--save-samples`); folders
are read at their own size and resized once, straight to the network's input, by the extractor's `resize` mode.
Every result carries its `protocol` (metrics/protocol.py). Reference features are cached under <cache>/stats/,
keyed by the reference side of the protocol (source + split, network + weights, resize, resolution, channels,
count, seed), so a second evaluation only has to embed the generated images and a changed protocol never reuses
a stale reference.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ganforge.data import dataset_info, load_dataset, parse_spec
from ganforge.data.paths import cache_root
from ganforge.errors import UserError
from ganforge.fileio import atomic_write_file
from ganforge.images import quantize, save_images
from ganforge.metrics.domain import DOMAIN_DATASETS
from ganforge.metrics.features import FeatureExtractor, build_extractor, extract
from ganforge.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from ganforge.metrics.fid_inf import fid_infinity
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kernel_inception_distance
from ganforge.metrics.ppl import EPS as PPL_EPS
from ganforge.metrics.ppl import perceptual_path_length
from ganforge.metrics.precision_recall import precision_recall
from ganforge.metrics.protocol import Protocol, n_warnings
from ganforge.models.sampling import run_label_kind

ALL_METRICS = ("fid", "kid", "is", "pr", "fid_inf", "ppl")
STATS_FORMAT = 3  # 2: mean and covariance stored next to the features; 3: keyed by the resize mode too
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


def weights_id(net: FeatureExtractor) -> str:
    """A fingerprint of the network's weights, so a retrained network never reuses stale statistics (computed once
    per network object: its weights never change)."""
    cached = getattr(net, "_weights_id", None)
    if cached is not None:
        return cached
    h = hashlib.sha256(net.name.encode())
    for k, v in net.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])
        h.update(str(float(v.float().sum())).encode())
    net._weights_id = h.hexdigest()[:16]
    return net._weights_id


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
) -> tuple[dict[str, np.ndarray], bool]:
    """Features of (a seeded subset of) a data source; returns (features, came_from_cache)."""
    data = load_dataset(spec, resolution, channels, data_dir=data_dir)
    count = len(data.images) if n is None else min(n, len(data.images))
    key_src = json.dumps([STATS_FORMAT, data.spec, net.name, weights_id(net), net.resize, resolution, channels, count,
                          seed])
    key = hashlib.sha256(key_src.encode()).hexdigest()[:20]
    slug = "".join(c if c.isalnum() or c in "-_" else "_" for c in data.spec)[-40:]
    path = cache_root() / "stats" / f"{slug}-{net.name}-{net.resize}-{resolution}px-{count}-{key}.npz"
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
) -> dict[str, float]:
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
    if "fid_inf" in metrics:
        out["fid_inf"], out["fid_inf_slope"] = fid_infinity(*_gaussian(real), fake["features"])
    return {key: float(v) for key, v in out.items()}


def _gaussian(feats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    return (feats["mu"], feats["sigma"]) if "mu" in feats else gaussian_stats(feats["features"])


def generated_batches(
    G: torch.nn.Module, n: int, seed: int, batch_size: int = 250, *, quantized: bool = True,
    truncation_psi: float = 1.0, save_dir: Path | None = None, label_kind: str | None = None,
) -> Iterator[torch.Tensor]:
    """n images of G in blocks, rounded to 8 bits unless `quantized` is false; with `save_dir`, each block is also
    written there as PNGs (000000.png, ...): exactly the images that are scored. A conditional G gets seeded
    random labels of `label_kind` (models/sampling.random_labels)."""
    from ganforge.models.inference import inference_copy
    from ganforge.models.sampling import random_labels, sample

    G = inference_copy(G)  # BN folded into the convs, channels-last: the same images, faster
    for i in range(0, n, batch_size):
        # seeds per block keep the images the same whatever the block size
        with torch.inference_mode():  # no autograd bookkeeping; only features are taken from these
            block, m = seed * 1_000_003 + i // batch_size, min(batch_size, n - i)
            x = sample(G, m, seed=block, labels=random_labels(G, m, label_kind, block), truncation_psi=truncation_psi)
        if quantized:
            x = quantize(x)
        if save_dir is not None:
            save_images(x, save_dir, start=i)
        yield x


def check_samples_dir(path: str | Path | None) -> Path | None:
    """--save-samples must be a new or empty folder: evaluation never mixes its images with others."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.exists() and (not p.is_dir() or any(p.iterdir())):
        raise UserError(f"--save-samples {p} must be a new or empty folder")
    return p


def _ppl(G: torch.nn.Module, net: FeatureExtractor, n: int, *, space: str | None, sampling: str, seed: int,
         device: str, lpips_weights: str | None) -> float:
    """PPL with LPIPS-VGG16 when its weights are given, else with the run's feature network."""
    from ganforge.metrics.features import full_float32
    from ganforge.metrics.lpips import load_lpips
    from ganforge.metrics.ppl import feature_distance

    styled = hasattr(G, "mapping") and hasattr(G, "synthesis")
    dist = load_lpips(lpips_weights).to(device) if lpips_weights else feature_distance(net.to(device).eval())
    with full_float32():
        return perceptual_path_length(G.eval(), dist, n, space=space or ("w" if styled else "z"), sampling=sampling,
                                      seed=seed)


def evaluate_generator(
    G: torch.nn.Module, cfg: dict[str, Any], *, metrics: str | list[str] = "fid,kid,is", n: int = 10000,
    network: str | FeatureExtractor | None = None, ref: str | None = None, device: str = "cpu", seed: int = 0,
    inception_weights: str | None = None, progress: bool = True, n_ref: int | None = None, resize: str = "legacy",
    quantized: bool = True, truncation_psi: float = 1.0, ema: bool | None = None, standing_stats: bool | None = None,
    save_samples: str | Path | None = None, lpips_weights: str | None = None, ppl_space: str | None = None,
    ppl_sampling: str = "end",
) -> dict[str, Any]:
    """Metrics of `n` images of generator G (trained with config `cfg`) against a reference source (default:
    its training data), as a record for eval.jsonl with its `protocol`. The function behind `ganforge eval` and
    FID during training; `network` may be a built extractor (its own resize mode), so a trainer builds it once.
    `ema` and `standing_stats` only describe G for the protocol (the caller prepared G)."""
    names = parse_metrics(metrics)
    if n < 2:
        raise UserError(f"--n must be at least 2 images, got {n}")
    save_dir = check_samples_dir(save_samples)
    d = cfg["data"]
    ref = ref or d["source"]
    net = network if isinstance(network, FeatureExtractor) else build_network(network or default_network(d["source"]),
                                                                             inception_weights, resize)
    t0 = time.perf_counter()
    real, cached = reference_features(ref, net, resolution=d["resolution"], channels=d["channels"], n=n_ref,
                                      data_dir=d["data_dir"], seed=seed, device=device, progress=progress)
    result: dict[str, float] = {}
    if set(names) - {"ppl"} or save_dir is not None:
        batches = generated_batches(G, n, seed + 1, quantized=quantized, truncation_psi=truncation_psi,
                                    save_dir=save_dir, label_kind=run_label_kind(cfg))
        fake = extract(net, batches, device=device, progress=progress, total=n)
        result = compute_metrics(real, fake, [m for m in names if m != "ppl"])
    ppl_protocol = {}
    if "ppl" in names:
        space = ppl_space or ("w" if hasattr(G, "mapping") and hasattr(G, "synthesis") else "z")
        result["ppl"] = _ppl(G, net, n, space=space, sampling=ppl_sampling, seed=seed, device=device,
                             lpips_weights=lpips_weights)
        # PPL values are only comparable with the same distance, space, sampling and eps: they travel with it
        ppl_protocol = {"ppl_protocol": {"distance": "lpips-vgg16" if lpips_weights else net.name, "space": space,
                                         "sampling": ppl_sampling, "eps": PPL_EPS}}
    protocol = Protocol(net.name, weights_id(net), n, int(len(real["features"])), _spec_name(ref), net.resize,
                        quantized, seed, truncation_psi, ema, standing_stats)
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "network": net.name, "n": n,
            "n_ref": int(len(real["features"])), "ref": ref, "ref_cached": cached,
            "seconds": round(time.perf_counter() - t0, 2), **result, "protocol": protocol.as_dict(), **ppl_protocol,
            "warnings": n_warnings([protocol])}


def _spec_name(spec: str) -> str:
    """A source with its split spelled out ("fashion-mnist" -> "fashion-mnist:train"); paths as given."""
    kind, path, split = parse_spec(spec)
    return f"{kind}:{split}" if path is None and split else spec


def native_resolution(spec: str, data_dir: str | None = None) -> int | None:
    """The side images of a source have on disk (the shorter side: sources centre-crop to a square), or None when
    their sizes differ."""
    shape = dataset_info(spec, data_dir).get("shape")
    return int(min(shape[0], shape[1])) if shape else None


def evaluate_sources(
    real: str, fake: str, *, metrics: str | list[str] = "fid,kid", n: int | None = None, network: str | None = None,
    resolution: int | None = None, channels: int | None = None, device: str = "cpu", seed: int = 0,
    inception_weights: str | None = None, data_dir: str | None = None, progress: bool = True, resize: str = "legacy",
) -> dict[str, Any]:
    """Metrics between any two image sources (folders, zips, dataset specs), like pytorch-fid's CLI: each side is
    read at its own size (unless `resolution` is given) and resized once, by the network, to its input size."""
    names = parse_metrics(metrics)
    if "ppl" in names:
        raise UserError("ppl needs a generator: evaluate a run (ganforge eval RUN_DIR --metrics ppl)")
    net_name = network or default_network(real)
    net = build_network(net_name, inception_weights, resize)
    ch = channels or int(net.channels)
    t0 = time.perf_counter()
    sides = []
    for spec, cache in ((real, True), (fake, False)):
        res = resolution or native_resolution(spec, data_dir if cache else None) or int(net.input_size)
        feats, cached = reference_features(spec, net, resolution=res, channels=ch, n=n, seed=seed, device=device,
                                           data_dir=data_dir if cache else None, progress=progress, cache=cache)
        sides.append((feats, cached, res))
    (fr, cached, res_real), (ff, _, res_fake) = sides
    result = compute_metrics(fr, ff, names)
    protocol = Protocol(net.name, weights_id(net), int(len(ff["features"])), int(len(fr["features"])),
                        _spec_name(real), net.resize, True, seed)
    return {"network": net_name, "n_real": int(len(fr["features"])), "n_fake": int(len(ff["features"])),
            "resolution": res_real, "resolution_fake": res_fake, "ref_cached": cached,
            "seconds": round(time.perf_counter() - t0, 2), **result, "protocol": protocol.as_dict(),
            "warnings": n_warnings([protocol])}


def build_network(name: str, weights: str | None = None, resize: str = "legacy") -> FeatureExtractor:
    """A feature network by name, with an optional local weights file (or folder, for the Hugging Face networks)
    and the resize mode of its inputs."""
    return build_extractor(name, resize, weights=weights) if weights else build_extractor(name, resize)
