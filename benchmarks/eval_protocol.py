"""How much each evaluation choice moves FID, and what the new parts cost, on one trained run.

FID of the run's G_ema (fashion-mnist-cnn features against the whole training set, `--n` samples, one cached
reference) under each protocol: the default (8-bit images, legacy resize, standing statistics), then one choice
changed at a time, then the path ganforge used before (float images, BatchNorm statistics copied from G). Then the
cost of quantisation, standing statistics, FID∞ and PPL (`--n` pairs, the feature network's distance) in seconds
and as a share of one default evaluation (reference cached).

    nice python benchmarks/eval_protocol.py [--run runs/demo] [--n 10000]   # without --run: trains --steps first
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from standing_stats import copied_stats  # benchmarks/ is the script's folder, so on sys.path

NET = "fashion-mnist-cnn"


def snapshot(run: Path, dst: Path) -> Path:
    """config.yaml and the newest checkpoint of a run that may still be training, so every measurement reads one."""
    from ganforge.runs.rundir import RunDir

    found = RunDir.open(run).latest()
    if found is None:
        sys.exit(f"{run} has no checkpoint yet")
    (dst / "checkpoints").mkdir(parents=True)
    shutil.copy2(run / "config.yaml", dst / "config.yaml")
    for suffix in (".safetensors", ".json"):
        shutil.copy2(found.path.with_suffix(suffix), dst / "checkpoints" / found.path.with_suffix(suffix).name)
    print(f"measuring {run} at {found.path.name}", file=sys.stderr)
    return dst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a trained fashion-mnist run (default: train the dcgan preset for --steps)")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--n", type=int, default=10000)
    a = ap.parse_args()
    from ganforge.generate import load_generator
    from ganforge.images import quantize
    from ganforge.metrics.evaluate import build_network, evaluate_generator, generated_batches
    from ganforge.metrics.features import extract
    from ganforge.metrics.fid_inf import fid_infinity
    from ganforge.metrics.ppl import feature_distance, perceptual_path_length
    from ganforge.models.standing import apply_standing_stats

    with tempfile.TemporaryDirectory() as tmp:
        run = snapshot(Path(a.run), Path(tmp) / "run") if a.run else None
        if run is None:
            from ganforge.training.launch import train

            run = Path(tmp) / "dcgan"
            train("fashion_mnist_dcgan", [f"train.steps={a.steps}", "train.eval_every=0", "train.sample_every=0",
                                          f"train.checkpoint_every={a.steps}", "train.tensorboard=false"],
                  run_dir=run, quiet=True)
        G, cfg = load_generator(run)  # standing statistics (stored, or computed now for older checkpoints)
        old = copied_stats(G, run)
        nets = {r: build_network(NET, resize=r) for r in ("legacy", "clean")}

        def fid(G_: torch.nn.Module, resize: str = "legacy", **kw: object) -> dict:
            return evaluate_generator(G_, cfg, metrics="fid", n=a.n, network=nets[resize], progress=False, ema=True,
                                      **kw)

        fid(G, standing_stats=True)  # warm: reference features computed and cached
        rows = [("default: uint8, legacy resize, standing statistics", fid(G, standing_stats=True)),
                ("float images (no quantisation)", fid(G, quantized=False, standing_stats=True)),
                ("clean resize (antialiased bicubic)", fid(G, "clean", standing_stats=True)),
                ("no standing statistics (BN stats copied from G)", fid(old, standing_stats=False)),
                ("old path: float, no standing statistics", fid(old, quantized=False, standing_stats=False))]
        base = rows[0][1]["fid"]
        print(f"\nFID per protocol: {run.name}, n={a.n:,}, {NET}, reference {rows[0][1]['n_ref']:,} (cached)")
        print("| protocol | FID | vs default |\n|---|---|---|")
        for name, r in rows:
            print(f"| {name} | {r['fid']:.3f} | {r['fid'] - base:+.3f} ({(r['fid'] - base) / base:+.1%}) |")

        t_eval = rows[0][1]["seconds"]
        x = torch.cat(list(generated_batches(G, a.n, 1, quantized=False)))
        t = time.perf_counter()
        quantize(x)
        t_q = time.perf_counter() - t
        fresh = copied_stats(G, run)
        t = time.perf_counter()
        apply_standing_stats(fresh)
        t_s = time.perf_counter() - t
        real = nets["legacy"]
        from ganforge.metrics.evaluate import reference_features

        ref, _ = reference_features(cfg["data"]["source"], real, resolution=cfg["data"]["resolution"],
                                    channels=cfg["data"]["channels"], n=None, progress=False)
        fake = extract(real, [x], progress=False)["features"]
        t = time.perf_counter()
        fi, _ = fid_infinity(ref["mu"], ref["sigma"], fake)
        t_fi = time.perf_counter() - t
        t = time.perf_counter()
        ppl = perceptual_path_length(G, feature_distance(real), a.n)
        t_p = time.perf_counter() - t
        print(f"\nCost against one default evaluation ({t_eval:.2f} s: {a.n:,} samples + features + FID, reference "
              f"cached); FID∞ = {fi:.3f}, PPL(z, end) = {ppl:.1f}")
        print("| part | seconds | share of an evaluation |\n|---|---|---|")
        for name, s in (("quantisation", t_q), ("standing statistics", t_s), ("FID∞ (15 subset sizes)", t_fi),
                        (f"PPL ({a.n:,} pairs)", t_p)):
            print(f"| {name} | {s:.3f} | {s / t_eval:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
