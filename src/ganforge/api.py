"""The Python face of ganforge: `ganforge.load(...)` gives a `Generator`, `ganforge.train(...)` trains a run.

    import ganforge
    G = ganforge.load("runs/fashion_mnist_dcgan")     # a run folder, a published bundle or a checkpoint file
    images = G.sample(16, seed=0)                      # the images `ganforge sample RUN --n 16 --seed 0` writes
    images                                             # a notebook shows the grid
    G.to_pil(images)[0].save("first.png")

Every method is a thin layer over the functions the CLI uses (generate.py, latent/, export.py), so the same seed
gives the same image here, on the command line, in the playground and in exported models. Power users can keep
calling those functions with `G.module` (the torch generator) and `G.config`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from ganforge.errors import UserError
from ganforge.generate import find_checkpoint, generator_of, interpolate, make_labels, sample, style_mix, walk_labels
from ganforge.images import make_grid, png_bytes, save_grid, to_pil, to_uint8
from ganforge.latent.core import Latent
from ganforge.runs import checkpoint as ckpt

if TYPE_CHECKING:
    from ganforge.latent.directions import Directions
    from ganforge.latent.project import Projection
    from ganforge.runs.rundir import RunDir

Attrs = str | dict[str, int | bool] | None
PREVIEW_N = 16  # images in a Generator's own notebook preview


def _attr_text(attrs: Attrs) -> str | None:
    """{"Smiling": 1, "Male": 0} -> "Smiling=1,Male=0" (the CLI's --attr syntax, which make_labels reads)."""
    if attrs is None or isinstance(attrs, str):
        return attrs
    return ",".join(f"{k}={int(bool(v))}" for k, v in attrs.items())


class Images:
    """A batch of generated images: `tensor` NCHW float in [-1, 1] on the CPU (what generate.sample returns).
    Notebooks show it as a grid; `to_pil()`, `numpy()` (uint8 NHWC) and `save(path)` turn it into files."""

    def __init__(self, tensor: torch.Tensor, nrow: int | None = None) -> None:
        self.tensor = tensor
        self.nrow = nrow

    def __len__(self) -> int:
        return int(self.tensor.shape[0])

    def __getitem__(self, i: int | slice) -> Images:
        t = self.tensor[i]
        return Images(t.unsqueeze(0) if t.dim() == 3 else t)

    def __repr__(self) -> str:
        n, c, h, w = self.tensor.shape
        return f"Images({n} x {c}x{h}x{w}, values in [-1, 1])"

    def numpy(self) -> np.ndarray:
        """uint8 NHWC, rounded as the PNG files are."""
        return to_uint8(self.tensor)

    def to_pil(self, upscale: int = 1) -> list[Image.Image]:
        return [to_pil(a, upscale) for a in self.numpy()]

    def grid(self, nrow: int | None = None) -> Image.Image:
        return to_pil(make_grid(self.tensor, nrow or self.nrow))

    def save(self, path: str | Path, nrow: int | None = None) -> Path:
        """The grid as a PNG (written atomically)."""
        return save_grid(self.tensor, Path(path), nrow=nrow or self.nrow)

    def _repr_png_(self) -> bytes:
        return png_bytes(make_grid(self.tensor, self.nrow))


class Generator:
    """A trained generator with its config: sampling, walks, style mixing, directions, edits and export.

    `truncation` (psi, style-based models) is the default of every method that draws from the mapping: 1 = plain
    sampling, 0.7 = more typical images. Conditional models take a class by name or index (`cls="Sneaker"`) or
    attributes by name (`attrs={"Smiling": 1}`); names are case-insensitive."""

    def __init__(self, module: torch.nn.Module, config: dict[str, Any], source: Path, checkpoint: ckpt.Checkpoint,
                 ema: bool = True) -> None:
        self.module = module
        self.config = config
        self.source = source
        self.step = checkpoint.step
        self.generator_name = checkpoint.generator_prefix(ema)
        # the loaded generator's tensors and metadata (not D's or the optimizers'): what an export records
        keep = {k: v for k, v in checkpoint.tensors.items() if k.startswith(self.generator_name + ".")}
        self._checkpoint = ckpt.Checkpoint(checkpoint.path, keep, checkpoint.meta)
        self.truncation = 1.0
        self._directions: dict[str, Directions] = {}

    # --- what it is ------------------------------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        return int(self.module.z_dim)

    @property
    def resolution(self) -> int:
        return int(self.config["data"]["resolution"])

    @property
    def channels(self) -> int:
        return int(self.config["data"]["channels"])

    @property
    def labels(self) -> list[str]:
        """Class or attribute names of a conditional model (empty otherwise)."""
        m = self.config["model"]
        return [str(x) for x in m["label_names"]] if m.get("conditional") else []

    @property
    def label_kind(self) -> str | None:
        """"class", "attributes" or None (unconditional)."""
        m = self.config["model"]
        return m.get("label_kind") if m.get("conditional") else None

    @property
    def is_style(self) -> bool:
        return hasattr(self.module, "mapping") and hasattr(self.module, "synthesis")

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def __repr__(self) -> str:
        cond = f", {self.label_kind}: {', '.join(self.labels[:6])}{'...' if len(self.labels) > 6 else ''}" if self.labels else ""
        return (f"Generator({self.config['model']['name']}, {self.resolution}x{self.resolution}x{self.channels}, "
                f"z_dim {self.z_dim}, step {self.step}, {self.generator_name}{cond}; from {self.source})")

    def _repr_png_(self) -> bytes:
        return self.sample(PREVIEW_N, seed=0)._repr_png_()

    # --- drawing images ----------------------------------------------------------------------------------------
    def _psi(self, truncation: float | None) -> float:
        psi = self.truncation if truncation is None else float(truncation)
        if not -1.0 <= psi <= 2.0 or psi != psi:
            raise UserError(f"truncation must be a number in [-1, 2] (1 = no truncation); got {psi}")
        return psi

    def sample(self, n: int = 16, seed: int = 0, *, cls: str | int | None = None, attrs: Attrs = None,
               truncation: float | None = None, batch_size: int = 256) -> Images:
        """n images from seed `seed`: the images `ganforge sample SOURCE --n N --seed S` writes (a class-conditional
        model cycles through its classes unless `cls` is given)."""
        if n < 1:
            raise UserError(f"n must be at least 1, got {n}")
        labels = make_labels(self.config, n, cls, _attr_text(attrs))
        x = sample(self.module, n, seed=seed, labels=labels, truncation_psi=self._psi(truncation), batch_size=batch_size)
        nrow = len(self.labels) if labels is not None and cls is None and attrs is None and len(self.labels) <= 16 else None
        return Images(x, nrow)

    def interpolate(self, seeds: Sequence[int], steps: int = 8, *, space: str = "z", mode: str | None = None,
                    loop: bool = False, cls: str | None = None, classes: Sequence[str] | None = None,
                    attrs: Attrs = None, attr_walk: str | None = None, truncation: float | None = None) -> Images:
        """A walk through seeds (slerp in z, lerp in w), classes (`classes=[...]` at one seed) or an attribute going
        0 -> 1 (`attr_walk="Smiling"`): `steps` frames per transition, the same frames `ganforge interpolate` makes."""
        labels = walk_labels(self.config, cls, None if classes is None else [str(c) for c in classes],
                             _attr_text(attrs), attr_walk)
        x = interpolate(self.module, list(seeds), steps, space=space, mode=mode, loop=loop,
                        truncation_psi=self._psi(truncation), labels=labels)
        return Images(x, steps if not loop else None)

    def style_mix(self, rows: Sequence[int], cols: Sequence[int], layers: str | Sequence[int] = "coarse", *,
                  cls: str | int | None = None, attrs: Attrs = None, truncation: float | None = None) -> Images:
        """The style-mixing figure (style-based models): row seeds keep their styles except at `layers` ("coarse",
        "middle", "fine", "A-B" or indices), which come from the column seeds."""
        if cls is None and attrs is None and self.label_kind == "class":
            cls = 0
        labels = make_labels(self.config, max(len(rows), len(cols)), cls, _attr_text(attrs))
        layer_arg = layers if isinstance(layers, str) else [int(i) for i in layers]
        x = style_mix(self.module, list(rows), list(cols), layer_arg, self._psi(truncation), labels)
        return Images(x, len(cols) + 1)

    # --- semantic directions and edits ---------------------------------------------------------------------------
    def directions(self, method: str = "sefa", *, k: int | None = None, n: int | None = None, seed: int = 0,
                   network: str | None = None, layers: str | None = None) -> Directions:
        """Semantic directions of this generator (latent/directions.py: sefa, pca, classifier), computed once per
        set of arguments; `.names` lists them, `.save(path)` writes the file `ganforge edit` reads."""
        from dataclasses import replace

        from ganforge.generate import style_layers
        from ganforge.latent.directions import compute_directions, run_spec

        key = repr((method, k, n, seed, network, layers))
        if key not in self._directions:
            spec = run_spec(self.config, method, k=k, n=n, seed=seed, network=network)
            if layers is not None:
                if method != "sefa" or not self.is_style:
                    raise UserError("layers picks the style layers sefa factorises; use method='sefa' on a style model")
                spec = replace(spec, layers=style_layers(self.module, layers))
            self._directions[key] = compute_directions(self.module, method, spec)
        return self._directions[key]

    def project(self, targets: Sequence[str | Path | bytes] | torch.Tensor, *, space: str | None = None,
                steps: int | None = None, restarts: int | None = None, network: str | None = None, seed: int = 0,
                cls: str | int | None = None, attrs: Attrs = None) -> Projection:
        """GAN inversion (latent/project.py): the latent whose image best matches each target (image files, bytes,
        or an NCHW tensor in [-1, 1] at this model's size), with the perceptual loss `ganforge project` uses
        (the run's domain network, or `network`). `.latent` feeds `edit`, `.images` are the reconstructions."""
        from ganforge.latent import project as P
        from ganforge.latent.perceptual import ProjectionLoss, build_network, default_network_name
        from ganforge.latent.targets import load_targets

        x = targets if isinstance(targets, torch.Tensor) else load_targets(list(targets), self.config)[0]
        labels = make_labels(self.config, len(x), cls, _attr_text(attrs)) if cls is not None or attrs is not None else None
        loss = ProjectionLoss(build_network(network or default_network_name(self.config)))
        return P.project(self.module, x, space=space, steps=P.DEFAULT_STEPS if steps is None else steps,
                         restarts=P.DEFAULT_RESTARTS if restarts is None else restarts, seed=seed, loss=loss,
                         labels=labels, label_kind="attributes" if self.label_kind == "attributes" else "class")

    def edit(self, seeds: Sequence[int] | Latent, direction: str | int = 0,
             strengths: Sequence[float] = (-3, -1.5, 0, 1.5, 3),
             *, directions: Directions | str | Path | None = None, layers: str | Sequence[int] | None = None,
             cls: str | int | None = None, attrs: Attrs = None) -> Images:
        """Each seed (or each latent of a Latent, e.g. `project(...).latent`) moved along one direction (a name or index of `directions`: a Directions, a direction file, or
        by default this generator's sefa directions) at each strength, in standard deviations; a row per seed.
        Strength 0 is the seed's own image, bit for bit."""
        from ganforge.latent.directions import Directions
        from ganforge.latent.edit import edit

        if directions is None:
            directions = self.directions("sefa")
        elif not isinstance(directions, Directions):
            directions = Directions.load(directions, self.module)
        what = seeds if isinstance(seeds, Latent) else list(seeds)
        labels = None if isinstance(seeds, Latent) else make_labels(self.config, len(seeds), cls, _attr_text(attrs))
        x = edit(self.module, what, directions, direction, list(strengths), layers, labels)
        return Images(x, len(strengths))

    # --- output ----------------------------------------------------------------------------------------------
    @staticmethod
    def to_pil(images: Images | torch.Tensor, upscale: int = 1) -> list[Image.Image]:
        """Pillow images ("L" or "RGB") of a batch (Images or an NCHW tensor in [-1, 1])."""
        t = images.tensor if isinstance(images, Images) else images
        return [to_pil(a, upscale) for a in to_uint8(t)]

    def export(self, fmt: str, out: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
        """A standalone artefact (keras, savedmodel, tflite, onnx; see `ganforge export`) of this generator, with
        its parity check against PyTorch; returns its paths and metadata."""
        from ganforge.export import FORMATS, export_generator, require_extras

        if fmt not in FORMATS:
            raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
        require_extras(fmt)
        G = self.module if self.device.type == "cpu" else copy.deepcopy(self.module).cpu()
        return export_generator(G, self.config, self._checkpoint, fmt, out, run_dir=self.source, ema=self._ema,
                                overwrite=overwrite)

    @property
    def _ema(self) -> bool:
        return self.generator_name == "G_ema"


def load(source: str | Path, *, ema: bool = True, device: str = "cpu", checkpoint: str | Path | None = None) -> Generator:
    """A trained generator from a run folder (its newest intact checkpoint, or `checkpoint`), a bundle written by
    `ganforge publish`, or a checkpoint file (.safetensors with its .json, whose config it carries)."""
    p = Path(source)
    if p.is_file() or p.suffix in (".safetensors", ".json"):
        found = ckpt.read_checkpoint(p)
        cfg = found.meta.get("config")
        if not cfg:
            raise UserError(f"{p} carries no config (no readable .json beside it); load its run folder instead")
        p = found.path
    else:
        if not p.exists():
            raise UserError(f"{p} does not exist; pass a run folder, a bundle (ganforge publish) or a checkpoint file")
        found, cfg = find_checkpoint(p, checkpoint)
    G = generator_of(found, cfg, ema=ema, device=device)
    return Generator(G, cfg, p, found, ema)


def train(config: str | dict[str, Any] | None = None, overrides: Sequence[str] | None = None, *,
          run_dir: str | Path | None = None, quiet: bool = False, **kwargs: Any) -> RunDir:
    """Train a run (a preset name, a YAML path or a config dict, plus `key=value` overrides such as
    "train.max_seconds=60"), as `ganforge train` does; returns its RunDir (`ganforge.load(run.path)` samples it).
    Other keywords (resume=, init_from=, device=, data=) go to ganforge.training.launch.train."""
    from ganforge.training.launch import train as _train

    run, _summary = _train(config, list(overrides or []), run_dir=run_dir, quiet=quiet, **kwargs)
    return run
