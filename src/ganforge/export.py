"""`ganforge export`: a trained generator as a standalone TensorFlow/Keras, TFLite or ONNX artefact.

Formats (the artefacts load without ganforge or torch):
- `keras`: one `.keras` file, a Keras 3 mirror of the generator (`ganforge.tf.export.mirrors`) made only of
  built-in layers and `keras.ops`, so `keras.saving.load_model(path)` is all a reader needs;
- `savedmodel`: a TensorFlow SavedModel folder (Keras `ExportArchive`) with named signatures;
- `tflite`: a `.tflite` flat buffer converted from that SavedModel, the same signatures;
- `onnx`: `torch.onnx.export` of the torch generator (the dynamo exporter; the TorchScript one is
  deprecated), dynamic batch, opset 18.

Every artefact maps `z` (N, z_dim) float32 [+ `labels` (N, num_labels): one-hot rows for classes,
multi-hot rows for attributes] [+ `psi` (N, 1), StyleGAN2's truncation, 1 = none] to `image`: float32
in [-1, 1], clamped as `generate.sample` does. TensorFlow formats are NHWC (TensorFlow's layout), ONNX
keeps torch's NCHW. StyleGAN2 also exposes `mapping` ([z, (labels,) psi] -> ws (N, num_ws, w_dim)) and
`synthesis` (ws -> image) for style mixing and w-space walks: nested models of the .keras file
(`get_layer("mapping")`), signatures of the SavedModel/TFLite file, and two sibling .onnx files. Noise
is the fixed per-layer noise of eval mode (noise_mode="const"), so a latent always gives the same image.

Metadata (model, z_dim, labels and their names, layout, value range, source run, checkpoint step, and
the latents of seeds 0-15) travels inside the artefact where the format has room (the .keras zip, the
SavedModel folder, ONNX metadata_props) and beside it for TFLite (PATH.json). torch's seeded normal
generator cannot be reproduced in NumPy or TensorFlow, so the exact z that `ganforge sample --seed S --n 1`
uses is shipped for S = 0..15 rather than re-derived. Each export runs the written artefact on those
latents and records its max abs difference from PyTorch in the metadata (a warning above TOLERANCE, 2e-4).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ganforge import __version__
from ganforge.errors import UserError, warn
from ganforge.fileio import atomic_write_bytes, replace_dir
from ganforge.generate import find_checkpoint, generator_of
from ganforge.models.sampling import seed_latents
from ganforge.runs import checkpoint as ckpt
from ganforge.tf import FORMATS, METADATA_FORMAT, METADATA_KEY, METADATA_NAME, sidecar_path

# what each format needs, as (import name, pip extra)
EXTRAS = {
    "keras": [("tensorflow", "tf"), ("keras", "tf")],
    "savedmodel": [("tensorflow", "tf"), ("keras", "tf")],
    "tflite": [("tensorflow", "tf"), ("keras", "tf")],
    "onnx": [("onnx", "onnx"), ("onnxscript", "onnx"), ("onnxruntime", "onnx")],
}
NUM_SEEDS = 16  # seeds 0..15: their latents ship in the metadata and are the export's parity check
TOLERANCE = 2e-4  # float32 round-off through ~20 layers of two runtimes; thread counts move it (see README)
OPSET = 18
STYLE_PARTS = ("mapping", "synthesis")


# --- inputs -----------------------------------------------------------------------------------------------------
def check_labels(num_labels: int, kind: str | None, n: int = NUM_SEEDS) -> np.ndarray:
    """Deterministic label rows for parity checks: class i % L one-hot, or for attributes the bits of i (so every
    attribute is on for some rows and off for others)."""
    i = np.arange(n)[:, None]
    if kind == "attributes":
        return ((i >> np.arange(num_labels)[None, :]) & 1).astype(np.float32)
    return (i % num_labels == np.arange(num_labels)[None, :]).astype(np.float32)


def is_style(G: nn.Module) -> bool:
    return hasattr(G, "mapping") and hasattr(G, "synthesis")


def input_names(G: nn.Module) -> list[str]:
    return ["z"] + (["labels"] if G.num_labels else []) + (["psi"] if is_style(G) else [])


def parity_inputs(G: nn.Module, meta: dict[str, Any], psi: float = 0.7) -> dict[str, np.ndarray]:
    """z of seeds 0..15, labels from `check_labels`, and psi = 0.7 (so truncation is exercised)."""
    feeds = {"z": np.asarray(meta["seed_latents"]["z"], np.float32)}
    if G.num_labels:
        feeds["labels"] = check_labels(G.num_labels, (meta["labels"] or {}).get("kind"))
    if is_style(G):
        feeds["psi"] = np.full((NUM_SEEDS, 1), psi, np.float32)
    return feeds


@torch.no_grad()
def torch_images(G: nn.Module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """The reference: the torch generator on the same inputs, clamped like `generate.sample` (NCHW)."""
    z = torch.from_numpy(feeds["z"])
    labels = torch.from_numpy(feeds["labels"]) if "labels" in feeds else None
    kwargs = {"truncation_psi": float(feeds["psi"][0, 0])} if "psi" in feeds else {}
    return G(z, labels, **kwargs).float().clamp(-1.0, 1.0).numpy()


# --- ONNX --------------------------------------------------------------------------------------------------------
class OnnxPart(nn.Module):
    """What one ONNX graph computes from positional float inputs (see `input_names`): the clamped image, or for
    StyleGAN2 the mapping (truncation from a tensor psi: torch.lerp(w_avg, ws, psi), as the mapping does with a
    number) or the synthesis with its constant noise on the per-activation path (fused_modconv=False, which has
    no batch size in the graph)."""

    def __init__(self, G: nn.Module, part: str = "generator") -> None:
        super().__init__()
        self.G, self.part = G, part
        self.conditional = bool(G.num_labels)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.part == "synthesis":
            return self.G.synthesis(inputs[0], noise_mode="const", fused_modconv=False).clamp(-1.0, 1.0)
        z, labels = inputs[0], (inputs[1] if self.conditional else None)
        if self.part == "mapping":
            ws = self.G.mapping(z, labels)
            return torch.lerp(self.G.w_avg.to(ws.dtype), ws, inputs[-1].reshape(-1, 1, 1))
        return self.G(z, labels).clamp(-1.0, 1.0)


def frozen_stage(G: nn.Module) -> nn.Module:
    """A copy of a ProGAN generator whose growth stage is plain Python numbers instead of buffers: torch.export
    cannot branch on a tensor's value, and the exported network is the final stage anyway."""
    if not hasattr(G, "stage_level"):
        return G
    G = copy.deepcopy(G)
    level, alpha = G.stage
    del G.stage_level, G.stage_alpha
    G.stage_level, G.stage_alpha = float(level), float(alpha)
    return G


