"""Checkpoints that load without unpickling and survive a crash at any moment.

A checkpoint is two files in `checkpoints/`:
- `step-XXXXXXXX.safetensors`: every tensor (models under `G.`, `D.`, `G_ema.`; optimizer state under
  `opt_G.`, `opt_D.`), loadable by any safetensors reader in any language;
- `step-XXXXXXXX.json`: step, fully resolved config, RNG states, data-stream position, optimizer
  hyper-parameters and the SHA-256 of the tensor file.

Each file is written to a temporary name, flushed, fsynced and renamed. The JSON is written last and
names the tensor file's hash, so a checkpoint is complete exactly when its JSON exists and the hash
matches; anything else is ignored (or reported) on load.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ganforge import __version__
from ganforge.config import short
from ganforge.errors import UserError
from ganforge.fileio import atomic_write_bytes, atomic_write_file, sha256_file

FORMAT = "ganforge-checkpoint/1"
_NAME = re.compile(r"^step-(\d{8,})\.json$")


# ---------------------------------------------------------------------------------------------
# flattening models and optimizers into tensors + JSON


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()}


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into tensors (for safetensors) and plain values (for JSON)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if isinstance(val, torch.Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                plain["state"].setdefault(str(pid), {})[key] = val
    return tensors, plain


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], plain: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, val in tensors.items():
        if name.startswith(prefix + "."):
            pid, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(pid), {})[key] = val
    for pid, st in plain.get("state", {}).items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": plain["param_groups"]})


def load_module(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor], what: str = "") -> None:
    """Load `prefix.*` tensors into `module`, explaining key or shape mismatches in one line."""
    sd = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    if not sd:
        raise UserError(f"checkpoint{what} has no {prefix} tensors; it is not a ganforge checkpoint of this model")
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [k for k in own if k in sd and own[k].shape != sd[k].shape]
    if missing or unexpected or wrong:
        detail = []
        if wrong:
            k = wrong[0]
            detail.append(f"{prefix}.{k} has shape {tuple(sd[k].shape)} but the model wants {tuple(own[k].shape)}")
        if missing:
            detail.append(f"{len(missing)} tensors missing (e.g. {prefix}.{missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {prefix}.{unexpected[0]})")
        raise UserError(f"checkpoint{what} does not fit this model: " + "; ".join(detail))
    module.load_state_dict(sd)


# ---------------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors plus its JSON metadata."""

    path: Path  # the .safetensors file
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def config(self) -> dict[str, Any]:
        return self.meta["config"]

    def generator_prefix(self, ema: bool = True) -> str:
        """The one rule for which generator to use: G_ema when asked for and the run kept one, else G."""
        return "G_ema" if ema and any(k.startswith("G_ema.") for k in self.tensors) else "G"

    def require_state(self, *keys: str) -> None:
        """Resuming reads training state from the sidecar; a sidecar without it (hand-edited, or from another tool,
        so no meta_sha256 caught it) is a one-line error, not a KeyError."""
        missing = [k for k in keys if k not in self.meta]
        if missing:
            raise UserError(f"{self.path.with_suffix('.json').name} has no {', '.join(map(repr, missing))}: this "
                            "checkpoint cannot be resumed; start a new run from its weights with --init-from")

    def describe(self) -> str:
        c = self.meta.get("config", {})
        m, d = c.get("model", {}), c.get("data", {})
        return (
            f"model {m.get('name')!r} (nf={m.get('nf')}, z_dim={m.get('z_dim')}) at "
            f"{d.get('resolution')}px x {d.get('channels')} channels"
        )


