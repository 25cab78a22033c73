"""Evaluation metrics as pure functions of feature arrays, plus the pluggable feature networks that make them.

feats = extract(build_extractor("inception-fid"), batches)       # {"features": (N, 2048), "logits": ...}
fid_from_features(real["features"], fake["features"])
kernel_inception_distance(real["features"], fake["features"])   # (mean, std)
inception_score(fake["logits"])                                  # (mean, std)
precision_recall(real["features"], fake["features"])             # (precision, recall)
"""

from ganforge.metrics.domain import DomainCNN as DomainCNN  # registers mnist-cnn and fashion-mnist-cnn
from ganforge.metrics.features import EXTRACTORS, FeatureExtractor, build_extractor, extract, prepare
from ganforge.metrics.fid import fid_from_features, frechet_distance, gaussian_stats
from ganforge.metrics.hf import HFViT as HFViT  # registers dinov2-vit and clip-vit-b32 (transformers on first use)
from ganforge.metrics.inception import InceptionV3FID, inception_weights_path, load_inception_weights
from ganforge.metrics.inception_score import inception_score
from ganforge.metrics.kid import kernel_inception_distance
from ganforge.metrics.precision_recall import precision_recall

__all__ = [
    "EXTRACTORS",
    "FeatureExtractor",
    "InceptionV3FID",
    "build_extractor",
    "extract",
    "fid_from_features",
    "frechet_distance",
    "gaussian_stats",
    "inception_score",
    "inception_weights_path",
    "kernel_inception_distance",
    "load_inception_weights",
    "precision_recall",
    "prepare",
]
