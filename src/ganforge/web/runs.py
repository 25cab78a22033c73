"""The runs a playground serves: each generator loaded at start (and again when a run still training writes a
newer checkpoint), used behind its own lock, and what the page shows about it (model, step, latest FID).
Rendering returns PNG bytes; HTTP lives in `app.py`."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ganforge.errors import UserError, warn
from ganforge.generate import (
    interpolation_path,
    load_generator,
    make_labels,
    render_path,
    sample,
    style_layers,
    style_mix,
    walk_labels,
)
from ganforge.images import make_grid
from ganforge.images import png_bytes as encode_png
from ganforge.runs import checkpoint as ckpt
from ganforge.runs.rundir import RunDir


def latest_fid(run_dir: Path) -> dict[str, Any] | None:
    """The last evaluation in RUN_DIR/eval.jsonl that has an FID ({"fid", "step"}), None when there is none."""
    found = None
    for rec in RunDir(Path(run_dir), tensorboard=False).read_eval():
        fid, step = rec.get("fid"), rec.get("step")
        if isinstance(fid, (int, float)) and not isinstance(fid, bool):
            found = {"fid": float(fid), "step": step if isinstance(step, int) else None}
    return found


def png_bytes(x: torch.Tensor, nrow: int | None = None) -> bytes:
    """A batch of [-1, 1] images as one PNG (a grid when there are several)."""
    return encode_png(make_grid(x, nrow, padding=2 if len(x) > 1 else 0))


@dataclass
class ServedRun:
    """One run: its generator (eval mode, never trained here) and a lock, so requests never interleave on it."""

    id: str
    path: Path
    G: torch.nn.Module
    cfg: dict[str, Any]
    step: int | None
    ema: bool = True
    device: str = "cpu"
    lock: threading.Lock = field(default_factory=threading.Lock)
    _skipped: int | None = None  # a newer checkpoint that could not be loaded (not retried on every request)
    _loading: threading.Lock = field(default_factory=threading.Lock)  # one load of a new checkpoint at a time

    def refresh(self) -> None:
        """Follow a run that is still training: when a newer checkpoint has appeared, serve it. The swap happens
        under the lock, so a request renders with the old generator or the new one, never a mix; a checkpoint
        that cannot be loaded keeps the current generator (and says so once)."""
        have = ckpt.list_checkpoints(self.path / "checkpoints")  # names only: cheap enough for every request
        if not have:
            return
        newest, js = have[-1]
        if newest == self._skipped or (self.step is not None and newest <= self.step):
            return
        if not self._loading.acquire(blocking=False):  # another request is loading it: serve the current one
            return
        try:
            G, _ = load_generator(self.path, ema=self.ema, device=self.device, checkpoint=js.with_suffix(".safetensors"))
            G.requires_grad_(False)
            with self.lock:
                self.G, self.step = G, newest
        except UserError as e:
            self._skipped = newest
            warn(f"{self.path}: step {newest} could not be loaded, still serving step {self.step} ({e})")
        finally:
            self._loading.release()

    @property
    def styled(self) -> bool:
        return hasattr(self.G, "mapping") and hasattr(self.G, "synthesis")

    @property
    def label_kind(self) -> str | None:
        m = self.cfg["model"]
        return ("attributes" if m["label_kind"] == "attributes" else "class") if m.get("conditional") else None

    def info(self) -> dict[str, Any]:
        """What the page shows and offers for this run (FID re-read each time: an evaluation may have finished)."""
        d, m = self.cfg["data"], self.cfg["model"]
        groups = [g for g in ("coarse", "middle", "fine") if self.styled and style_layers(self.G, g)]
        fid = latest_fid(self.path)
        return {
            "id": self.id, "name": self.path.name, "model": m["name"], "resolution": d["resolution"],
            "channels": d["channels"], "step": self.step, "fid": fid and fid["fid"], "fid_step": fid and fid["step"],
            "styled": self.styled, "style_layers": groups, "label_kind": self.label_kind,
            "label_names": [str(x) for x in m.get("label_names") or []] if self.label_kind else [],
        }

    def labels(self, n: int, cls: str | None, attrs: list[str] | None, default_class: bool) -> torch.Tensor | None:
        attr_text = None if attrs is None else ",".join(f"{a}=1" for a in attrs)
        if self.label_kind == "class" and cls is None and default_class:
            cls = "0"
        return make_labels(self.cfg, n, cls, attr_text)

    def grid(self, seed: int, n: int, psi: float, cls: str | None, attrs: list[str] | None) -> bytes:
        """n samples of `seed`; a class run with no class picked shows every class in turn, one per column."""
        labels = self.labels(n, cls, attrs, default_class=False)
        names = self.cfg["model"].get("label_names") or []
        nrow = len(names) if self.label_kind == "class" and cls is None and len(names) <= 16 else None
        with self.lock:
            x = sample(self.G, n, seed=seed, labels=labels, truncation_psi=psi)
        return png_bytes(x, nrow)

    def interpolate(
        self, seeds: list[int], t: float, space: str, psi: float, cls: str | None, attrs: list[str] | None
    ) -> bytes:
        """The image a fraction t of the way from seeds[0] to seeds[1] (what the page's slider shows)."""
        labels = walk_labels(self.cfg, cls, None, None if attrs is None else ",".join(f"{a}=1" for a in attrs))
        with self.lock:
            path = interpolation_path(self.G, seeds, space=space, truncation_psi=psi, labels=labels, positions=[t])
            x = render_path(self.G, path)
        return png_bytes(x)

    def style_mix(
        self, rows: list[int], cols: list[int], layers: str, psi: float, cls: str | None, attrs: list[str] | None
    ) -> bytes:
        labels = self.labels(max(len(rows), len(cols)), cls, attrs, default_class=True)
        with self.lock:
            x = style_mix(self.G, rows, cols, layers, psi, labels)
        return png_bytes(x, len(cols) + 1)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "run"


def load_runs(run_dirs: list[str | Path], device: str = "cpu", ema: bool = True) -> dict[str, ServedRun]:
    """Load every generator once, before the server starts (a bad run dir fails here, not on the first request).
    Ids come from folder names (made unique); the page addresses runs by id, never by a path."""
    runs: dict[str, ServedRun] = {}
    seen: set[Path] = set()
    for raw in run_dirs:
        path = Path(raw)
        if path.resolve() in seen:
            raise UserError(f"{path} is given twice; list each run directory once")
        seen.add(path.resolve())
        G, cfg = load_generator(path, ema=ema, device=device)
        G.requires_grad_(False)
        have = ckpt.list_checkpoints(path / "checkpoints")
        base = _slug(path.resolve().name)
        rid, k = base, 2
        while rid in runs:
            rid, k = f"{base}-{k}", k + 1
        runs[rid] = ServedRun(rid, path, G, cfg, have[-1][0] if have else None, ema=ema, device=device)
    return runs
