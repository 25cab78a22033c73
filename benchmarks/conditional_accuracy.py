"""Does a class-conditional generator draw the class it is asked for? Samples N images (an equal share
per class) from a run and classifies them with a domain classifier (the metrics' `mnist-cnn` or
`fashion-mnist-cnn`); prints per-class and overall accuracy.

    python benchmarks/conditional_accuracy.py RUN_DIR [--n 1000] [--network mnist-cnn] [--weights PATH]
"""

from __future__ import annotations

import argparse

import torch

from ganforge.generate import load_generator, make_labels, sample
from ganforge.metrics.evaluate import default_network
from ganforge.metrics.features import build_extractor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--network")
    ap.add_argument("--weights", help="classifier weights instead of the shipped ones")
    ap.add_argument("--seed", type=int, default=123)
    a = ap.parse_args()
    G, cfg = load_generator(a.run_dir)
    names = cfg["model"]["label_names"]
    net_name = a.network or default_network(cfg["data"]["source"])
    net = build_extractor(net_name, **({"weights": a.weights} if a.weights else {}))
    labels = make_labels(cfg, a.n)  # 0, 1, ..., 9, 0, 1, ...
    with torch.no_grad():
        x = sample(G, a.n, seed=a.seed, labels=labels)
        pred = torch.cat([net(x[i : i + 250])["logits"].argmax(1) for i in range(0, a.n, 250)])
    hit = pred == labels
    print(f"run {a.run_dir}, {a.n} samples, classifier {net_name}")
    print("| class | accuracy |")
    print("|---|---|")
    for c, name in enumerate(names):
        print(f"| {name} | {hit[labels == c].float().mean().item():.3f} |")
    print(f"| **all** | **{hit.float().mean().item():.3f}** |")


if __name__ == "__main__":
    main()
