"""Export parity and cost at the presets' real widths (the tests use tiny ones): max abs difference of the
Keras, TFLite and ONNX Runtime generators from PyTorch on seeds 0-15, next to PyTorch's own float32 round-off
(float32 vs a float64 forward pass), and the seconds each conversion takes.

Generators are untrained (no datasets needed), with BatchNorm statistics, biases, noise strengths and w_avg
randomised so that every term of the forward pass matters, as in tests/test_export.py.

    python benchmarks/export_parity.py [--presets fashion_mnist_dcgan,celeba64_stylegan2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import torch

from ganforge.config import load_config
from ganforge.export import (
    check_labels,
    keras_mirror,
    onnx_models,
    run_artefact,
    tf_signatures,
    tflite_bytes,
    torch_images,
    write_savedmodel,
)
from ganforge.models import build_generator
from ganforge.models.sampling import seed_latents

PRESETS = [
    "fashion_mnist_mlp", "fashion_mnist_dcgan", "mnist_cgan", "cifar10_sngan", "celeba64_cgan",
    "fashion_mnist32_progan", "celeba64_progan", "fashion_mnist32_stylegan2", "celeba64_stylegan2",
]


@torch.no_grad()
def randomize(G: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for m in G.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.3, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    for n, p in G.named_parameters():
        if n.endswith((".bias", "noise_strength", "gamma.weight", "beta.weight")):
            p.normal_(0, 0.2, generator=g)
    for n, b in G.named_buffers():
        if n.endswith("w_avg"):
            b.normal_(0, 0.5, generator=g)


def measure(preset: str) -> dict[str, object]:
    cfg = load_config(preset)
    m = cfg["model"]
    if m["conditional"]:
        kind = "attributes" if cfg["data"].get("attributes") else "class"
        n = len(str(cfg["data"]["attributes"]).split(",")) if kind == "attributes" else 10
        m.update(num_labels=n, label_kind=kind, label_names=[str(i) for i in range(n)])
    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    randomize(G)
    feeds = {"z": seed_latents(G, list(range(16))).numpy()}
    if G.num_labels:
        feeds["labels"] = check_labels(G.num_labels, "attributes" if m["label_kind"] == "attributes" else "classes")
    if hasattr(G, "mapping"):
        feeds["psi"] = np.full((16, 1), 0.7, np.float32)
    ref = torch_images(G, feeds)
    floor = float("nan")  # conditional models cast labels to float32 (label_vector): no float64 pass
    if not G.num_labels:
        floor = float(np.abs(ref - torch_images(G.double(), {k: v.astype(np.float64) for k, v in feeds.items()})).max())
        G.float()
    row: dict[str, object] = {"preset": preset, "model": m["name"], "res": cfg["data"]["resolution"],
                              "params": sum(p.numel() for p in G.parameters()), "torch32 vs 64": floor}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        start = time.perf_counter()
        model = keras_mirror(G, {"model": m["name"]})
        model.save(tmp / "g.keras")
        row["keras s"] = time.perf_counter() - start
        got = run_artefact("keras", tmp / "g.keras", feeds).transpose(0, 3, 1, 2)
        row["keras"] = float(np.abs(got - ref).max())
        start = time.perf_counter()
        write_savedmodel(model, G, tmp / "sm")
        (tmp / "g.tflite").write_bytes(tflite_bytes(tmp / "sm", list(tf_signatures(model, G))))
        row["tflite s"] = time.perf_counter() - start
        got = run_artefact("tflite", tmp / "g.tflite", feeds).transpose(0, 3, 1, 2)
        row["tflite"] = float(np.abs(got - ref).max())
        start = time.perf_counter()
        (tmp / "g.onnx").write_bytes(onnx_models(G)["generator"].SerializeToString())
        row["onnx s"] = time.perf_counter() - start
        row["onnx"] = float(np.abs(run_artefact("onnx", tmp / "g.onnx", feeds) - ref).max())
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    a = ap.parse_args()
    cols = ["preset", "model", "res", "params", "torch32 vs 64", "keras", "tflite", "onnx", "keras s", "tflite s",
            "onnx s"]
    print("max abs difference from PyTorch float32 on seeds 0-15 (psi 0.7 for stylegan2); seconds per conversion")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for preset in a.presets.split(","):
        r = measure(preset)
        cells = [f"{r[c]:.1e}" if c in ("torch32 vs 64", "keras", "tflite", "onnx") else
                 f"{r[c]:.1f}" if c.endswith(" s") else f"{r[c]:,}" if c == "params" else str(r[c]) for c in cols]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
