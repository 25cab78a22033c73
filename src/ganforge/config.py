"""Configuration: YAML files plus dotted `key=value` overrides, validated against one schema.

Every key has a default, a type and (where it matters) the accepted values, so a typo or a bad value
is caught before any work starts, with a one-line error that names the key and what it accepts.
The fully resolved config is written to each run directory, which makes runs self-describing.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

import yaml

from ganforge.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class Key:
    """One config key: its default, type, accepted values and a short help text."""

    default: Any
    type: type | tuple[type, ...]
    help: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    nullable: bool = False


SCHEMA: dict[str, Any] = {
    "name": Key("run", str, "short name of the run; the default run dir is runs/<name>"),
    "seed": Key(0, int, "seed for weights, data order, noise and augmentation", min=0, max=2**63 - 1),
    "device": Key("auto", str, "where to train", choices=("auto", "cpu", "cuda")),
    "backend": Key("torch", str, "framework that trains: torch, or tensorflow (Keras 3; the mlp and dcgan "
                   "families, see ganforge.tf.train)", choices=("torch", "tensorflow")),
    "data": {
        "source": Key("fashion-mnist", str, "dataset spec: fashion-mnist, mnist[:test], a folder or .zip"),
        "data_dir": Key(None, str, "folder holding the dataset files", nullable=True),
        "resolution": Key(32, int, "image size the models see", choices=(28, 32, 64, 128)),
        "channels": Key(1, int, "1 = grayscale, 3 = RGB", choices=(1, 3)),
        "hflip": Key(False, bool, "random horizontal flip of real images"),
        "strict": Key(False, bool, "fail on the first unreadable image instead of skipping it"),
        "limit": Key(
            None,
            int,
            "train on a fixed random subset of this many images (limited-data experiments; "
            "the subset depends only on the dataset, not on the run's seed)",
            min=1,
            nullable=True,
        ),
    },
    "model": {
        "name": Key("dcgan", str, "generator/discriminator family (see `ganforge models`)"),
        "z_dim": Key(100, int, "latent size", min=1, max=4096),
        "nf": Key(64, int, "width multiplier (channels of the widest-resolution layer)", min=1, max=4096),
        "d_dropout": Key(None, float, "dropout in D (null = the model's default)", min=0.0, max=0.95, nullable=True),
        "d_nf": Key(None, int, "width of D when it differs from G's (null = nf)", min=1, max=4096, nullable=True),
        "conditional": Key(False, bool, "condition G and D on class labels or attributes of the data"),
        "num_labels": Key(None, int, "label vector size (filled in from the data)", min=1, nullable=True),
        "label_kind": Key(None, str, "filled in from the data", choices=("class", "attributes"), nullable=True),
        "label_names": Key(None, list, "class or attribute names (filled in from the data)", nullable=True),
    },
    "loss": {
        "name": Key("nsgan", str, "adversarial loss (see `ganforge models`)"),
        "gp_weight": Key(
            None,
            float,
            "gradient-penalty weight (null = the loss's own: 10 for wgan-gp, else 0)",
            min=0.0,
            nullable=True,
        ),
        "r1_gamma": Key(0.0, float, "R1 penalty weight gamma on real images (0 = off)", min=0.0),
        "r1_every": Key(16, int, "apply R1 lazily every k D steps (weight scaled by k)", min=1),
        "drift": Key(
            0.0, float, "drift penalty eps * D(real)^2 that keeps WGAN critic values near 0 (ProGAN: 0.001)", min=0.0
        ),
        "pl_weight": Key(0.0, float, "stylegan2 path-length regularization weight (0 = off; StyleGAN2: 2)", min=0.0),
        "pl_every": Key(4, int, "apply path-length regularization lazily every k G steps", min=1),
        "pl_decay": Key(0.01, float, "decay of the running path-length target", min=0.0, max=1.0),
    },
    "augment": {
        "name": Key(
            "none",
            str,
            "augmentation of every image D sees (ada = adaptive discriminator augmentation)",
            choices=("none", "diffaugment", "ada"),
        ),
        "policy": Key(
            "color,translation,cutout", str, "DiffAugment policy: a comma list of color, translation, cutout"
        ),
        "ada_target": Key(
            0.6, float, "ADA: target of the overfitting heuristic r_t = E[sign(D(real))]", min=0.0, max=1.0
        ),
        "ada_speed": Key(500_000, int, "ADA: images over which p can move from 0 to 1 (ADA's ada_kimg * 1000)", min=1),
        "ada_interval": Key(4, int, "ADA: D steps between adjustments of p", min=1),
        "ada_p": Key(0.0, float, "ADA: initial augmentation probability", min=0.0, max=1.0),
        "ada_pipeline": Key(
            "bgc", str, "ADA transform groups: b(lit), g(eometric), c(olor)", choices=("b", "bg", "bgc", "c", "gc")
        ),
    },
    "grow": {
        "fade_images": Key(800_000, int, "progan: real images shown while a new resolution fades in", min=1),
        "stable_images": Key(800_000, int, "progan: real images shown at each resolution after its fade-in", min=1),
        "batch_sizes": Key(
            None,
            list,
            "progan: batch size per resolution from 4x4 up, e.g. [64, 64, 32, 32] (null = train.batch_size everywhere)",
            nullable=True,
        ),
    },
    "train": {
        "steps": Key(2000, int, "generator updates in total (null: as many as train.max_seconds allows)", min=1,
                     nullable=True),
        "d_steps": Key(1, int, "D (critic) updates per G update (5 for WGAN-GP)", min=1, max=100),
        "batch_size": Key(64, int, "images per step", min=1, max=65536),
        "lr_g": Key(2e-4, float, "Adam learning rate of G", min=0.0, max=1.0),
        "lr_d": Key(2e-4, float, "Adam learning rate of D", min=0.0, max=1.0),
        "beta1": Key(0.5, float, "Adam beta1", min=0.0, max=0.9999),
        "beta2": Key(0.999, float, "Adam beta2", min=0.0, max=0.9999999),
        "ema": Key(True, bool, "keep an exponential moving average of G (G_ema) for sampling"),
        "ema_decay": Key(0.999, float, "EMA decay per step (used when ema_kimg is null)", min=0.0, max=1.0),
        "ema_kimg": Key(
            None, float, "EMA half-life in thousands of real images (StyleGAN's ema_kimg); independent of the batch "
            "size, so it stays right under progressive growing; null = use ema_decay", min=1e-6, nullable=True,
        ),
        "ema_start": Key(0, int, "step from which G_ema averages (before: a copy of G)", min=0),
        "max_seconds": Key(None, float, "stop (with a checkpoint) once training wall-clock, carried across resumes and "
                            "excluding evaluation, reaches this many seconds: a time budget", min=1e-3, nullable=True),
        "log_every": Key(10, int, "steps between metrics.jsonl / TensorBoard scalars", min=1),
        "sample_every": Key(200, int, "steps between sample grids (0 = only at the end)", min=0),
        "checkpoint_every": Key(500, int, "steps between checkpoints (0 = only at the end)", min=0),
        "keep_checkpoints": Key(3, int, "how many recent checkpoints to keep", min=1),
        "on_disk_full": Key(
            "continue",
            str,
            "when a checkpoint cannot be written for lack of space: keep "
            "training (and retry at the next checkpoint) or stop",
            choices=("continue", "stop"),
        ),
        "eval_every": Key(0, int, "steps between evaluations of G_ema during training (FID etc. into eval.jsonl, "
                          "a `best` checkpoint by FID); 0 = off", min=0),
        "eval_n": Key(5000, int, "generated images per evaluation during training", min=2, max=1_000_000),
        "eval_metrics": Key("fid", str, "metrics of each evaluation during training (fid,kid,is,pr; KID costs ~3 s "
                            "per evaluation against a 60k reference, FID ~1 s)"),
        "eval_network": Key(None, str, "feature network during training (null = the dataset's default: its domain "
                            "CNN for (fashion-)mnist, else inception-fid)", nullable=True),
        "n_samples": Key(64, int, "images in each sample grid (fixed noise)", min=1, max=1024),
        "threads": Key(0, int, "CPU threads for torch (0 = torch's default)", min=0, max=1024),
        "channels_last": Key(True, bool, "channels-last memory format for conv models (faster on CPU)"),
        "amp": Key("off", (str, bool), "mixed precision of the G/D forward passes: off, bf16 (CPU or CUDA) or fp16 "
                   "(CUDA, with a loss scaler); penalties stay float32", choices=("off", "bf16", "fp16", False)),
        "compile": Key(False, bool, "torch.compile G and D (GPU fast path; the first steps compile)"),
        "sync_bn": Key(False, bool, "several processes on CUDA: BatchNorm statistics over the global batch "
                       "(SyncBatchNorm) instead of per process"),
        "dist_timeout": Key(1800, int, "several processes: seconds a process waits for the others (a collective, "
                            "evaluation on rank 0) before the job ends with an error", min=1),
        "tensorboard": Key(True, bool, "write TensorBoard scalars and images under tb/"),
    },
    "log": {},  # experiment trackers beyond TensorBoard: their keys are declared in runs/trackers.py
}


# --- schema fragments: a model family or data source declares its own keys ------------------------
# Keys stay in the shared sections (model.w_dim, data.crop), so configs and run dirs stay flat; the
# declaration lives beside the code that reads the key. Modules that declare fragments are found by name
# (like the CLI's command table), so config.py itself never imports them at module level.
FRAGMENT_MODULES = ("ganforge.models", "ganforge.data", "ganforge.runs.trackers")
OWNERS: dict[str, str] = {}  # "section.key" -> the family/source that declared it
_loaded = False


def extend_schema(section: str, keys: dict[str, Key], owner: str) -> None:
    """Add `owner`'s keys to a shared section (called at import time by models/ and data/sources/)."""
    node = SCHEMA[section]
    for name, key in keys.items():
        dotted = f"{section}.{name}"
        if name in node and OWNERS.get(dotted) != owner:
            raise ValueError(f"config key {dotted} is declared twice ({OWNERS.get(dotted, 'config.py')}, {owner})")
        node[name] = key
        OWNERS[dotted] = owner


