"""Command line: a thin layer over the Python API (ganforge.training, ganforge.generate, ganforge.data).

Bad input of any kind ends in one line on stderr and exit code 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

from ganforge import __version__
from ganforge.errors import TrainingDiverged, UserError

EXIT_USER = 2
EXIT_DIVERGED = 3
EXIT_DISK_FULL = 4


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line instead of usage + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="ganforge", description="Train, evaluate, compare and use GANs for images.")
    ap.add_argument("--version", action="version", version=f"ganforge {__version__}")
    _add_common(ap)
    sub = ap.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("train", help="train a GAN from a config (a YAML path or preset name)",
                       description="ganforge train CONFIG [key=value ...] | ganforge train --resume RUN_DIR [key=value ...]")  # fmt: skip
    p.add_argument("args", nargs="*", metavar="CONFIG|key=value", help="config file or preset, then overrides")
    p.add_argument("--run-dir", help="where the run is written (default runs/<name>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly where its last checkpoint left it")
    p.add_argument("--init-from", metavar="CKPT", help="fine-tune: start from the weights of a checkpoint or run")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="override the config's device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_common(p)

    p = sub.add_parser("sample", help="sample images from a trained run")
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--n", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--grid", help="write a grid PNG here (default RUN_DIR/sample-seed<S>.png)")
    p.add_argument("--out", help="write one PNG per image into this folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nrow", type=int, help="images per grid row")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of G_ema")
    p.add_argument("--class", dest="cls", help="conditional runs: a class name or index (default: every class)")
    p.add_argument("--attr", help="attribute-conditional runs: e.g. Smiling=1,Male=0 (others 0)")
    p.add_argument(
        "--truncation",
        type=float,
        default=1.0,
        metavar="PSI",
        help="style-based models: truncation psi (1 = plain sampling, 0.7 = typical images)",
    )
    p.add_argument("--overwrite", action="store_true", help="allow replacing existing files")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_common(p)

    p = sub.add_parser("style-mix", help="style-mixing figure of a style-based run (stylegan2)")
    p.add_argument("run_dir", help="a run directory of a style-based model")
    p.add_argument("--rows", default="1,2,3,4", help="seeds of the rows (their styles are kept), e.g. 1,2,3")
    p.add_argument("--cols", default="5,6,7,8", help="seeds of the columns (their styles are copied in)")
    p.add_argument("--layers", default="coarse", help="coarse, middle, fine or a range A-B of style layers")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="truncation psi of all latents")
    p.add_argument("--grid", help="PNG to write (default RUN_DIR/style-mix-<layers>.png)")
    p.add_argument("--class", dest="cls", help="conditional runs: the class of every image")
    p.add_argument("--attr", help="attribute-conditional runs: e.g. Smiling=1")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator instead of G_ema")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_common(p)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", parser_class=_Parser, metavar="SUBCOMMAND")
    q = dsub.add_parser("info", help="count, shape, classes and value range of a data source")
    q.add_argument("source", help="fashion-mnist, mnist[:test], a folder or a .zip")
    q.add_argument("--data-dir", help="folder holding the dataset files")
    q.add_argument("--strict", action="store_true", help="fail on unreadable images instead of skipping them")
    q.add_argument("--json", action="store_true")
    _add_common(q)
    _add_common(p)

    p = sub.add_parser("demo", help="train the default Fashion-MNIST DCGAN on CPU and write samples")
    p.add_argument("--run-dir", default="runs/demo")
    p.add_argument("--steps", type=int, help="override the demo's step budget")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation at the end")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_common(p)

    p = sub.add_parser("eval", help="FID / KID / IS / precision-recall of a run, or between two image sources",
                       description="ganforge eval RUN_DIR [options] | ganforge eval --real SOURCE --fake SOURCE")  # fmt: skip
    p.add_argument("run_dir", nargs="?", help="a run directory (its EMA generator is sampled)")
    p.add_argument("--real", help="reference images: dataset spec, folder or .zip (with --fake)")
    p.add_argument("--fake", help="images to judge: folder or .zip (with --real)")
    p.add_argument("--metrics", default="fid,kid,is", help="comma list of fid,kid,is,pr (default fid,kid,is)")
    p.add_argument("--n", type=int, help="images per side (default 10000 for a run; all for sources)")
    p.add_argument(
        "--network", help="feature network (default: the domain CNN for (fashion-)mnist, else inception-fid)"
    )
    p.add_argument("--ref", help="reference source for a run (default: the run's training data)")
    p.add_argument("--n-ref", type=int, help="reference images for a run (default: all of the reference source)")
    p.add_argument("--resolution", type=int, help="size images are loaded at for --real/--fake")
    p.add_argument("--inception-weights", help="path of pt_inception-2015-12-05-6726825d.pth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_common(p)

    p = sub.add_parser("compare-grid", help="real and generated images side by side in one PNG")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/compare-grid.png)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_common(p)

    p = sub.add_parser("nearest", help="generated samples next to their nearest training images (memorization check)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="PNG path (default RUN_DIR/nearest.png)")
    p.add_argument("--n", type=int, default=8, help="samples (rows)")
    p.add_argument("--k", type=int, default=5, help="neighbours per sample")
    p.add_argument("--network", help="feature network (default as for eval)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing --out file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    _add_common(p)

    p = sub.add_parser("metrics", help="feature-network tools")
    msub = p.add_subparsers(dest="metrics_command", parser_class=_Parser, metavar="SUBCOMMAND")
    q = msub.add_parser("train-extractor", help="train a domain classifier used as a feature network")
    q.add_argument("dataset", choices=("fashion-mnist", "mnist"))
    q.add_argument("--out", help="where to write the .safetensors (default: the packaged asset)")
    q.add_argument("--data-dir")
    q.add_argument("--epochs", type=int)
    q.add_argument("--seed", type=int, default=0)
    _add_common(q)
    _add_common(p)

    p = sub.add_parser("presets", help="list the configs shipped with ganforge")
    _add_common(p)
    p = sub.add_parser("models", help="list the registered models and losses")
    _add_common(p)
    return ap


def _split_train_args(args: list[str]) -> tuple[str | None, list[str]]:
    config, overrides = None, []
    for a in args:
        if "=" in a:
            overrides.append(a)
        elif config is None:
            config = a
        else:
            raise UserError(f"unexpected argument {a!r}: give one config, then key=value overrides")
    return config, overrides


def cmd_train(a: argparse.Namespace) -> int:
    from ganforge.training.launch import train

    config, overrides = _split_train_args(a.args)
    if config is None and a.resume is None:
        raise UserError("give a config (YAML path or preset, see `ganforge presets`) or --resume RUN_DIR")
    run, summary = train(config, overrides, run_dir=a.run_dir, resume=a.resume, init_from=a.init_from,
                         device=a.device, quiet=a.quiet)  # fmt: skip
    _report_run(run.path, summary)
    return EXIT_DISK_FULL if summary.get("stopped_by") == "disk full" else 0


def _report_run(path: Path, summary: dict[str, Any]) -> None:
    from ganforge.training import checkpoint as ckpt

    have = ckpt.list_checkpoints(path / "checkpoints")
    stopped = f" (stopped by {summary['stopped_by']})" if summary.get("stopped_by") else ""
    print(f"run: {path}  step {summary['step']}{stopped}")
    samples = sorted((path / "samples").glob("step-*.png"))
    if samples:
        print(f"  samples:     {samples[-1]}")
    if (path / "loss_curves.png").exists():
        print(f"  loss curves: {path / 'loss_curves.png'}")
    if have:
        print(f"  checkpoint:  {have[-1][1].with_suffix('.safetensors')}")


def cmd_sample(a: argparse.Namespace) -> int:
    from ganforge.generate import sample_to_files

    if a.n < 1:
        raise UserError(f"--n must be at least 1, got {a.n}")
    out = sample_to_files(a.run_dir, n=a.n, seed=a.seed, grid=a.grid, out_dir=a.out, ema=not a.no_ema,
                          device=a.device, nrow=a.nrow, overwrite=a.overwrite, cls=a.cls, attrs=a.attr,
                          truncation_psi=_psi(a.truncation))  # fmt: skip
    if "grid" in out:
        print(f"grid: {out['grid']}")
    if "files" in out:
        print(f"{len(out['files'])} images in {a.out}")
    return 0


def _psi(value: float) -> float:
    if not -1.0 <= value <= 2.0 or value != value:
        raise UserError(f"--truncation must be a number in [-1, 2] (1 = no truncation); got {value}")
    return value


def _seeds(text: str, flag: str) -> list[int]:
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts or not all(t.isdigit() for t in parts) or len(parts) > 32:
        raise UserError(f"{flag} takes 1 to 32 comma-separated non-negative integer seeds, e.g. 1,2,3; got {text!r}")
    return [int(t) for t in parts]


def cmd_style_mix(a: argparse.Namespace) -> int:
    from ganforge.generate import load_generator, make_labels, require_styles, style_mix
    from ganforge.images import check_new_file, save_grid

    rows, cols = _seeds(a.rows, "--rows"), _seeds(a.cols, "--cols")
    psi = _psi(a.truncation)
    safe_layers = "".join(c if c.isalnum() else "-" for c in a.layers)
    grid = Path(a.grid) if a.grid else Path(a.run_dir) / f"style-mix-{safe_layers}.png"
    check_new_file(grid, a.overwrite, own_dir=Path(a.run_dir))
    G, cfg = load_generator(a.run_dir, ema=not a.no_ema, device=a.device)
    require_styles(G, "style mixing")
    cls = a.cls if a.cls is not None or a.attr is not None or not cfg["model"].get("conditional") else 0
    labels = make_labels(cfg, max(len(rows), len(cols)), cls, a.attr)
    img = style_mix(G, rows, cols, a.layers, psi, labels)
    print(f"grid: {save_grid(img, grid, nrow=len(cols) + 1)}")
    return 0


def cmd_data(a: argparse.Namespace) -> int:
    if a.data_command != "info":
        raise UserError("usage: ganforge data info SOURCE [--data-dir DIR]")
    from ganforge.data import dataset_info

    info = dataset_info(a.source, data_dir=a.data_dir, strict=a.strict)
    if a.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:>12}: {v}")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from ganforge.training.launch import train
    from ganforge.training.run import is_run_dir

    path = Path(a.run_dir)
    overrides = [f"train.steps={a.steps}"] if a.steps else []
    if is_run_dir(path):
        from ganforge.training import checkpoint as ckpt

        have = ckpt.list_checkpoints(path / "checkpoints")
        cfg_steps = a.steps or _preset_steps("fashion_mnist_dcgan")
        if have and have[-1][0] >= cfg_steps:
            print(f"demo run {path} is already trained (step {have[-1][0]}); delete it to train again")
            run_path, summary = path, {"step": have[-1][0]}
        else:
            run, summary = train(None, overrides, resume=path, device=a.device)
            run_path = run.path
    else:
        run, summary = train("fashion_mnist_dcgan", overrides, run_dir=path, device=a.device)
        run_path = run.path
    _report_run(run_path, summary)
    if not a.no_eval:
        from ganforge.metrics.evaluate import evaluate_run
        from ganforge.visualize import compare_grid

        print(f"  real vs generated: {compare_grid(run_path, device=_device(a.device))}")
        print("evaluating 10,000 samples against all 60,000 Fashion-MNIST training images (fashion-mnist-cnn features)")
        r = evaluate_run(run_path, metrics="fid,kid,is", n=10000, device=_device(a.device))
        print(f"  FID {r['fid']:.3f}   KID {r['kid']:.5f} +- {r['kid_std']:.5f}   IS {r['is']:.3f} +- {r['is_std']:.3f}"
              f"   (logged in {run_path / 'eval.jsonl'})")  # fmt: skip
    return 0


def _device(name: str) -> str:
    from ganforge.training.trainer import resolve_device

    return str(resolve_device(name))


def _print_metrics(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k:>14}: {v:.6g}" if isinstance(v, float) else f"{k:>14}: {v}")


def cmd_eval(a: argparse.Namespace) -> int:
    from ganforge.metrics.evaluate import evaluate_run, evaluate_sources

    if a.n is not None and a.n < 2:
        raise UserError(f"--n must be at least 2, got {a.n}")
    if a.run_dir and (a.real or a.fake):
        raise UserError("give either RUN_DIR or --real and --fake, not both")
    if a.run_dir:
        result = evaluate_run(a.run_dir, metrics=a.metrics, n=a.n or 10000, network=a.network, ref=a.ref, n_ref=a.n_ref,
                              device=_device(a.device), ema=not a.no_ema, seed=a.seed,
                              inception_weights=a.inception_weights, progress=not a.json)  # fmt: skip
    elif a.real and a.fake:
        result = evaluate_sources(a.real, a.fake, metrics=a.metrics, n=a.n, network=a.network,
                                  resolution=a.resolution, device=_device(a.device), seed=a.seed,
                                  inception_weights=a.inception_weights, progress=not a.json)  # fmt: skip
    else:
        raise UserError("give a RUN_DIR, or both --real SOURCE and --fake SOURCE")
    _print_metrics(result, a.json)
    return 0


def cmd_compare_grid(a: argparse.Namespace) -> int:
    from ganforge.visualize import compare_grid

    print(compare_grid(a.run_dir, a.out, n=a.n, seed=a.seed, device=_device(a.device), overwrite=a.overwrite))
    return 0


def cmd_nearest(a: argparse.Namespace) -> int:
    from ganforge.visualize import nearest_neighbours

    res = nearest_neighbours(a.run_dir, a.out, n=a.n, k=a.k, network=a.network, seed=a.seed,
                             device=_device(a.device), progress=not a.json, overwrite=a.overwrite)  # fmt: skip
    if a.json:
        print(json.dumps(res))
    else:
        print(f"png: {res['png']}  ({res['network']} features)")
        print(
            f"median distance of a training image to its nearest other training image: {res['train_nn_median_distance']}"
        )
        for i, row in enumerate(res["distances"]):
            print(f"sample {i}: nearest distances {', '.join(f'{x:.3f}' for x in row)}")
    return 0


def cmd_metrics(a: argparse.Namespace) -> int:
    if a.metrics_command != "train-extractor":
        raise UserError("usage: ganforge metrics train-extractor {fashion-mnist,mnist}")
    from ganforge.metrics.train_extractor import train_extractor

    kw: dict[str, Any] = {"data_dir": a.data_dir, "seed": a.seed}
    if a.out:
        kw["out"] = Path(a.out)
    if a.epochs:
        kw["epochs"] = a.epochs
    _print_metrics(train_extractor(a.dataset, **kw), False)
    return 0


def _preset_steps(name: str) -> int:
    from ganforge.config import load_config

    return load_config(name)["train"]["steps"]


def cmd_presets(a: argparse.Namespace) -> int:
    from ganforge.config import list_presets, load_config

    for name in list_presets():
        c = load_config(name)
        print(f"{name:28s} {c['model']['name']:8s} {c['loss']['name']:8s} {c['data']['source']} "
              f"{c['data']['resolution']}px, {c['train']['steps']} steps")  # fmt: skip
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from ganforge.losses import LOSSES
    from ganforge.models import MODELS

    for name in MODELS.names():
        fam = MODELS.get(name)
        print(f"model {name:10s} {fam.description} (resolutions {', '.join(map(str, fam.resolutions))})")
    for name in LOSSES.names():
        print(f"loss  {name}")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "style-mix": cmd_style_mix, "data": cmd_data, "demo": cmd_demo, "eval": cmd_eval,
            "compare-grid": cmd_compare_grid, "nearest": cmd_nearest, "metrics": cmd_metrics,
            "presets": cmd_presets, "models": cmd_models}  # fmt: skip


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings (a skipped image, a damaged checkpoint) as one readable line each."""
    print(f"ganforge: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        if "--debug" not in argv:
            warnings.showwarning = _show_warning
        return _main(argv)


def _main(argv: list[str]) -> int:
    debug = "--debug" in argv
    try:
        a = build_parser().parse_args(argv)
        if a.command is None:
            build_parser().print_help()
            return EXIT_USER
        return COMMANDS[a.command](a)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"ganforge: error: {e}", file=sys.stderr)
        return EXIT_USER
    except TrainingDiverged as e:
        if debug:
            traceback.print_exc()
        print(f"ganforge: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("ganforge: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
