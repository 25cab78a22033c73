"""Feature networks beyond Inception, through Hugging Face `transformers` (optional extra `hf`; it needs no
torchvision): DINOv2 ViT, whose Fréchet distance FD_DINOv2 Stein et al. (2023, "Exposing flaws of generative model
evaluation metrics") recommend over FID, and CLIP ViT-B/32, clean-fid's CLIP-FID features.

Weights are read from a local folder in the official Hugging Face layout (config.json + model.safetensors, as
`huggingface-cli download facebook/dinov2-base` or `openai/clip-vit-base-patch32` writes it), from --network-weights
or <cache>/weights/<network name>/; nothing is downloaded. The images are resized to the model's input size by the
extractor's resize mode and normalised with the model's own mean and std.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ganforge.data.paths import cache_root
from ganforge.errors import UserError
from ganforge.metrics.features import EXTRACTORS, FeatureExtractor

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HUB_NAMES = {"dinov2-vit": "facebook/dinov2-base", "clip-vit-b32": "openai/clip-vit-base-patch32"}


def weights_folder(name: str, weights: str | os.PathLike[str] | None) -> Path:
    """The folder to load `name` from: `weights`, else the cache; a UserError saying how to get it otherwise."""
    d = Path(weights).expanduser() if weights is not None else cache_root() / "weights" / name
    if not (d / "config.json").is_file():
        raise UserError(f"feature network {name}: no Hugging Face model folder at {d} (config.json missing); download "
                        f"{HUB_NAMES[name]} there (huggingface-cli download {HUB_NAMES[name]} --local-dir {d}) "
                        "or pass --network-weights FOLDER")
    return d


def _transformers():  # noqa: ANN202 - the module
    try:
        import transformers
    except ImportError:
        raise UserError("the DINOv2 and CLIP feature networks need Hugging Face transformers: "
                        "pip install 'ganforge[hf]'") from None
    return transformers


class HFViT(FeatureExtractor):
    """A Hugging Face vision transformer as a feature network: RGB in [0, 1] at the model's image size, normalised
    inside `embed`. `pick` turns the model's output into the feature vector."""

    channels = 3
    value_range = (0.0, 1.0)

    def __init__(self, name: str, model: torch.nn.Module, mean: tuple, std: tuple, feature_dim: int,
                 input_size: int) -> None:
        super().__init__()
        self.name, self.model, self.feature_dim, self.input_size = name, model, feature_dim, input_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        out = self.model(pixel_values=(x - self.mean) / self.std)
        feats = out.image_embeds if self.name == "clip-vit-b32" else out.pooler_output
        return {"features": feats.float()}


def _load(cls_name: str, name: str, weights: str | os.PathLike[str] | None) -> torch.nn.Module:
    cls = getattr(_transformers(), cls_name)
    folder = weights_folder(name, weights)
    try:
        return cls.from_pretrained(str(folder), local_files_only=True).eval()
    except (OSError, ValueError) as e:
        raise UserError(f"feature network {name}: {folder} is not a {HUB_NAMES[name]} model folder "
                        f"({' '.join(str(e).split())[:160]})") from None


@EXTRACTORS.register("dinov2-vit")
def build_dinov2(weights: str | os.PathLike[str] | None = None) -> HFViT:
    """DINOv2 ViT (any size; FD_DINOv2 uses ViT-L/14): the layer-normed CLS token of 224 px images (as Stein et al.'s
    dgm-eval feeds it; the position embeddings are interpolated), ImageNet normalisation."""
    model = _load("Dinov2Model", "dinov2-vit", weights)
    return HFViT("dinov2-vit", model, IMAGENET_MEAN, IMAGENET_STD, int(model.config.hidden_size), 224)


@EXTRACTORS.register("clip-vit-b32")
def build_clip(weights: str | os.PathLike[str] | None = None) -> HFViT:
    """CLIP ViT-B/32 image embeddings (the projection, as clean-fid's CLIP-FID uses), CLIP normalisation."""
    model = _load("CLIPVisionModelWithProjection", "clip-vit-b32", weights)
    return HFViT("clip-vit-b32", model, CLIP_MEAN, CLIP_STD, int(model.config.projection_dim),
                 int(model.config.image_size))
