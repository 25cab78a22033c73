"""Latents, their spaces, rendering, and the files that carry them (tied to one generator by its fingerprint).

Spaces: `z` (every family: the Gaussian input), `w` (style models: one w broadcast to every layer) and `w+`
(style models: one w per synthesis layer, `G.num_ws` of them). A latent file made for one generator is refused
by another: a direction or projection only means something for the weights it was computed on.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganforge.errors import UserError
from ganforge.fileio import atomic_write_bytes

SPACES = ("z", "w", "w+")
FORMAT = "ganforge-latent/1"


def is_style(G: nn.Module) -> bool:
    return hasattr(G, "mapping") and hasattr(G, "synthesis")


def spaces_of(G: nn.Module) -> tuple[str, ...]:
    return SPACES if is_style(G) else ("z",)


def check_space(G: nn.Module, space: str) -> str:
    if space not in spaces_of(G):
        raise UserError(f"--space {space}: this run's generator ({type(G).__name__}) has the latent space(s) "
                        f"{', '.join(spaces_of(G))}; w and w+ need a style-based model")
    return space


def fingerprint(G: nn.Module) -> str:
    """SHA-256 (first 16 hex digits) of the generator's weights and buffers in a fixed order: the same weights give
    the same fingerprint whether loaded from a run folder, a checkpoint or a bundle, on any device."""
    h = hashlib.sha256()
    for name, t in sorted(G.state_dict().items()):
        a = t.detach().cpu().contiguous()
        h.update(f"{name}:{a.dtype}:{tuple(a.shape)};".encode())
        h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes() if a.numel() else b"")  # 0-d too
    return h.hexdigest()[:16]


@dataclass
class Latent:
    """`values`: (N, z_dim) in z, (N, w_dim) in w, (N, num_ws, w_dim) in w+. `labels`: class indices (N,) or
    label vectors (N, L) (soft, when projection optimised them) for conditional generators. `noise`: one
    (N, 1, r, r) map per synthesis layer when projection optimised stylegan2's noise (None: the layers' own
    fixed noise, as `ganforge sample` uses)."""

    values: torch.Tensor
    space: str
    labels: torch.Tensor | None = None
    noise: list[torch.Tensor] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def ws(self, G: nn.Module) -> torch.Tensor:
        """The per-layer ws (N, num_ws, w_dim) of a style model, from any space (z goes through the mapping
        without truncation)."""
        device = next(G.parameters()).device
        v = self.values.to(device)
        if self.space == "z":
            lb = None if self.labels is None else self.labels.to(device)
            return G.mapping(v, lb)
        if self.space == "w":
            return v.unsqueeze(1).repeat(1, G.num_ws, 1)
        return v


def noise_layers(G: nn.Module) -> list[nn.Module]:
    """The synthesis layers of a style model that add per-pixel noise (they own a `noise_const` buffer)."""
    return [m for m in G.synthesis.modules() if hasattr(m, "noise_const")]


@contextmanager
def noise_maps(G: nn.Module, noise: list[torch.Tensor] | None) -> Iterator[None]:
    """Render with given per-layer noise instead of the layers' fixed noise (restored afterwards). A map of
    batch size 1 is shared by the batch; otherwise the batch must match (rendered one latent at a time)."""
    if noise is None:
        yield
        return
    layers = noise_layers(G)
    if len(layers) != len(noise):
        raise UserError(f"the latent carries {len(noise)} noise maps; this generator has {len(layers)} noise layers")
    saved = [m.noise_const for m in layers]
    try:
        for m, n in zip(layers, noise, strict=True):
            m.noise_const = n.reshape(m.noise_const.shape).to(m.noise_const)
        yield
    finally:
        for m, s in zip(layers, saved, strict=True):
            m.noise_const = s


@torch.no_grad()
def render(G: nn.Module, latent: Latent, batch_size: int = 64) -> torch.Tensor:
    """Images in [-1, 1] (NCHW, CPU) of a latent in any space. A z latent renders exactly as `ganforge sample`
    renders the same z (same call, same fixed noise), so strength-0 edits and seed images agree bit for bit."""
    out = []
    device = next(G.parameters()).device
    per_item_noise = latent.noise is not None and latent.noise[0].shape[0] > 1
    step = 1 if per_item_noise else batch_size
    for i in range(0, len(latent), step):
        part = Latent(latent.values[i : i + step], latent.space,
                      None if latent.labels is None else latent.labels[i : i + step])
        noise = None
        if latent.noise is not None:
            noise = [n[i : i + 1] for n in latent.noise] if per_item_noise else latent.noise
        if latent.space == "z" and not is_style(G):
            lb = None if part.labels is None else part.labels.to(device)
            img = G(part.values.to(device), lb)
        elif latent.space == "z" and noise is None:
            lb = None if part.labels is None else part.labels.to(device)
            img = G(part.values.to(device), lb, noise_mode="const")
        else:
            with noise_maps(G, noise):
                img = G.synthesis(part.ws(G), noise_mode="const")
        out.append(img.float().clamp_(-1.0, 1.0).cpu())
    return torch.cat(out) if out else torch.empty(0)


# ---------------------------------------------------------------------------------------------
# files: a .npz of arrays plus a JSON header (format, space, fingerprint, anything else the tool records)


def save_npz(path: Path, arrays: dict[str, np.ndarray], header: dict[str, Any]) -> Path:
    """Write arrays + a JSON header atomically (a crash never leaves half a file under the final name)."""
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def load_npz(path: Path, what: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and header of a file `save_npz` wrote; anything else is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop("__header__").tobytes().decode())
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (OSError, ValueError, KeyError, EOFError) as e:
        raise UserError(f"{what} {path} is not a ganforge file ({type(e).__name__}: {e}); make it with ganforge "
                        "project / ganforge directions") from None
    return arrays, header


def check_fingerprint(header: dict[str, Any], G: nn.Module, path: Path, what: str) -> None:
    mine = fingerprint(G)
    if header.get("fingerprint") != mine:
        raise UserError(f"{what} {path} was made for another generator (fingerprint {header.get('fingerprint')}, "
                        f"this run's is {mine}); compute it again for this run")


def save_latent(path: Path, latent: Latent, G: nn.Module, **info: Any) -> Path:
    arrays = {"values": latent.values.detach().cpu().float().numpy()}
    if latent.labels is not None:
        arrays["labels"] = latent.labels.detach().cpu().numpy()
    for i, n in enumerate(latent.noise or []):
        arrays[f"noise{i}"] = n.detach().cpu().float().numpy()
    header = {"format": FORMAT, "space": latent.space, "fingerprint": fingerprint(G),
              "noise_maps": len(latent.noise or []), **latent.info, **info}
    return save_npz(path, arrays, header)


def load_latent(path: Path, G: nn.Module) -> Latent:
    """A latent file for this generator (another generator's is refused), ready to `render`."""
    arrays, header = load_npz(path, "latent file")
    if header.get("format") != FORMAT or "values" not in arrays:
        raise UserError(f"latent file {path} is not a ganforge latent (format {header.get('format')!r})")
    check_fingerprint(header, G, path, "latent file")
    space = check_space(G, header.get("space", "z"))
    noise = [torch.from_numpy(arrays[f"noise{i}"]) for i in range(int(header.get("noise_maps", 0)))]
    labels = torch.from_numpy(arrays["labels"]) if "labels" in arrays else None
    info = {k: v for k, v in header.items() if k not in ("format", "space", "fingerprint", "noise_maps")}
    return Latent(torch.from_numpy(arrays["values"]), space, labels, noise or None, info)
