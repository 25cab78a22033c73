"""Small domain classifiers as offline feature networks for MNIST-like data.

The ImageNet InceptionV3 cannot be downloaded everywhere, and its features say little about 28x28 digits or
clothes anyway. So ganforge trains a compact CNN per dataset itself (`ganforge metrics train-extractor NAME`,
see train_extractor.py) and ships the weights in ganforge/assets/: the penultimate layer gives "features"
(FID, KID, precision/recall) and the last one "logits" (Inception Score), like InceptionV3 does.

    build_extractor("fashion-mnist-cnn")                       # shipped weights
    build_extractor("mnist-cnn", weights="my-mnist.safetensors")  # a user-trained file

Weights are safetensors only (no pickle), with JSON metadata (dataset, accuracy, ...) under the key
"ganforge" and a SHA-256 of the tensors, so a damaged file is an error rather than silently wrong features.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from ganforge.data.paths import cache_root
from ganforge.errors import UserError
from ganforge.metrics.features import EXTRACTORS, FeatureExtractor

FORMAT = "ganforge-domain-cnn/1"
META_KEY = "ganforge"
ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"

# extractor name -> the built-in dataset it classifies (also the name `train-extractor` accepts)
DOMAIN_DATASETS: dict[str, str] = {"mnist-cnn": "mnist", "fashion-mnist-cnn": "fashion-mnist"}


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class DomainCNN(FeatureExtractor):
    """28x28 gray in [-1, 1] -> `feature_dim` penultimate activations (post-ReLU) and 10 logits.

    conv16 - pool - conv64 - pool - conv128 - pool - fc256 (+dropout) - fc10, BatchNorm after every conv.
    Sized for accuracy per CPU second: one epoch of 60,000 images takes about a minute on one CPU core (only 16
    channels at full resolution, where memory traffic rather than arithmetic costs), and the weights 1.5 MB.
    """

    name = "domain-cnn"
    input_size = 28
    channels = 1
    value_range = (-1.0, 1.0)
    feature_dim = 256
    num_classes = 10

    def __init__(self, name: str = "domain-cnn", dropout: float = 0.3) -> None:
        super().__init__()
        self.name = name
        self.body = nn.Sequential(
            *_block(1, 16),
            nn.MaxPool2d(2),  # 14
            *_block(16, 64),
            nn.MaxPool2d(2),  # 7
            *_block(64, 128),
            nn.MaxPool2d(3, stride=2),  # 3; overlapping windows, so the 7th row and column still count
            nn.Flatten(),
        )
        self.fc = nn.Linear(128 * 3 * 3, self.feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.feature_dim, self.num_classes)
        self.weights_path: Path | None = None  # where the loaded weights came from (for reports)
        self.info: dict[str, Any] = {}  # their metadata: dataset, accuracy, ...

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        features = torch.relu(self.fc(self.body(x)))
        return {"features": features, "logits": self.head(self.dropout(features))}


# --- weights -------------------------------------------------------------------------------------------------


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes in name order: safetensors checks the header, not the data."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def shipped_weights_path(name: str) -> Path:
    """The weights that come with ganforge for extractor `name`."""
    return ASSETS_DIR / f"{name}.safetensors"


def trained_weights_path(name: str) -> Path:
    """Where `train_extractor` writes by default: the cache, because an installed package may be read-only."""
    return cache_root() / "weights" / f"{name}.safetensors"


def _retrain_hint(name: str) -> str:
    return f"run `ganforge metrics train-extractor {DOMAIN_DATASETS.get(name, name)}`"


def read_weights(path: str | os.PathLike[str], name: str | None = None) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """(state dict, metadata) of a domain-CNN weights file; unreadable, damaged or foreign files raise UserError.

    With `name`, a file trained for another extractor is refused: features of different networks must never
    be mixed up silently in FID numbers.
    """
    p = Path(path).expanduser()
    hint = _retrain_hint(name or "NAME")
    if p.is_dir():
        raise UserError(f"extractor weights {p} is a folder; pass the .safetensors file inside it")
    if not p.is_file():
        raise UserError(f"extractor weights {p} do not exist; {hint} to create them")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw_meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several types for damaged headers and truncated data
        detail = " ".join(str(e).split())[:120]
        raise UserError(f"extractor weights {p} are not a readable safetensors file ({detail}); {hint}") from None
    try:
        meta = json.loads(raw_meta[META_KEY])
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError
    except (KeyError, ValueError):
        raise UserError(
            f"extractor weights {p} are not ganforge domain-CNN weights (no {FORMAT} metadata); {hint}"
        ) from None
    if meta.get("tensors_sha256") != tensors_sha256(tensors):
        raise UserError(f"extractor weights {p} are damaged (tensor checksum mismatch); {hint}")
    if name is not None and meta.get("name") != name:
        raise UserError(f"extractor weights {p} belong to {meta.get('name')!r}, not {name!r}; pass {name} weights")
    return tensors, meta


def load_domain_cnn(name: str, weights: str | os.PathLike[str] | None = None, pretrained: bool = True) -> DomainCNN:
    """Extractor `name` with `weights` if given, else the shipped file, else one `train_extractor` put in the
    cache (for installs without the shipped file). pretrained=False gives random weights, for tests only."""
    model = DomainCNN(name)
    if not pretrained:
        return model.eval()
    if weights is not None:
        path = Path(weights).expanduser()
    else:
        shipped, trained = shipped_weights_path(name), trained_weights_path(name)
        path = shipped if shipped.is_file() or not trained.is_file() else trained
        if not path.is_file():
            raise UserError(f"no weights for feature network {name!r} (missing {shipped}); {_retrain_hint(name)}")
    state, meta = read_weights(path, name)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = " ".join((lines[1] if len(lines) > 1 else lines[0]).split())[:160] if lines else ""
        raise UserError(f"extractor weights {path} do not fit {name} ({detail}); {_retrain_hint(name)}") from None
    model.weights_path, model.info = path, meta
    return model.eval()


@EXTRACTORS.register("mnist-cnn")
def build_mnist_cnn(weights: str | os.PathLike[str] | None = None, pretrained: bool = True) -> DomainCNN:
    """MNIST digit classifier (features 256-d, logits 10-way)."""
    return load_domain_cnn("mnist-cnn", weights, pretrained)


@EXTRACTORS.register("fashion-mnist-cnn")
def build_fashion_mnist_cnn(weights: str | os.PathLike[str] | None = None, pretrained: bool = True) -> DomainCNN:
    """Fashion-MNIST clothing classifier (features 256-d, logits 10-way)."""
    return load_domain_cnn("fashion-mnist-cnn", weights, pretrained)
