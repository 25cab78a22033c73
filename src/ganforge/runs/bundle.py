"""A bundle: one trained generator in a folder that stands on its own (the Hugging Face model-repository layout).

BUNDLE/README.md           the model card (written by ganforge.publish)
BUNDLE/model.safetensors   G_ema.* (and G.* unless published with --g-ema-only), the checkpoint's tensor names
BUNDLE/config.json         {"format", "library", "step", "images_seen", "generator", "config": the run's config}
BUNDLE/generator*.onnx     the ONNX export (when the onnx extra was installed)
BUNDLE/samples.png         a sample grid
BUNDLE/manifest.json       {"format", "files": {name: sha256}} of every file above

Reading a bundle gives a `Checkpoint`, so everything that loads a run's generator (`ganforge sample`, export,
`ganforge.load`) loads a bundle the same way, without the run folder or the trainer. Every file is hashed on load:
a missing or altered file is a one-line error, not a silently different model. Files the manifest does not list
(a hub's .gitattributes, say) are ignored.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ganforge.errors import UserError
from ganforge.fileio import replace_dir, sha256_file
from ganforge.runs.checkpoint import Checkpoint

FORMAT = "ganforge-bundle/1"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def is_bundle(path: str | Path) -> bool:
    """A folder with a bundle manifest (a run folder has config.yaml and checkpoints/ instead)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(path: Path) -> dict[str, Any]:
    p = Path(path) / MANIFEST
    try:
        manifest = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{p} is unreadable ({' '.join(str(e).split())[:120]}); re-publish the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{p} is not a ganforge bundle manifest (format {FORMAT}); re-publish the bundle")
    return manifest


def verify(path: str | Path) -> dict[str, Any]:
    """The manifest, after checking that every file it lists is there with its recorded SHA-256."""
    path = Path(path)
    manifest = read_manifest(path)
    for name, digest in sorted(manifest["files"].items()):
        f = path / name
        if not f.is_file():
            raise UserError(f"bundle {path} is incomplete: {name} is missing; download or re-publish the whole folder")
        if sha256_file(f) != digest:
            raise UserError(f"bundle {path} is damaged: {name} does not match its SHA-256 in {MANIFEST}; "
                            "download or re-publish it")
    for required in (WEIGHTS, CONFIG):
        if required not in manifest["files"]:
            raise UserError(f"bundle {path} lists no {required}; re-publish it")
    return manifest


def read_bundle(path: str | Path, *, check: bool = True) -> Checkpoint:
    """The bundle's tensors and metadata as a Checkpoint (meta["config"] is the run's config)."""
    path = Path(path)
    if check:
        verify(path)
    try:
        info = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path / CONFIG} is unreadable ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(info, dict) or not isinstance(info.get("config"), dict):
        raise UserError(f"{path / CONFIG} holds no ganforge config; re-publish the bundle")
    try:
        tensors = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{path / WEIGHTS} is not a readable safetensors file ({e})") from None
    return Checkpoint(path / WEIGHTS, tensors, {**info, "step": info.get("step", 0)})


def write_bundle(out: str | Path, writers: dict[str, Callable[[Path], None]], *, overwrite: bool = False) -> Path:
    """Create the folder `out` from `writers` (file name -> function writing that file), plus the manifest.

    Everything is written into a hidden staging folder beside `out` and renamed into place at the end, so a failure
    leaves no half-made bundle; an existing `out` is only replaced with `overwrite` (and only if it is a bundle)."""
    out = Path(out)
    if out.exists():
        if not overwrite:
            raise UserError(f"{out} already exists; choose another --out or pass --overwrite")
        if not is_bundle(out):
            raise UserError(f"{out} exists and is not a ganforge bundle; --overwrite only replaces a bundle")
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        for name, write in writers.items():
            write(stage / name)
        files = {p.relative_to(stage).as_posix(): sha256_file(p) for p in sorted(stage.rglob("*")) if p.is_file()}
        (stage / MANIFEST).write_text(json.dumps({"format": FORMAT, "files": files}, indent=1) + "\n")
        for p in stage.rglob("*"):
            if p.is_file():
                with open(p, "rb+") as f:
                    os.fsync(f.fileno())
        os.chmod(stage, 0o755)
        replace_dir(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def save_weights(path: Path, tensors: dict[str, torch.Tensor], step: int) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"format": FORMAT, "step": str(step)})