def schema() -> dict[str, Any]:
    """SCHEMA with every fragment registered."""
    global _loaded
    if not _loaded:
        import importlib

        _loaded = True
        for m in FRAGMENT_MODULES:
            importlib.import_module(m)
    return SCHEMA


def defaults() -> dict[str, Any]:
    """The config with every key at its default."""

    def walk(node: dict[str, Any]) -> dict[str, Any]:
        return {k: walk(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in node.items()}

    return walk(schema())


def _lookup(dotted: str) -> Key:
    node: Any = schema()
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:i]) or "top level"
            valid = sorted(node) if isinstance(node, dict) else []
            hint = difflib.get_close_matches(part, valid, n=1)
            sugg = f" (did you mean {'.'.join(parts[:i] + hint)!r}?)" if hint else ""
            raise UserError(f"unknown config key {dotted!r}{sugg}; valid keys at {where}: {', '.join(valid)}")
        node = node[part]
    if isinstance(node, dict):
        raise UserError(f"config key {dotted!r} is a section; set one of its keys: {', '.join(sorted(node))}")
    return node


def _coerce(dotted: str, key: Key, value: Any) -> Any:
    """Check (and gently convert: int -> float, '1e-4' -> float) one value against its key."""
    if value is None:
        if key.nullable:
            return None
        raise UserError(f"config key {dotted!r} cannot be empty; expected {_type_name(key)}")
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if str in types and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # YAML reads `crop: 140` or `name: 2024` as numbers; the key wants text
    if float in types and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if bool not in types and isinstance(value, bool) or not isinstance(value, types):
        raise UserError(f"config key {dotted!r} must be {_type_name(key)}, got {short(value)} ({type(value).__name__})")
    if key.choices and value not in key.choices:
        raise UserError(f"config key {dotted!r} must be one of {', '.join(map(str, key.choices))}; got {short(value)}")
    if value != value or value in (float("inf"), float("-inf")):
        raise UserError(f"config key {dotted!r} must be a finite number; got {short(value)}")
    if key.min is not None and value < key.min or key.max is not None and value > key.max:
        lo = "-inf" if key.min is None else key.min
        hi = "inf" if key.max is None else key.max
        raise UserError(f"config key {dotted!r} must be in [{lo}, {hi}]; got {short(value)}")
    return value