def save_checkpoint(
    directory: Path, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any], keep: int
) -> Path:
    """Write one checkpoint atomically, then prune all but the newest `keep` complete ones."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"step-{step:08d}"
    st_path = directory / f"{stem}.safetensors"
    digest = ""

    def hash_then_fault(tmp: str) -> None:
        nonlocal digest
        digest = sha256_file(Path(tmp))
        _fault("tensors-written")

    atomic_write_file(st_path, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT, "step": str(step)}),
                      before_rename=hash_then_fault, tmp_prefix=f".{stem}.")
    meta = {
        "format": FORMAT,
        "step": step,
        "tensors": st_path.name,
        "sha256": digest,
        "ganforge_version": __version__,
        "torch_version": torch.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **meta,
    }
    meta["meta_sha256"] = _meta_digest(meta)
    try:
        _fault("before-sidecar")
        atomic_write_bytes(directory / f"{stem}.json", json.dumps(meta, indent=1).encode())
    except BaseException:
        st_path.unlink(missing_ok=True)  # no JSON, no checkpoint: do not leave an orphan tensor file
        raise
    prune(directory, keep)
    return st_path


# Fault injection for crash tests: a test (or benchmarks/crash_test.py, through its sitecustomize) installs
# a callable that is called with the name of each point inside a checkpoint write, e.g. to sleep there so
# that a SIGKILL lands while the checkpoint is half-written. Production code never sets it.
FAULT_HOOK: Callable[[str], None] | None = None


def _fault(point: str) -> None:
    if FAULT_HOOK is not None:
        FAULT_HOOK(point)


def _meta_digest(meta: dict[str, Any]) -> str:
    """SHA-256 of the sidecar's own content (without this field): a flipped bit in the step, RNG state
    or config must not resume a different training state silently."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, json path) of checkpoints whose JSON exists, oldest first."""
    if not directory.is_dir():
        return []
    out = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def prune(directory: Path, keep: int) -> None:
    for _, js in list_checkpoints(directory)[:-keep]:
        js.unlink(missing_ok=True)  # the JSON goes first: a half-pruned checkpoint is simply incomplete
        js.with_suffix(".safetensors").unlink(missing_ok=True)
    for p in directory.glob(".step-*.tmp"):  # leftovers of a process killed mid-write
        if time.time() - p.stat().st_mtime > 60:
            p.unlink(missing_ok=True)


def read_checkpoint(path: Path, verify: bool = True) -> Checkpoint:
    """Load a checkpoint by its .safetensors or .json path, checking its hash."""
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if path.suffix in (".pt", ".pth", ".ckpt", ".pkl", ".bin"):
        return _read_torch_file(path)
    if path.suffix != ".safetensors":
        raise UserError(f"{path} is not a checkpoint: expected a .safetensors file or a run directory")
    js = path.with_suffix(".json")
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    meta: dict[str, Any] = {}
    if js.is_file():
        try:
            meta = json.loads(js.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"checkpoint metadata {js} is unreadable ({e}); it is damaged") from None
        if not isinstance(meta, dict):
            raise UserError(f"checkpoint metadata {js} is damaged (not a JSON object)")
        if verify and "meta_sha256" in meta and _meta_digest(meta) != meta["meta_sha256"]:
            raise UserError(f"checkpoint metadata {js} is corrupted (its SHA-256 does not match its content)")
        m = _NAME.match(js.name)
        if m and meta.get("step") != int(m.group(1)):
            raise UserError(f"checkpoint metadata {js} is damaged (it names step {short(meta.get('step'))})")
        if verify and meta.get("sha256") and sha256_file(path) != meta["sha256"]:
            raise UserError(f"checkpoint {path} is corrupted or truncated (SHA-256 does not match {js.name})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"checkpoint {path} is not a readable safetensors file ({e})") from None
    return Checkpoint(path, tensors, meta)


def _read_torch_file(path: Path) -> Checkpoint:
    """A plain `torch.save`d state dict, loaded with weights_only=True: a pickle that would run code
    (or hold anything but tensors and plain containers) is refused before it runs."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises UnpicklingError and others
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"refused to load {path}: it is not a plain tensor checkpoint ({first[:200]}); "
            "ganforge only loads safetensors or weights-only torch files"
        ) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(f"{path} does not hold a flat dict of tensors; cannot use it as a checkpoint")
    return Checkpoint(path, obj, {})


def latest_checkpoint(directory: Path) -> tuple[Checkpoint | None, list[str]]:
    """Newest intact checkpoint, plus a list of warnings about damaged newer ones it skipped."""
    warnings: list[str] = []
    for _, js in reversed(list_checkpoints(directory)):
        try:
            return read_checkpoint(js.with_suffix(".safetensors")), warnings
        except UserError as e:
            warnings.append(f"skipping damaged checkpoint: {e}")
    return None, warnings
