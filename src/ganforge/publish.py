"""`ganforge publish`: a run's generator as a self-contained bundle in the Hugging Face model-repository layout.

The bundle (runs/bundle.py) holds the weights, the config, the ONNX export, a sample grid and a model card
(README.md with the YAML front matter the Hub reads: library_name, license, tags, datasets and the evaluation as a
`model-index`). `ganforge.load(BUNDLE)` and `ganforge sample BUNDLE` use it without the run folder. Uploading is
huggingface_hub's job (`huggingface-cli upload USER/NAME BUNDLE .`); ganforge writes no uploader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from ganforge import __version__
from ganforge.config import dump
from ganforge.errors import UserError
from ganforge.generate import generator_of, make_labels, sample
from ganforge.images import make_grid, png_bytes
from ganforge.metrics.protocol import protocol_of
from ganforge.models import standing
from ganforge.runs import bundle
from ganforge.runs.checkpoint import Checkpoint
from ganforge.runs.rundir import RunDir

GRID = "samples.png"
ONNX = "generator.onnx"
GRID_N, GRID_SEED = 64, 0
METRIC_NAMES = {"fid": "FID", "kid": "KID", "is": "Inception Score", "precision": "Precision", "recall": "Recall"}


def publish(
    run_dir: str | Path, out: str | Path, *, g_ema_only: bool = False, license: str = "mit", onnx: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the bundle of `run_dir`'s newest intact checkpoint to `out`. Returns {"path", "files", "notes"}."""
    run = RunDir.open(Path(run_dir))
    found = run.latest()
    if found is None:
        raise UserError(f"{run.path} has no intact checkpoint yet; train first, then publish")
    out = Path(out)
    if out.resolve() == run.path.resolve() or run.path.resolve() in out.resolve().parents:
        raise UserError(f"--out {out} is inside the run folder; give a folder of its own for the bundle")
    cfg = found.meta.get("config") or run.read_config()
    prefix = found.generator_prefix(True)
    keep = ("G_ema.", "G.") if not g_ema_only else (prefix + ".",)
    tensors = {k: v for k, v in found.tensors.items() if k.startswith(keep)}
    G = generator_of(found, cfg)
    notes: list[str] = []
    if g_ema_only and prefix == "G":
        notes.append("the run kept no G_ema (train.ema=false): the bundle holds the raw generator G")
    onnx_note = _onnx_available() if onnx else "left out (--no-onnx)"
    if onnx_note:
        notes.append(f"ONNX export {onnx_note}")
    info = {"format": bundle.FORMAT, "library": "ganforge", "ganforge_version": __version__, "step": found.step,
            "images_seen": found.meta.get("images_seen"), "train_seconds": found.meta.get("train_seconds"),
            "generator": prefix, "tensors": sorted({k.split(".")[0] for k in tensors}), "config": cfg}
    if found.meta.get(standing.META_KEY):  # G_ema's stored standing statistics travel as they are (never redone)
        info[standing.META_KEY] = found.meta[standing.META_KEY]
    grid = png_bytes(make_grid(_grid_images(G, cfg), _grid_columns(cfg)))
    evals = _evaluations(run, found.step)
    files: dict[str, Any] = {
        bundle.WEIGHTS: lambda p: bundle.save_weights(p, tensors, found.step),
        bundle.CONFIG: lambda p: p.write_text(json.dumps(info, indent=1) + "\n"),
        GRID: lambda p: p.write_bytes(grid),
    }
    if not onnx_note:
        files[ONNX] = lambda p: _write_onnx(G, cfg, found, p, run.path)
    card = model_card(run, found, info, evals, has_onnx=not onnx_note, license=license, notes=notes)
    files["README.md"] = lambda p: p.write_text(card, encoding="utf-8")
    path = bundle.write_bundle(out, files, overwrite=overwrite)
    return {"path": str(path), "files": sorted(bundle.read_manifest(path)["files"]), "notes": notes}


def _onnx_available() -> str | None:
    """None when the onnx extra is installed, else why the export is left out."""
    from ganforge.export import require_extras

    try:
        require_extras("onnx")
    except UserError:
        return "left out: install the onnx extra (pip install 'ganforge[onnx]') and publish again to include it"
    return None


def _write_onnx(G: torch.nn.Module, cfg: dict[str, Any], found: Checkpoint, path: Path, run_dir: Path) -> None:
    from ganforge.export import export_generator

    export_generator(G, cfg, found, "onnx", path, run_dir=run_dir, source_run=run_dir.name)  # no local paths


