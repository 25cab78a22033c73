"""`ganforge eval`, `compare-grid`, `nearest` and `metrics train-extractor`: wrappers over ganforge.metrics
and ganforge.visualize."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ganforge.cli.common import Command, Parser, add_device, add_overwrite, device_name, print_metrics
from ganforge.errors import UserError, warn


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", help="a run directory (its EMA generator is sampled)")
    p.add_argument("--real", help="reference images: dataset spec, folder or .zip (with --fake)")
    p.add_argument("--fake", help="images to judge: folder or .zip (with --real)")
    p.add_argument("--metrics", default="fid,kid,is",
                   help="comma list of fid,kid,is,pr,fid_inf,ppl (default fid,kid,is)")
    p.add_argument("--n", type=int, help="images per side (default 10000 for a run; all for sources)")
    p.add_argument("--network", help="feature network (default: the domain CNN for (fashion-)mnist, else inception-fid)")
    p.add_argument("--ref", help="reference source for a run (default: the run's training data)")
    p.add_argument("--n-ref", type=int, help="reference images for a run (default: all of the reference source)")
    p.add_argument("--resolution", type=int, help="size images are loaded at for --real/--fake")
    p.add_argument("--inception-weights", help="path of pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--network-weights", help="weights of --network (a file, or a Hugging Face model folder)")
    p.add_argument("--resize", default="legacy",
                   help="legacy: pytorch-fid's bilinear resize (papers' numbers); clean: clean-fid's antialiased one")
    p.add_argument("--no-quantize", action="store_true",
                   help="score the generator's float images instead of the 8-bit images a PNG would hold")
    p.add_argument("--no-standing-stats", action="store_true",
                   help="keep G_ema's BatchNorm statistics as copied from G instead of recomputing them")
    p.add_argument("--truncation", type=float, default=1.0, help="truncation psi for style-based runs (default 1)")
    p.add_argument("--save-samples", metavar="DIR", help="also write the scored images as PNGs into DIR (new/empty)")
    p.add_argument("--lpips-weights", metavar="DIR",
                   help="PPL distance LPIPS-VGG16: a folder with vgg16-397923af.pth and lpips' vgg.pth "
                   "(default: the feature network)")
    p.add_argument("--ppl-space", help="PPL latent space z or w (default w for style models, else z)")
    p.add_argument("--ppl-sampling", default="end", help="PPL: t = 0 (end, default) or t ~ U(0, 1) (full)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_device(p)


def _eval(a: argparse.Namespace) -> int:
    from ganforge.evaluation import evaluate_run
    from ganforge.metrics.evaluate import evaluate_sources
    from ganforge.metrics.protocol import Protocol

    if a.n is not None and a.n < 2:
        raise UserError(f"--n must be at least 2, got {a.n}")
    if a.run_dir and (a.real or a.fake):
        raise UserError("give either RUN_DIR or --real and --fake, not both")
    weights = a.network_weights or a.inception_weights
    if a.run_dir:
        result = evaluate_run(a.run_dir, metrics=a.metrics, n=a.n or 10000, network=a.network, ref=a.ref, n_ref=a.n_ref,
                              device=device_name(a.device), ema=not a.no_ema, seed=a.seed, inception_weights=weights,
                              progress=not a.json, resize=a.resize, quantized=not a.no_quantize,
                              standing_stats=not a.no_standing_stats, truncation_psi=a.truncation,
                              save_samples=a.save_samples, lpips_weights=a.lpips_weights, ppl_space=a.ppl_space,
                              ppl_sampling=a.ppl_sampling)
    elif a.real and a.fake:
        if a.save_samples or a.no_quantize or a.no_standing_stats or a.truncation != 1.0 or a.lpips_weights:
            raise UserError("--save-samples, --no-quantize, --no-standing-stats, --truncation and --lpips-weights "
                            "apply to a RUN_DIR, not to --real/--fake image sources")
        result = evaluate_sources(a.real, a.fake, metrics=a.metrics, n=a.n, network=a.network,
                                  resolution=a.resolution, device=device_name(a.device), seed=a.seed,
                                  inception_weights=weights, progress=not a.json, resize=a.resize)
    else:
        raise UserError("give a RUN_DIR, or both --real SOURCE and --fake SOURCE")
    if a.json:
        print_metrics(result, True)
        return 0
    shown = {k: v for k, v in result.items() if k not in ("protocol", "warnings")}
    print_metrics(shown, False)
    print(f"{'protocol':>14}: {Protocol.from_dict(result['protocol']).describe()}")
    for w in result["warnings"]:
        warn(w)
    return 0


def _grid_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/compare-grid.png)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    add_overwrite(p)
    add_device(p)


def _grid(a: argparse.Namespace) -> int:
    from ganforge.visualize import compare_grid

    print(compare_grid(a.run_dir, a.out, n=a.n, seed=a.seed, device=device_name(a.device), overwrite=a.overwrite))
    return 0


def _nearest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/nearest.png)")
    p.add_argument("--n", type=int, default=8, help="samples (rows)")
    p.add_argument("--k", type=int, default=5, help="neighbours per sample")
    p.add_argument("--network", help="feature network (default as for eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    add_overwrite(p)
    add_device(p)


def _nearest(a: argparse.Namespace) -> int:
    from ganforge.visualize import nearest_neighbours

    res = nearest_neighbours(a.run_dir, a.out, n=a.n, k=a.k, network=a.network, seed=a.seed,
                             device=device_name(a.device), progress=not a.json, overwrite=a.overwrite)
    if a.json:
        print(json.dumps(res))
        return 0
    print(f"png: {res['png']}  ({res['network']} features)")
    print(f"median distance of a training image to its nearest other training image: {res['train_nn_median_distance']}")
    for i, row in enumerate(res["distances"]):
        print(f"sample {i}: nearest distances {', '.join(f'{x:.3f}' for x in row)}")
    return 0


def _metrics_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="metrics_command", parser_class=Parser, metavar="SUBCOMMAND")
    q = sub.add_parser("train-extractor", help="train a domain classifier used as a feature network")
    q.add_argument("dataset", choices=("fashion-mnist", "mnist"))
    q.add_argument("--out", help="where to write the .safetensors (default: the packaged asset)")
    q.add_argument("--data-dir")
    q.add_argument("--epochs", type=int)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--debug", action="store_true", help="show tracebacks")


def _metrics(a: argparse.Namespace) -> int:
    if a.metrics_command != "train-extractor":
        raise UserError("usage: ganforge metrics train-extractor {fashion-mnist,mnist}")
    from ganforge.metrics.train_extractor import train_extractor

    kw: dict[str, Any] = {"data_dir": a.data_dir, "seed": a.seed}
    if a.out:
        kw["out"] = Path(a.out)
    if a.epochs:
        kw["epochs"] = a.epochs
    print_metrics(train_extractor(a.dataset, **kw), False)
    return 0


COMMANDS = [
    Command("eval", "FID / KID / IS / precision-recall of a run, or between two image sources", _eval_args, _eval,
            "ganforge eval RUN_DIR [options] | ganforge eval --real SOURCE --fake SOURCE"),
    Command("compare-grid", "real and generated images side by side in one PNG", _grid_args, _grid),
    Command("nearest", "generated samples next to their nearest training images (memorization check)",
            _nearest_args, _nearest),
    Command("metrics", "feature-network tools", _metrics_args, _metrics),
]