def onnx_part(G: nn.Module, part: str) -> Any:
    """One part as an ONNX ModelProto: the dynamo exporter (torch.export + onnxscript), dynamic batch."""
    names = ["ws"] if part == "synthesis" else input_names(G)
    example = {"z": torch.zeros(2, G.z_dim), "labels": torch.zeros(2, G.num_labels or 1), "psi": torch.ones(2, 1),
               "ws": torch.zeros(2, G.num_ws, G.w_dim) if is_style(G) else None}
    args = tuple(example[n] for n in names)
    batch = torch.export.Dim("batch", min=1)
    with quiet_libraries():
        program = torch.onnx.export(OnnxPart(frozen_stage(G), part).eval(), args, dynamo=True, opset_version=OPSET,
                                    input_names=names, output_names=["ws" if part == "mapping" else "image"],
                                    dynamic_shapes=(tuple({0: batch} for _ in args),), verbose=False)
    return program.model_proto


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """The exporters' and savers' own chatter (torchvision not installed, deprecations inside torch.export, Keras
    and TFLite) is nothing a user can act on; errors still raise."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def onnx_models(G: nn.Module) -> dict[str, Any]:
    """part -> ModelProto. StyleGAN2's generator graph is its mapping and synthesis graphs joined at ws
    (onnx.compose), which exports each network once."""
    if not is_style(G):
        return {"generator": onnx_part(G, "generator")}
    from onnx import compose

    parts = {p: onnx_part(G, p) for p in STYLE_PARTS}
    joined = compose.merge_models(
        *(compose.add_prefix(parts[p], f"{p}/", rename_inputs=False, rename_outputs=False) for p in STYLE_PARTS),
        io_map=[("ws", "ws")],
    )
    return {"generator": joined, **parts}


def with_metadata(model: Any, meta: dict[str, Any], part: str) -> bytes:
    """The serialized model with the export metadata (and which part it is) in metadata_props, checked."""
    import onnx

    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps({**meta, "part": part})
    model.producer_name, model.producer_version = "ganforge", __version__
    onnx.checker.check_model(model)
    return model.SerializeToString()


# --- TensorFlow ---------------------------------------------------------------------------------------------------
def keras_mirror(G: nn.Module, meta: dict[str, Any]) -> Any:
    from ganforge.tf.export import mirrors
    from ganforge.tf.export.from_torch import numpy_weights

    if meta["model"] not in mirrors.BUILDERS:  # a family registered without a Keras mirror (ONNX still works)
        raise UserError(f"model {meta['model']!r} has no TensorFlow mirror yet; export it with --format onnx, or "
                        f"use one of {', '.join(mirrors.BUILDERS)}")

    info = {"z_dim": G.z_dim, "resolution": G.resolution, "channels": G.channels, "num_labels": G.num_labels}
    return mirrors.build(meta["model"], numpy_weights(G), info)


def tf_signatures(model: Any, G: nn.Module) -> dict[str, Any]:
    """signature name -> tf.function with named float32 inputs (dynamic batch) and a named output; the same
    functions become the SavedModel's and the TFLite file's signatures."""
    import tensorflow as tf

    parts = {"serving_default": (model, input_names(G), "image")}
    if is_style(G):
        parts["mapping"] = (model.get_layer("mapping"), input_names(G), "ws")
        parts["synthesis"] = (model.get_layer("synthesis"), ["ws"], "image")
    shapes = {"z": (None, G.z_dim), "labels": (None, G.num_labels), "psi": (None, 1),
              "ws": (None, getattr(G, "num_ws", 0), getattr(G, "w_dim", 0))}
    return {sig: tf.function(_endpoint(sub, out), input_signature=[tf.TensorSpec(shapes[n], tf.float32, name=n)
                                                                        for n in names])
            for sig, (sub, names, out) in parts.items()}


def _endpoint(sub: Any, out_name: str) -> Any:
    """A signature function with a named output (it would otherwise be `output_0`)."""

    def fn(*args: Any) -> dict[str, Any]:
        return {out_name: sub(list(args) if len(args) > 1 else args[0])}

    return fn


def write_savedmodel(model: Any, G: nn.Module, directory: Path) -> None:
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    for sig, fn in tf_signatures(model, G).items():
        archive.add_endpoint(sig, fn)
    archive.write_out(str(directory), verbose=False)


def tflite_bytes(saved_model: Path, signatures: list[str]) -> bytes:
    """Converted from the SavedModel, as Keras' own LiteRT export does (converting the concrete functions directly
    loses the Keras variables' values: the outputs are NaN)."""
    import tensorflow as tf

    with quiet_libraries():
        return tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=signatures).convert()