def _grid_images(G: torch.nn.Module, cfg: dict[str, Any]) -> torch.Tensor:
    """The card's grid: `ganforge sample BUNDLE --n 64 --seed 0` (every class in turn for a class-conditional run)."""
    return sample(G, GRID_N, seed=GRID_SEED, labels=make_labels(cfg, GRID_N))


def _grid_columns(cfg: dict[str, Any]) -> int | None:
    m = cfg["model"]
    if m.get("conditional") and m.get("label_kind") != "attributes" and len(m["label_names"]) <= 16:
        return len(m["label_names"])
    return None


def _evaluations(run: RunDir, step: int) -> list[dict[str, Any]]:
    """The newest evaluation of each protocol (all of it: network, counts, reference, resize, quantisation,
    truncation, EMA, standing statistics) made at or before `step`; records without a protocol by network, counts
    and reference."""
    latest: dict[Any, dict[str, Any]] = {}
    for r in run.read_eval():
        if r.get("step") is not None and r["step"] > step:
            continue
        p = protocol_of(r)
        key = (p.comparable_key(), p.n, p.n_ref) if p else (r.get("network"), r.get("n"), r.get("ref"), r.get("n_ref"))
        latest[key] = r
    return list(latest.values())


def _protocol(r: dict[str, Any]) -> str:
    p = protocol_of(r)
    if p is not None:
        return f"{p.describe()}, step {r.get('step')}"
    return (f"{r.get('n')} generated vs {r.get('n_ref')} real images of {r.get('ref')}, {r.get('network')} "
            f"features, step {r.get('step')}")


def _hardware(run: RunDir, cfg: dict[str, Any]) -> str:
    starts = [e for e in run.read_events() if e.get("event") == "start"]
    world = starts[-1].get("world", 1) if starts else 1
    return f"device setting `{cfg.get('device')}`, {world} process{'es' if world != 1 else ''}, backend {cfg.get('backend', 'torch')}"


def front_matter(cfg: dict[str, Any], info: dict[str, Any], evals: list[dict[str, Any]], license: str) -> dict:
    """The Hub's model-card metadata: library, license, tags, datasets and the evaluation as a model-index."""
    m, d = cfg["model"], cfg["data"]
    conditional = bool(m.get("conditional"))
    task = "conditional-image-generation" if conditional else "unconditional-image-generation"
    source = str(d["source"]).split(":")[0]
    named = "/" not in source and not source.endswith(".zip")
    meta: dict[str, Any] = {
        "library_name": "ganforge",
        "license": license,
        "tags": ["ganforge", "gan", "image-generation", task, str(m["name"]), "pytorch", "onnx"],
        "pipeline_tag": "unconditional-image-generation",
    }
    if named:
        meta["datasets"] = [source]
    metrics = []
    for r in evals:
        for key, label in METRIC_NAMES.items():
            if isinstance(r.get(key), (int, float)):
                metrics.append({"type": key, "value": round(float(r[key]), 4), "name": f"{label} ({r.get('network')})",
                                "args": {"protocol": _protocol(r), "n": r.get("n"), "n_ref": r.get("n_ref"),
                                         "network": r.get("network"), "step": r.get("step")}})
    if metrics:
        meta["model-index"] = [{"name": str(cfg.get("name", "ganforge-model")), "results": [{
            "task": {"type": task, "name": task.replace("-", " ").capitalize()},
            "dataset": {"name": source, "type": source if named else "imagefolder"},
            "metrics": metrics}]}]
    return meta


