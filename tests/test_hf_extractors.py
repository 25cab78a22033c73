"""DINOv2 and CLIP feature networks: tiny randomly initialised models saved in the official Hugging Face layout
(config.json + model.safetensors) and loaded through the real code path (no hub access)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ganforge.errors import UserError
from ganforge.metrics.evaluate import build_network
from ganforge.metrics.features import extract

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    dino = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, patch_size=14, image_size=224))
    clip = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=32,
        image_size=224, projection_dim=16))
    dino.save_pretrained(root / "dino")
    clip.save_pretrained(root / "clip")
    return {"dinov2-vit": (root / "dino", dino, 32), "clip-vit-b32": (root / "clip", clip, 16)}


@pytest.mark.parametrize("name", ["dinov2-vit", "clip-vit-b32"])
def test_official_layout_loads_and_embeds(hf_folders, name):
    folder, ref_model, dim = hf_folders[name]
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    net = build_network(name, str(folder))
    x = torch.rand(3, 1, 28, 28) * 2 - 1  # gray 28 px: repeated to RGB, resized to 224
    feats = extract(net, [x], progress=False)["features"]
    assert feats.shape == (3, dim)
    # the same numbers as the Hugging Face model fed by hand: RGB in [0, 1] at 224 px, normalised
    stats = {"dinov2-vit": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet's
             "clip-vit-b32": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}  # CLIP's
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in stats[name])
    rgb = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1), size=(224, 224), mode="bilinear",
                                          align_corners=False)
    with torch.no_grad():
        out = ref_model.eval()(pixel_values=((rgb + 1) / 2 - mean) / std)
    want = out.image_embeds if name == "clip-vit-b32" else out.pooler_output
    np.testing.assert_allclose(feats, want.double().numpy(), rtol=1e-4, atol=1e-5)


def test_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="huggingface-cli download facebook/dinov2-base"):
        build_network("dinov2-vit", str(tmp_path / "nothing"))
