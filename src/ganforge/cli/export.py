"""`ganforge export`: a thin wrapper over ganforge.export."""

from __future__ import annotations

import argparse

from ganforge.cli.common import Command, add_overwrite


def _export_args(p: argparse.ArgumentParser) -> None:
    from ganforge.tf import FORMATS  # torch- and TensorFlow-free: `ganforge --help` stays fast

    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--format", dest="fmt", required=True, metavar="FORMAT",
                   help="; ".join(f"{k}: {v}" for k, v in FORMATS.items()))
    p.add_argument("--out", required=True, help="the file (or, for savedmodel, the folder) to write")
    p.add_argument("--no-ema", action="store_true", help="export the raw generator instead of G_ema")
    p.add_argument("--checkpoint", help="a checkpoint file to export (default: the run's newest intact one)")
    p.add_argument("--directions", action="append", metavar="DIRS.npz",
                   help="a direction file (ganforge directions) to ship in the metadata, for editing; repeatable")
    add_overwrite(p)


def _export(a: argparse.Namespace) -> int:
    from ganforge.export import export

    result = export(a.run_dir, a.fmt, a.out, ema=not a.no_ema, checkpoint=a.checkpoint, overwrite=a.overwrite,
                    directions=a.directions)
    meta = result["metadata"]
    for part, path in result["paths"].items():
        print(f"{part + ':':<11}{path}")
    print(f"{meta['model']} step {meta['step']} ({meta['generator']}), input z [N, {meta['z_dim']}]"
          f"{', labels' if meta['labels'] else ''}{', psi' if 'psi' in meta['inputs'] else ''} -> image "
          f"{meta['output']['layout']} in [-1, 1]; max abs difference from PyTorch on seeds 0-15: "
          f"{meta['parity']['max_abs_err']:.2g}")
    return 0


COMMANDS = [
    Command(
        "export",
        "export a run's generator to Keras, SavedModel, TFLite or ONNX",
        _export_args,
        _export,
        "Export a trained generator as a standalone TensorFlow/Keras, TensorFlow Lite or ONNX model (no torch "
        "needed to run it), with its metadata and the latents of seeds 0-15; the export checks its own output "
        "against PyTorch.",
    ),
]