def model_card(run: RunDir, found: Checkpoint, info: dict[str, Any], evals: list[dict[str, Any]], *, has_onnx: bool,
               license: str, notes: list[str]) -> str:
    """README.md: front matter, then what the model is, how it was trained, its metrics, its samples, its limits and
    how to load it in ganforge, TensorFlow and ONNX Runtime."""
    cfg = info["config"]
    m, d, t = cfg["model"], cfg["data"], cfg["train"]
    name = str(cfg.get("name", run.path.name))
    seconds = info.get("train_seconds")
    wall = "not recorded"
    if isinstance(seconds, (int, float)):
        wall = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    labels = ""
    if m.get("conditional"):
        kind = "attributes" if m.get("label_kind") == "attributes" else "classes"
        labels = f" conditioned on {kind} ({', '.join(map(str, m['label_names']))})"
    lines = ["---", yaml.safe_dump(front_matter(cfg, info, evals, license), sort_keys=False).rstrip(), "---", "",
             f"# {name}", "",
             f"A **{m['name']}** generative adversarial network{labels}, trained with "
             f"ganforge {info['ganforge_version']} on `{d['source']}` at "
             f"{d['resolution']}x{d['resolution']} px, {d['channels']} channel{'s' if d['channels'] != 1 else ''}. "
             f"This folder is a ganforge bundle: `{bundle.WEIGHTS}` holds "
             f"{' and '.join(info['tensors'])} (the generator used for sampling is {info['generator']}), "
             f"`{bundle.CONFIG}` the full training config, `{bundle.MANIFEST}` the SHA-256 of every file "
             "(checked on load).", "",
             "![samples](samples.png)", "",
             f"*`{GRID}`: `ganforge sample . --n {GRID_N} --seed {GRID_SEED}`.*", "",
             "## Training", "",
             "| | |", "|---|---|",
             f"| model | {m['name']} (z_dim {m['z_dim']}, nf {m['nf']}) |",
             f"| loss | {cfg['loss']['name']} |",
             f"| data | `{d['source']}` ({d['resolution']} px, {d['channels']} ch) |",
             f"| steps | {found.step} (batch {t['batch_size']}) |",
             f"| images seen | {info.get('images_seen') or 'not recorded'} |",
             f"| wall-clock (training only) | {wall} |",
             f"| hardware | {_hardware(run, cfg)} |",
             f"| EMA of G | {'yes' if t['ema'] else 'no'} |", "",
             "<details><summary>full config</summary>", "", "```yaml", dump(cfg).rstrip(), "```", "", "</details>", "",
             "## Evaluation", ""]
    if evals:
        lines += ["| metric | value | protocol |", "|---|---|---|"]
        for r in evals:
            lines += [f"| {label} | {float(r[k]):.4g} | {_protocol(r)} |" for k, label in METRIC_NAMES.items()
                      if isinstance(r.get(k), (int, float))]
    else:
        lines += ["Not evaluated: run `ganforge eval RUN_DIR` before publishing to add FID/KID/IS here."]
    lines += ["", "## Limitations", "",
              f"- A GAN reproduces its training data's distribution, biases included; it was trained on "
              f"`{d['source']}` only and says nothing about other images.",
              "- FID/KID/IS compare feature statistics; they do not show memorization (check with `ganforge nearest`) "
              "and their values depend on the feature network and sample counts listed above.",
              "- The license of the training data applies to what the model generates.", ""]
    lines += [f"- Note: {n}." for n in notes] + ([""] if notes else [])
    lines += ["## How to use", "", "ganforge (PyTorch):", "", "```python", "import ganforge", "",
              'G = ganforge.load(".")          # this folder, e.g. from huggingface_hub.snapshot_download(...)',
              "images = G.sample(16, seed=0)   # the images `ganforge sample . --n 16 --seed 0` writes",
              "G.to_pil(images)[0].save('0.png')", "```", "",
              "TensorFlow / Keras (a Keras 3 mirror of the generator; no torch needed to run it):", "",
              "```bash", "ganforge export . --format keras --out generator.keras", "```", "",
              "```python", "import keras, numpy as np",
              'model = keras.saving.load_model("generator.keras")',
              f"image = model(np.random.randn(1, {m['z_dim']}).astype('float32'))  # NHWC in [-1, 1]", "```", ""]
    if has_onnx:
        feeds, extra = "{'z': z}", []
        if m.get("conditional"):
            feeds = "{'z': z, 'labels': labels}"
            extra = [f"labels = np.eye({len(m['label_names'])}, dtype=np.float32)[:1]  # class 0 (one-hot)"]
        if m["name"] == "stylegan2":
            feeds = feeds[:-1] + ", 'psi': np.ones((1, 1), np.float32)}"
        lines += ["ONNX Runtime (no torch, no ganforge):", "", "```python", "import json, numpy as np, onnxruntime as ort",
                  f'sess = ort.InferenceSession("{ONNX}")',
                  "meta = json.loads(sess.get_modelmeta().custom_metadata_map['ganforge_export'])",
                  "z = np.asarray(meta['seed_latents']['z'][:1], np.float32)  # the latent of seed 0", *extra,
                  f"image = sess.run(None, {feeds})[0]  # NCHW in [-1, 1]", "```", ""]
    lines += ["## Publishing", "", "Push this folder to the Hugging Face Hub with huggingface_hub's CLI:", "",
              "```bash", "huggingface-cli upload USER/MODEL_NAME . .", "```", ""]
    return "\n".join(lines)