def short(value: Any, limit: int = 80) -> str:
    """repr() cut to a readable length: an error line must stay one short line whatever the input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(key: Key) -> str:
    types = key.type if isinstance(key.type, tuple) else (key.type,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    s = " or ".join(names.get(t, t.__name__) for t in types)
    return s + (" or null" if key.nullable else "")


def merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Validate `update` key by key and merge it into a copy of `base`."""
    out = copy.deepcopy(base)
    if not isinstance(update, dict):
        raise UserError(f"config section {prefix or 'top level'!r} must be a mapping, got {short(update)}")
    for k, v in update.items():
        dotted = f"{prefix}{k}"
        if not isinstance(k, str):
            raise UserError(f"config keys must be strings, got {short(k)} in {prefix or 'top level'!r}")
        node = _lookup_node(dotted)
        if isinstance(node, dict):
            out[k] = merge(out.get(k, {}), v if v is not None else {}, dotted + ".")
        else:
            out[k] = _coerce(dotted, node, v)
    return out


def _lookup_node(dotted: str) -> Any:
    node: Any = schema()
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            _lookup(dotted)  # raises with a helpful message
        node = node[part]
    return node


def parse_override(text: str) -> tuple[str, Any]:
    """`train.steps=40` -> ('train.steps', 40); values are parsed as YAML scalars."""
    if "=" not in text:
        raise UserError(f"override {text!r} must look like key=value, e.g. train.steps=40")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise UserError(f"override {text!r} has no key; write key=value, e.g. train.steps=40")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except Exception:  # noqa: BLE001 - PyYAML raises ValueError/KeyError/... for bad explicit tags too
        value = raw
    if isinstance(value, (dict, list)):
        value = raw  # a scalar was meant: keep the text and let validation judge it
    return key, value


