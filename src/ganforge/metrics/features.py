"""Pluggable feature networks: images in ganforge's convention in, feature (and logit) arrays out.

Metrics are pure functions of features, so swapping InceptionV3 for another network (CLIP, DINOv2, a
domain-specific classifier) is one registered factory. A `FeatureExtractor` declares what it wants (input
size, channels, value range) and `prepare` converts ganforge's NCHW [-1, 1] batches to that, so the
network code never sees ganforge's conventions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ganforge.errors import UserError
from ganforge.registry import Registry

# How images reach the network's input size: "legacy" is pytorch-fid's bilinear interpolation (align_corners=False, no
# antialiasing) from the images' own size, what published Inception FIDs use; "clean" is clean-fid's antialiased
# bicubic (PIL's filter) on float images (Parmar et al. 2022), which aliases less when downsampling.
RESIZE_MODES = ("legacy", "clean")

# ITU-R BT.601 luma, the weights PIL's convert("L") uses, so gray features match gray-converted datasets.
_LUMA = (0.299, 0.587, 0.114)


class FeatureExtractor(nn.Module):
    """Base class of feature networks. Subclasses set the class attributes and implement `embed`, which gets
    an already `prepare`d batch; `forward` takes ganforge's NCHW [-1, 1] images so callers never convert."""

    name: str = "feature-extractor"
    input_size: int = 299
    channels: int = 3
    value_range: tuple[float, float] = (-1.0, 1.0)
    feature_dim: int = 0
    num_classes: int | None = None
    resize: str = "legacy"  # one of RESIZE_MODES; set per instance by build_extractor

    def embed(self, x: Tensor) -> dict[str, Tensor]:
        """{"features": (N, feature_dim)} and optionally {"logits": (N, num_classes)} of a prepared batch."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return self.embed(prepare(x, self))


FeatureFactory = Callable[..., FeatureExtractor]
EXTRACTORS: Registry[FeatureFactory] = Registry("feature network")


def build_extractor(name: str, resize: str = "legacy", **kwargs: object) -> FeatureExtractor:
    """The registered feature network `name`, in eval mode with gradients off (it is only ever evaluated), resizing
    its inputs the `resize` way (RESIZE_MODES)."""
    if resize not in RESIZE_MODES:
        raise UserError(f"--resize {resize!r}: choose one of {', '.join(RESIZE_MODES)}")
    model = EXTRACTORS.get(name)(**kwargs)
    model.resize = resize
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def prepare(x: Tensor, extractor: FeatureExtractor) -> Tensor:
    """Convert an NCHW batch in [-1, 1] (float; uint8 [0, 255] also accepted) to the extractor's input.

    Channels first (gray -> RGB by repetition, RGB -> gray by BT.601 luma), then one resize straight to input_size
    in float32 (the extractor's `resize`: "legacy" bilinear as pytorch-fid, "clean" antialiased bicubic as
    clean-fid, clipped to the value range like clean-fid clips to [0, 255]), then the affine map of [-1, 1] onto
    value_range. Both filters are linear, so they commute with that affine map.
    """
    if not isinstance(x, Tensor) or x.ndim != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise UserError(f"feature extraction expects an NCHW image batch, got {shape}")
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1.0
    x = x.float()
    c = x.shape[1]
    if c == extractor.channels:
        pass
    elif c == 1 and extractor.channels == 3:
        x = x.expand(-1, 3, -1, -1)
    elif c == 3 and extractor.channels == 1:
        w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * w).sum(dim=1, keepdim=True)
    else:
        raise UserError(
            f"feature network {extractor.name!r} takes {extractor.channels}-channel images, "
            f"got {c} channels; use 1 (gray) or 3 (RGB) channel images"
        )
    size = int(extractor.input_size)
    if x.shape[-2:] != (size, size):
        if getattr(extractor, "resize", "legacy") == "clean":
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)
        else:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    lo, hi = (float(v) for v in extractor.value_range)
    if (lo, hi) != (-1.0, 1.0):
        x = lo + (x + 1.0) * ((hi - lo) / 2.0)
    return x.contiguous()


def _images_of(batch: object) -> Tensor:
    """DataLoaders yield (images, labels) pairs; features only need the images."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(batch)
    if not isinstance(batch, Tensor):
        raise UserError(f"feature extraction expects batches of image tensors, got {type(batch).__name__}")
    return batch


@contextlib.contextmanager
def full_float32() -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions (cuDNN allows it by default), as StyleGAN3's metrics do: features,
    and so FID, then match the CPU's to float32 rounding instead of TF32's 10-bit mantissa. Restored afterwards."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@torch.inference_mode()  # features only: no autograd bookkeeping
@full_float32()
def extract(
    extractor: FeatureExtractor,
    batches: Iterable[Tensor],
    device: str | torch.device = "cpu",
    progress: bool = True,
    total: int | None = None,
) -> dict[str, np.ndarray]:
    """Run `extractor` over NCHW [-1, 1] batches and concatenate its outputs as float64 arrays.

    `total` is the number of images (for the progress bar's ETA), not of batches.
    """
    from ganforge.models.inference import inference_copy

    extractor = inference_copy(extractor.to(device))  # BN folded, channels-last: same outputs, faster
    outputs: dict[str, list[np.ndarray]] = {}
    with tqdm(
        total=total,
        desc=f"features ({extractor.name})",
        unit="img",
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        for batch in batches:
            images = _images_of(batch)
            if images.shape[0] == 0:
                continue
            out = extractor(images.to(device))
            for key, value in out.items():
                outputs.setdefault(key, []).append(value.detach().to("cpu", torch.float64).numpy())
            bar.update(images.shape[0])
    if not outputs:
        raise UserError(f"no images to extract {extractor.name} features from; check the image folder or sample count")
    return {key: np.concatenate(chunks, axis=0) for key, chunks in outputs.items()}
