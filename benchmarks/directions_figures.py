"""The README's direction figures and numbers: sefa, pca and classifier directions of a trained run, on one CPU
thread.

For each method: the time to compute it, and a grid (a row per direction, a column per strength -3..3, one seed)
in --figures. For every direction: how far the edit moves the image (mean |pixel change| at strength +-3, in
[0, 2] units) and how often the domain classifier's top class changes between -3 and +3. For the classifier's
class directions, over --seeds seeds: the share of seeds whose class log-odds rise monotonically over the
strengths, and the share whose predicted class becomes that class at +3.

    python benchmarks/directions_figures.py RUN_DIR [--figures docs/img] [--seeds 50]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ganforge.generate import load_generator
from ganforge.images import save_grid
from ganforge.latent.directions import class_scores, compute_directions, run_spec
from ganforge.latent.edit import edit
from ganforge.models.sampling import seed_latents

STRENGTHS = [-3.0, -1.5, 0.0, 1.5, 3.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--figures", help="write directions-<method>.png here")
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--rows", type=int, default=5, help="directions per sefa/pca figure (classifier: every class)")
    ap.add_argument("--seed", type=int, default=3, help="the seed shown in the figures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    G, cfg = load_generator(a.run_dir)
    judge = run_spec(cfg, "classifier")
    seeds = list(range(100, 100 + a.seeds))
    for method in ("sefa", "pca", "classifier"):
        t = time.perf_counter()
        dirs = compute_directions(G, method, run_spec(cfg, method, k=10 if method != "classifier" else None))
        took = time.perf_counter() - t
        print(f"\n{method}: {len(dirs)} directions in {dirs.space}, {took:.1f} s")
        shown = len(dirs) if method == "classifier" else min(a.rows, len(dirs))
        rows = [edit(G, [a.seed], dirs, k, STRENGTHS) for k in range(shown)]
        for k in range(len(dirs)):
            img = edit(G, seeds, dirs, k, [-3.0, 0.0, 3.0]).view(len(seeds), 3, *rows[0].shape[1:])
            move = float((img[:, 2] - img[:, 0]).abs().mean()) / 2
            pred = judge.classifier(img.flatten(0, 1)).argmax(1).view(len(seeds), 3)
            flips = float((pred[:, 0] != pred[:, 2]).float().mean())
            line = f"  {k:>2} {dirs.names[k]:<12} importance {float(dirs.importance[k]):.3g}  |dx| {move:.3f}  " \
                   f"top class changes on {flips:.0%} of seeds"
            if method == "classifier":
                c = judge.class_names.index(dirs.names[k])
                sweep = edit(G, seeds, dirs, k, STRENGTHS)
                s = class_scores(judge.classifier(sweep), False)[:, c].view(len(seeds), len(STRENGTHS))
                rise = float((s[:, -1] > s[:, 0]).float().mean())
                mono = float((s.diff(dim=1) > 0).all(dim=1).float().mean())
                became = float((pred[:, 2] == c).float().mean())
                base = float((pred[:, 1] == c).float().mean())
                line += (f"; log-odds rise -3 -> +3 on {rise:.0%}, monotone on {mono:.0%}; predicted {dirs.names[k]} "
                         f"on {base:.0%} at 0, {became:.0%} at +3")
            print(line)
        if method == "sefa":  # the baseline: random unit directions in the same space
            rand = torch.nn.functional.normalize(
                torch.randn(10, dirs.vectors.shape[1], generator=torch.Generator().manual_seed(1)), dim=1
            )
            moves = []
            for v in rand:
                lat = seed_latents(G, seeds)
                pair = torch.cat([G(lat - 3 * v), G(lat + 3 * v)]).detach().clamp(-1, 1)
                moves.append(float((pair[len(seeds) :] - pair[: len(seeds)]).abs().mean()) / 2)
            print(f"  random unit directions: |dx| {sum(moves) / len(moves):.3f} (mean of 10)")
        if a.figures:
            path = Path(a.figures) / f"directions-{method}.png"
            save_grid(torch.cat(rows), path, nrow=len(STRENGTHS), upscale=2)
            print(f"  figure: {path}")


if __name__ == "__main__":
    main()