# --- running an artefact (the export's own parity check) --------------------------------------------------------
def run_artefact(fmt: str, path: Path, feeds: dict[str, np.ndarray], signature: str = "serving_default") -> np.ndarray:
    """What a user would do with each format, on named float32 inputs; returns the first output."""
    if fmt == "keras":
        import keras

        with quiet_libraries():
            model = keras.saving.load_model(path)
        if signature != "serving_default":
            model = model.get_layer(signature)
        names = [t.name for t in model.inputs]
        return model([feeds[n] for n in names] if len(names) > 1 else feeds[names[0]]).numpy()  # a tf.Tensor
    if fmt == "savedmodel":
        import tensorflow as tf

        out = tf.saved_model.load(str(path)).signatures[signature](**{k: tf.constant(v) for k, v in feeds.items()})
        return next(iter(out.values())).numpy()
    if fmt == "tflite":
        import tensorflow as tf

        with quiet_libraries():  # tf.lite.Interpreter warns that it moves to ai_edge_litert (same API)
            runner = tf.lite.Interpreter(model_path=str(path)).get_signature_runner(signature)
        return next(iter(runner(**feeds).values()))
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


# --- the API ------------------------------------------------------------------------------------------------------
def require_extras(fmt: str) -> None:
    """A missing optional dependency is the user's to install: one line naming the extra."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ info/warning lines
    for module, extra in EXTRAS[fmt]:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(f"--format {fmt} needs {module}, which is not installed; "
                            f"install it with pip install 'ganforge[{extra}]'") from None
    if fmt != "onnx":
        import keras

        if keras.backend.backend() != "tensorflow":
            raise UserError(f"--format {fmt} needs Keras on the TensorFlow backend, but KERAS_BACKEND is "
                            f"{keras.backend.backend()!r}; run with KERAS_BACKEND=tensorflow")


def artefact_paths(fmt: str, out: Path, style: bool) -> dict[str, Path]:
    """part -> path of every file or folder an export writes (ONNX StyleGAN2: OUT plus OUT's .mapping/.synthesis
    siblings; TFLite: OUT plus its metadata OUT.json)."""
    paths = {"generator": out}
    if fmt == "onnx" and style:
        paths.update({p: out.with_name(f"{out.stem}.{p}{out.suffix or '.onnx'}") for p in STYLE_PARTS})
    if fmt == "tflite":
        paths["metadata"] = sidecar_path(out)
    return paths


def check_targets(fmt: str, paths: dict[str, Path], overwrite: bool) -> None:
    out = paths["generator"]
    if fmt == "keras" and out.suffix != ".keras":
        raise UserError(f"--out {out}: a Keras 3 model file must end in .keras (keras.saving.load_model needs it)")
    for p in paths.values():
        if not p.exists():
            continue
        if not overwrite:
            raise UserError(f"{p} already exists; choose another --out or pass --overwrite")
        if fmt == "savedmodel" and p == out:
            if not p.is_dir() or not (p / "saved_model.pb").is_file():
                raise UserError(f"{p} exists and is not a SavedModel folder; --overwrite only replaces a SavedModel")
        elif p.is_dir():
            raise UserError(f"{p} is a folder; give a file path for --format {fmt}")


def metadata(G: nn.Module, cfg: dict[str, Any], found: ckpt.Checkpoint, fmt: str, run_dir: Path,
             ema: bool, source_run: str | None = None) -> dict[str, Any]:
    """What a reader of the artefact needs to know, JSON-ready (`source_run`: how to name the run, default its
    absolute path)."""
    m, d = cfg["model"], cfg["data"]
    layout = "NCHW" if fmt == "onnx" else "NHWC"
    shape = [None, d["channels"], d["resolution"], d["resolution"]]
    if layout == "NHWC":
        shape = [None, d["resolution"], d["resolution"], d["channels"]]
    labels = None
    if G.num_labels:
        kind = "attributes" if m.get("label_kind") == "attributes" else "classes"
        labels = {"kind": kind, "names": [str(x) for x in m.get("label_names") or []], "size": int(G.num_labels),
                  "encoding": "multi-hot float rows (1 = attribute on)" if kind == "attributes"
                  else "one-hot float rows (class i: 1 at column i)"}
    inputs = {"z": [None, G.z_dim]}
    if labels:
        inputs["labels"] = [None, int(G.num_labels)]
    if is_style(G):
        inputs["psi"] = [None, 1]
    z = seed_latents(G, list(range(NUM_SEEDS))).numpy()
    meta: dict[str, Any] = {
        "format": METADATA_FORMAT, "artefact": fmt, "model": m["name"], "z_dim": int(G.z_dim),
        "resolution": int(d["resolution"]), "channels": int(d["channels"]), "labels": labels, "inputs": inputs,
        "output": {"name": "image", "shape": shape, "layout": layout, "value_range": [-1.0, 1.0], "dtype": "float32",
                   "to_uint8": "round((image + 1) * 127.5)"},
        "source_run": source_run or str(Path(run_dir).resolve()), "checkpoint": found.path.name, "step": found.meta.get("step"),
        "generator": found.generator_prefix(ema), "ganforge_version": __version__,
        "seed_latents": {"seeds": list(range(NUM_SEEDS)), "z": z.tolist(),
                         "note": "z[s] is the latent `ganforge sample --seed s --n 1` uses (torch.randn with "
                                 "ganforge's seeded generator, which NumPy cannot reproduce, so it is shipped)"},
    }
    if is_style(G):
        where = {"keras": "model.get_layer(name)", "savedmodel": "signatures[name]", "tflite": "signature runner name",
                 "onnx": "sibling files OUT.mapping.onnx / OUT.synthesis.onnx"}[fmt]
        meta["style"] = {"num_ws": int(G.num_ws), "w_dim": int(G.w_dim), "ws_resolutions": list(G.ws_resolutions),
                         "truncation": "ws = w_avg + psi * (w - w_avg) on every ws", "noise": "const",
                         "parts": {"mapping": {"inputs": list(inputs), "output": ["ws", [None, G.num_ws, G.w_dim]]},
                                   "synthesis": {"inputs": ["ws"], "output": ["image", shape]}},
                         "where": where}
    return meta


def load_for_export(run_dir: str | Path, ema: bool, checkpoint: str | Path | None) -> tuple[Any, dict, Any]:
    """(G, cfg, checkpoint) with the checkpoint read (and hashed) once, so the metadata names the step that was
    exported; `run_dir` may also be a published bundle."""
    found, cfg = find_checkpoint(run_dir, checkpoint)
    return generator_of(found, cfg, ema=ema), cfg, found


def export(
    run_dir: str | Path, fmt: str, out: str | Path, *, ema: bool = True, checkpoint: str | Path | None = None,
    overwrite: bool = False, directions: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Export a run's generator (G_ema unless `ema=False`) to `out` in format `fmt` (see FORMATS), with the
    direction files `directions` (from `ganforge directions`, for this generator) in its metadata.
    Returns {"paths": {part: path}, "metadata": {...}} with metadata["parity"] the measured max abs error."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    require_extras(fmt)
    G, cfg, found = load_for_export(run_dir, ema, checkpoint)
    return export_generator(G, cfg, found, fmt, out, run_dir=run_dir, ema=ema, overwrite=overwrite,
                            directions=directions)


def export_generator(
    G: nn.Module, cfg: dict[str, Any], found: ckpt.Checkpoint, fmt: str, out: str | Path, *, run_dir: str | Path,
    ema: bool = True, overwrite: bool = False, directions: list[str | Path] | None = None, source_run: str | None = None,
) -> dict[str, Any]:
    """`export` of a generator already loaded from checkpoint `found` (of `run_dir`), e.g. by `ganforge publish`
    (which names the run by its folder name, not a local path)."""
    out = Path(out)
    if hasattr(G, "stage") and G.stage != (G.levels - 1, 1.0):
        level, alpha = G.stage
        raise UserError(f"this progan run is still growing (at {G.stage_resolution}x{G.stage_resolution}, alpha "
                        f"{alpha:g}); export needs the final stage: train it until it reaches {G.resolution}x"
                        f"{G.resolution} with alpha 1")
    paths = artefact_paths(fmt, out, is_style(G))
    check_targets(fmt, paths, overwrite)
    meta = metadata(G, cfg, found, fmt, Path(run_dir), ema, source_run)
    if directions:
        from ganforge.latent.directions import Directions

        meta["directions"] = [{"file": Path(p).name, **Directions.load(p, G).to_metadata()} for p in directions]
    feeds = parity_inputs(G, meta)
    ref = torch_images(G, feeds)
    with tempfile.TemporaryDirectory(prefix=".ganforge-export-", dir=out.parent if out.parent.exists() else None) as t:
        tmp = Path(t)
        staged = _stage_onnx(G, meta, paths, tmp) if fmt == "onnx" else _stage_tf(G, meta, fmt, tmp)
        got = run_artefact(fmt, staged["generator"], feeds)
        if fmt != "onnx":
            got = got.transpose(0, 3, 1, 2)
        err = float(np.abs(got - ref).max())
        meta["parity"] = {"max_abs_err": err, "tolerance": TOLERANCE,
                          "inputs": "seed_latents, check_labels rows, psi 0.7 (stylegan2)"}
        if not err <= TOLERANCE:
            warn(f"the exported generator differs from PyTorch by up to {err:.3g} on seeds 0-{NUM_SEEDS - 1} "
                 f"(tolerance {TOLERANCE:g}); please report this")
        _finish(fmt, staged, paths, meta)
    return {"paths": {k: str(v) for k, v in paths.items()}, "metadata": meta}


def _stage_onnx(G: nn.Module, meta: dict[str, Any], paths: dict[str, Path], tmp: Path) -> dict[str, Path]:
    staged = {}
    for part, model in onnx_models(G).items():
        staged[part] = tmp / paths[part].name
        staged[part].write_bytes(with_metadata(model, meta, part))
    return staged


def _stage_tf(G: nn.Module, meta: dict[str, Any], fmt: str, tmp: Path) -> dict[str, Path]:
    model = keras_mirror(G, meta)
    if fmt == "keras":
        path = tmp / "generator.keras"
        with quiet_libraries():  # Keras' saver trips NumPy 2's __array__(copy=) deprecation
            model.save(path)
        return {"generator": path}
    saved = tmp / "savedmodel"
    write_savedmodel(model, G, saved)
    if fmt == "savedmodel":
        return {"generator": saved}
    path = tmp / "generator.tflite"
    path.write_bytes(tflite_bytes(saved, list(tf_signatures(model, G))))
    return {"generator": path}


def _finish(fmt: str, staged: dict[str, Path], paths: dict[str, Path], meta: dict[str, Any]) -> None:
    """Add the final metadata (with the parity result) and move every staged artefact into place atomically."""
    text = json.dumps(meta, indent=1)
    if fmt == "onnx":
        import onnx

        for part, src in staged.items():
            atomic_write_bytes(paths[part], with_metadata(onnx.load_from_string(src.read_bytes()), meta, part))
    elif fmt == "keras":
        buf = io.BytesIO(staged["generator"].read_bytes())
        with zipfile.ZipFile(buf, "a") as z:
            z.writestr(METADATA_NAME, text)
        atomic_write_bytes(paths["generator"], buf.getvalue())
    elif fmt == "tflite":
        atomic_write_bytes(paths["generator"], staged["generator"].read_bytes())
        atomic_write_bytes(paths["metadata"], text.encode())
    else:
        src = staged["generator"]
        (src / METADATA_NAME).write_text(text)
        _replace_dir(src, paths["generator"])


def _replace_dir(src: Path, dst: Path) -> None:
    """Move a finished folder to dst; an existing dst (already checked to be a SavedModel) is swapped out first,
    so dst is always either the old or the new complete folder."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=f".{dst.name}.new-", dir=dst.parent))
    new.rmdir()
    shutil.move(str(src), str(new))
    replace_dir(new, dst)
