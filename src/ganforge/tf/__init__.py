"""TensorFlow/Keras side of ganforge, in two rooms over a small shared floor:
- `export/`: a trained torch generator as Keras 3 mirrors (`export.mirrors`, from the weights `export.from_torch`
  reads off it), for `ganforge export`'s .keras / SavedModel / TFLite files;
- `train/`: the `backend: tensorflow` trainer, its trainable Keras G/D and losses;
- shared: `layout` (layer names, torch <-> Keras weight layouts) and `generators` (the one Keras graph of each
  family both rooms build: mlp, dcgan);
- here: the few names an exported artefact's reader needs.

This package file imports neither torch nor TensorFlow, so `from ganforge.tf import read_metadata` works in
a TensorFlow-only (or ONNX-only) environment. The artefacts themselves need no ganforge at all:
`keras.saving.load_model(path)`, `tf.saved_model.load(path)`, `tf.lite.Interpreter(path)` and
`onnxruntime.InferenceSession(path)` load them as they are.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

FORMATS = {
    "keras": "a .keras file (Keras 3)",
    "savedmodel": "a TensorFlow SavedModel folder",
    "tflite": "a .tflite file (TensorFlow Lite)",
    "onnx": "an .onnx file (ONNX Runtime)",
}
METADATA_NAME = "ganforge_export.json"  # inside a .keras zip and a SavedModel folder
METADATA_KEY = "ganforge_export"  # the ONNX metadata_props key
METADATA_FORMAT = "ganforge-export/1"


def sidecar_path(path: Path) -> Path:
    """Where a .tflite file's metadata lives (TFLite has no public place for it inside the file): PATH.json."""
    return Path(path).with_name(Path(path).name + ".json")


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata `ganforge export` stored with an artefact (.keras, SavedModel folder, .tflite, .onnx).

    Standalone equivalents: `json.loads(zipfile.ZipFile(p).read("ganforge_export.json"))` for .keras,
    `p/ganforge_export.json` for a SavedModel, `p.json` beside a .tflite, and
    `onnxruntime.InferenceSession(p).get_modelmeta().custom_metadata_map["ganforge_export"]` for ONNX."""
    p = Path(path)
    if p.is_dir():
        text = (p / METADATA_NAME).read_text()
    elif p.suffix == ".keras":
        with zipfile.ZipFile(p) as z:
            text = z.read(METADATA_NAME).decode()
    elif p.suffix == ".onnx":
        import onnx

        props = {e.key: e.value for e in onnx.load(str(p), load_external_data=False).metadata_props}
        text = props[METADATA_KEY]
    else:
        text = sidecar_path(p).read_text()
    return json.loads(text)
