"""`ganforge publish`: a thin wrapper over ganforge.publish."""

from __future__ import annotations

import argparse

from ganforge.cli.common import Command, add_overwrite


def _publish_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by `ganforge train`")
    p.add_argument("--out", required=True, help="the bundle folder to write (Hugging Face model-repository layout)")
    p.add_argument("--g-ema-only", action="store_true", help="ship only G_ema (the sampling generator), not G")
    p.add_argument("--license", default="mit", help="license in the model card's metadata (default: mit)")
    p.add_argument("--no-onnx", action="store_true", help="leave out the ONNX export")
    add_overwrite(p)


def _publish(a: argparse.Namespace) -> int:
    from ganforge.publish import publish

    result = publish(a.run_dir, a.out, g_ema_only=a.g_ema_only, license=a.license, onnx=not a.no_onnx,
                     overwrite=a.overwrite)
    print(f"bundle: {result['path']} ({', '.join(result['files'])})")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"push it to the Hugging Face Hub with: huggingface-cli upload USER/MODEL_NAME {result['path']} .")
    return 0


COMMANDS = [
    Command("publish", "write a run's generator as a self-contained bundle with a model card (Hugging Face layout)",
            _publish_args, _publish,
            "Write README.md (a model card with Hub metadata and the evaluation), model.safetensors, config.json, "
            "the ONNX export and a sample grid into one folder; `ganforge sample DIR` and ganforge.load(DIR) use it "
            "without the run folder, and every file's SHA-256 is checked on load."),
]