def apply_overrides(cfg: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        key, value = parse_override(text)
        k = _lookup(key)
        if k.type is list and isinstance(value, str):  # list keys take a YAML flow list: key=[64,64,32]
            try:
                value = yaml.safe_load(value)
            except Exception:  # noqa: BLE001 - left as text; validation names the key
                pass
        nested: dict[str, Any] = {}
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        cfg = merge(cfg, nested)
    return check_whole(cfg)


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a preset shipped with ganforge (`fashion_mnist_dcgan`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = CONFIG_DIR / (name_or_path if name_or_path.endswith(".yaml") else name_or_path + ".yaml")
    if preset.is_file():
        return preset
    raise UserError(
        f"config {name_or_path!r} not found; give a YAML file path or a preset: {', '.join(list_presets())}"
    )


def list_presets() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def safe_yaml(text: str, where: str) -> Any:
    """yaml.safe_load whose every failure (syntax, a bad `!!int x` tag, absurd nesting) is one line."""
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise UserError(f"config {where} is nested too deeply to be a ganforge config") from None
    except Exception as e:  # noqa: BLE001 - PyYAML raises more than YAMLError on bad tags
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"config {where} is not valid YAML: {msg or type(e).__name__}") from None


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read config {path}: {e}") from None
    data = safe_yaml(text, str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a YAML mapping of sections (data:, model:, train:)")
    return data


def load_config(name_or_path: str | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults <- YAML file (or preset) <- overrides, all validated."""
    cfg = defaults()
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        data = load_yaml(path)
        cfg = merge(cfg, data)
        if "name" not in data:
            cfg["name"] = path.stem
    return apply_overrides(cfg, overrides or [])


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Re-validate a full config (e.g. one read back from a run dir)."""
    return check_whole(merge(defaults(), cfg))


def check_whole(cfg: dict[str, Any]) -> dict[str, Any]:
    """Rules between keys, checked once a config is complete."""
    t = cfg.get("train", {})
    if t.get("steps", 1) is None and not t.get("max_seconds"):
        raise UserError("train.steps is null but there is no time budget; set train.steps=N or train.max_seconds=S")
    return cfg


def dump(cfg: dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)


# --- typed read-only views of the main sections, built after validation ------------------------------------------
# A config travels and is stored as plain dicts (config.yaml, checkpoints); code that runs a config reads these views
# instead of cfg["train"]["..."], so a misspelt key is an AttributeError at the first read (and a type checker's
# error), not a KeyError deep in a run. Keys a family or source declares (extend_schema) are in `extra`.


@dataclasses.dataclass(frozen=True)
class TrainView:
    SECTION: ClassVar[str] = "train"
    steps: int | None
    d_steps: int
    batch_size: int
    lr_g: float
    lr_d: float
    beta1: float
    beta2: float
    ema: bool
    ema_decay: float
    ema_kimg: float | None
    ema_start: int
    max_seconds: float | None
    log_every: int
    sample_every: int
    checkpoint_every: int
    keep_checkpoints: int
    on_disk_full: str
    eval_every: int
    eval_n: int
    eval_metrics: str
    eval_network: str | None
    n_samples: int
    threads: int
    channels_last: bool
    amp: str | bool
    compile: bool
    sync_bn: bool
    dist_timeout: int
    tensorboard: bool


@dataclasses.dataclass(frozen=True)
class DataView:
    SECTION: ClassVar[str] = "data"
    source: str
    data_dir: str | None
    resolution: int
    channels: int
    hflip: bool
    strict: bool
    limit: int | None
    extra: Mapping[str, Any]  # the sources' own keys (e.g. CelebA's attributes, crop)


@dataclasses.dataclass(frozen=True)
class ModelView:
    SECTION: ClassVar[str] = "model"
    name: str
    z_dim: int
    nf: int
    d_dropout: float | None
    d_nf: int | None
    conditional: bool
    num_labels: int | None
    label_kind: str | None
    label_names: list[str] | None
    extra: Mapping[str, Any]  # the families' own keys (e.g. stylegan2's w_dim)


def _view(cls: type, section: dict[str, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
    kwargs: dict[str, Any] = {k: section.get(k, SCHEMA[cls.SECTION][k].default) for k in names}
    if "extra" in {f.name for f in dataclasses.fields(cls)}:
        kwargs["extra"] = MappingProxyType({k: v for k, v in section.items() if k not in names})
    return cls(**kwargs)


def train_view(cfg: dict[str, Any]) -> TrainView:
    return _view(TrainView, cfg["train"])


def data_view(cfg: dict[str, Any]) -> DataView:
    return _view(DataView, cfg["data"])


def model_view(cfg: dict[str, Any]) -> ModelView:
    return _view(ModelView, cfg["model"])
