"""Property-based hardening: whatever a user types as overrides or puts in a YAML config ends in exit
code 2 and one line `ganforge: error: ...` (never a traceback, a hang or a training run), and a
damaged or hostile checkpoint file is always refused with a one-line error.

The fuzzers include PyYAML's nastier inputs (bad explicit tags like `!!int abc`, deep nesting), which
once escaped as tracebacks.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import synthetic_data, time_limit
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from ganforge.cli import main
from ganforge.config import load_config, schema
from ganforge.errors import UserError
from ganforge.models import build_discriminator, build_generator
from ganforge.runs import checkpoint as ckpt
from ganforge.training.trainer import Trainer

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the repository
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FAST = ["model.nf=8", "train.batch_size=16", "train.tensorboard=false", "train.threads=1", "train.sample_every=0",
        "train.eval_every=0"]


# --- running the CLI in-process, with a hang guard ---------------------------------------------------------


def run_cli(argv: list[str], seconds: float = 20) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with time_limit(seconds), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def the_error_line(rc: int, out: str, err: str) -> str:
    """The one line a bad input must produce (warnings aside), from run_cli's (rc, stdout, stderr)."""
    assert "Traceback" not in err, err
    assert rc == 2, err
    lines = [ln for ln in err.split("\n") if ln.strip() and not ln.startswith("ganforge: warning:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("ganforge: error: "), err
    assert "\r" not in lines[0] and len(lines[0]) < 5000, lines[0][:300]
    return lines[0]


# --- strategies ----------------------------------------------------------------------------------------
def _dotted(node: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        out += _dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return out


VALID_KEYS = _dotted(schema())
SECTIONS = [k for k, v in schema().items() if isinstance(v, dict)]
KEY_PARTS = sorted({p for k in VALID_KEYS for p in k.split(".")})
YAML_SPECIAL = [
    "", " ", "[", "]", "{", "}", "[1, 2]", "{a: 1}", "a: b", "- a", "-", "?", "? x", ":", "|", ">", "&a", "*a",
    "&a 1", "!", "!!", "!!python/object:os.system", "!!python/object/apply:os.system ['touch pwned']",
    "!!python/name:os.system", "!!binary AAAA", "!!set {a}", "!!str", "!!null", "!!omap [a: 1]", "null", "Null",
    "~", "true", "False", "yes", "no", "on", "off", "y", "n", ".nan", ".NaN", "nan", ".inf", "-.inf", "inf",
    "1e400", "-1e400", "1e-400", "0x1F", "0o17", "0b101", "1_000", "+1", "-0", "00", "1.", ".5", "1:30",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "'quoted'", '"unterminated', "'", '"', "#", "# comment", "%",
    "%YAML 1.2", "@", "`", "\t", "\x00", "\x7f", "\ufeff", "\u2028", "\x85", "💥", "日本", "ß", "é", "\\",
    "a\nb", "---", "...", "<<", "=", "==", "a=b", "9" * 400, "-" + "9" * 400,
]
TAGS = [
    "!!int", "!!float", "!!bool", "!!timestamp", "!!str", "!!null", "!!binary", "!!set", "!!seq", "!!map", "!!omap",
    "!!pairs", "!!merge", "!!value", "!!python/object:os.system", "!!python/name:os.system", "!", "!local",
    "!<tag:yaml.org,2002:int>", "!!python/tuple",
]
values = st.one_of(
    st.sampled_from(YAML_SPECIAL),
    st.tuples(st.sampled_from(TAGS), st.sampled_from(YAML_SPECIAL) | st.text(max_size=8)).map(" ".join),
    st.integers(-(10**40), 10**40).map(str),
    st.floats().map(repr),
    st.text(max_size=30),
    st.sampled_from(YAML_SPECIAL).flatmap(lambda s: st.text(max_size=5).map(lambda t: s + t)),
)
keys = st.one_of(
    st.sampled_from(VALID_KEYS),
    st.sampled_from(SECTIONS),
    st.text(max_size=20),
    st.lists(st.sampled_from(KEY_PARTS) | st.text(max_size=6), min_size=1, max_size=4).map(".".join),
    st.sampled_from(VALID_KEYS).flatmap(lambda k: st.sampled_from([k + ".x", k.upper(), " " + k, k + ".", "." + k])),
)
overrides = st.tuples(keys, values).map(lambda kv: f"{kv[0]}={kv[1]}")


@pytest.fixture
def refusing_dir(tmp_path: Path) -> Path:
    """A user's non-empty folder as --run-dir: even a valid config is refused before any training."""
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    return d


@pytest.fixture
def base_yaml(tmp_path: Path) -> Path:
    """A valid config whose data source does not exist: nothing can be downloaded or trained."""
    p = tmp_path / "base.yaml"
    p.write_text(yaml.safe_dump({"name": "fuzz", "data": {"source": str(tmp_path / "no-such-data")}}))
    return p


def _refused_early(line: str) -> bool:
    return "exists and is not empty" in line or "does not exist" in line


@FUZZ
@given(args=st.lists(overrides, min_size=1, max_size=4))
def test_fuzzed_overrides_give_one_line_error(
    args: list[str], refusing_dir: Path, base_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assume(not any(a.startswith("-") for a in args))  # those are options for argparse, not overrides
    monkeypatch.chdir(tmp_path)
    try:
        load_config(str(base_yaml), args)
        valid = True
    except UserError:
        valid = False
    line = the_error_line(*run_cli(["train", base_yaml, *args, "--run-dir", refusing_dir]))
    if valid:
        assert _refused_early(line), line
    assert [p.name for p in refusing_dir.iterdir()] == ["thesis.tex"]
    assert not (tmp_path / "runs").exists()


def _mutate(text: str, edits: list[tuple[int, str, int]]) -> str:
    for pos, ins, cut in edits:
        i = pos % (len(text) + 1)
        text = text[:i] + ins + text[i + cut :]
    return text


scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=12),
    st.sampled_from(YAML_SPECIAL),
)
nested = st.recursive(
    scalars,
    lambda c: (
        st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(KEY_PARTS) | st.text(max_size=8), c, max_size=4)
    ),
    max_leaves=10,
)
documents = st.one_of(
    st.dictionaries(st.sampled_from(["name", "seed", "device", *SECTIONS]) | st.text(max_size=8), nested, max_size=5).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True)
    ),
    st.dictionaries(st.sampled_from(SECTIONS), st.dictionaries(st.sampled_from(KEY_PARTS), scalars, max_size=4), max_size=3).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True)
    ),
    nested.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
    st.text(max_size=200),
    st.lists(st.tuples(st.integers(0, 80), st.sampled_from(YAML_SPECIAL + [t + " " for t in TAGS]) | st.text(max_size=3),
                       st.integers(0, 3)), max_size=4).map(
        lambda e: _mutate("name: x\nseed: 3\nmodel: {name: dcgan, nf: 8}\ntrain:\n  steps: 10\n  lr_g: 0.001\n", e)
    ),
)


@FUZZ
@given(doc=documents | st.binary(max_size=120))
def test_fuzzed_yaml_files_give_one_line_error(
    doc: str | bytes, refusing_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "fuzz.yaml"
    if isinstance(doc, bytes):
        cfg.write_bytes(doc)
    else:
        cfg.write_text(doc, encoding="utf-8")
    try:
        # a valid document must not be able to start anything: point its data at nothing
        load_config(str(cfg), [f"data.source={tmp_path / 'no-such-data'}"])
        valid = True
    except UserError:
        valid = False
    line = the_error_line(
        *run_cli(["train", cfg, f"data.source={tmp_path / 'no-such-data'}", "--run-dir", refusing_dir])
    )
    if valid:
        assert _refused_early(line), line
    assert [p.name for p in refusing_dir.iterdir()] == ["thesis.tex"]
    assert not (tmp_path / "runs").exists()


# --- config inputs that once escaped as tracebacks ------------------------------------------------------------------------------------
BAD_TAGS = ["!!int abc", "!!float abc", "!!float", "!!bool maybe", "!!timestamp soon", "!!timestamp 2020-13-45"]


@pytest.mark.parametrize("where", ["override", "file"])
@pytest.mark.parametrize("value", [*BAD_TAGS, "[" * 3000 + "]" * 3000])
def test_yaml_constructor_errors_are_one_line_errors(
    value: str, where: str, refusing_dir: Path, tmp_path: Path
) -> None:
    if where == "override":
        argv = ["train", "fashion_mnist_dcgan", f"train.steps={value}"]
    else:
        (tmp_path / "c.yaml").write_text(f"train:\n  steps: {value}\n")
        argv = ["train", tmp_path / "c.yaml"]
    try:
        result = run_cli([*argv, "--run-dir", refusing_dir])
    except Exception as e:  # noqa: BLE001 - what escapes main() is what the user sees as a traceback
        pytest.fail(f"{type(e).__name__} escaped ganforge.cli.main: {e}")
    line = the_error_line(*result)
    if where == "override":  # the value is kept as text and judged by the schema
        assert "train.steps" in line, line
    else:  # PyYAML cannot say which key a bad tag sits under: the message names the file and the cause
        assert "c.yaml" in line and ("not valid YAML" in line or "nested too deeply" in line), line


def test_alias_expansion_does_not_blow_up_the_error_message(refusing_dir: Path, tmp_path: Path) -> None:
    levels = ["&a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, 6):  # 9**6 leaves behind 200 bytes of YAML
        prev, cur = chr(96 + i), chr(97 + i)
        levels.append(f"&{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    (tmp_path / "laughs.yaml").write_text("name: [" + ", ".join(levels) + "]\n")
    with time_limit(120):  # a guard against a hang, not a timing: 9**6 expanded items would still finish
        line = the_error_line(*run_cli(["train", tmp_path / "laughs.yaml", "--run-dir", refusing_dir]))
    assert "'name'" in line
    assert len(line) < 1000


def test_seed_beyond_torch_range_is_rejected_by_validation() -> None:
    with pytest.raises(UserError, match="seed"):
        load_config("fashion_mnist_dcgan", [f"seed={2**64}"])


# --- checkpoints: damaged, tampered, hostile, foreign ----------------------------------------------------
@pytest.fixture(scope="module")
def src_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step run on a folder of PNGs: checkpoints at 2 and 4 (nf=8, 32 px, 1 channel)."""
    n = torch.get_num_threads()
    root = tmp_path_factory.mktemp("fuzz-src")
    from PIL import Image

    (root / "images").mkdir()
    for i, arr in enumerate(synthetic_data(n=32).images):
        Image.fromarray(arr[..., 0]).save(root / "images" / f"{i:02d}.png")
    rc, _, err = run_cli(["train", "fashion_mnist_dcgan", f"data.source={root / 'images'}", *FAST,
                          "train.steps=4", "train.checkpoint_every=2", "--run-dir", root / "run", "--quiet"], 120)
    torch.set_num_threads(n)
    assert rc == 0, err
    return root / "run"


def _copy_ckpt(run: Path, dest: Path, sidecar: bool = True) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    st_path = dest / "step-00000004.safetensors"
    shutil.copyfile(run / "checkpoints" / st_path.name, st_path)
    if sidecar:
        shutil.copyfile(run / "checkpoints" / "step-00000004.json", st_path.with_suffix(".json"))
    else:
        st_path.with_suffix(".json").unlink(missing_ok=True)
    return st_path


damage = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True), st.just(0)),
    st.tuples(st.just("flip"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
    st.tuples(st.just("flip-header"), st.floats(0, 1, exclude_max=True), st.integers(1, 255)),
)


def _apply(path: Path, damages: list[tuple[str, float, int]]) -> bool:
    """Damage the file in place; False when the damages cancel out (the same bit flipped twice)."""
    orig = path.read_bytes()
    raw = bytearray(orig)
    header = 8 + int.from_bytes(raw[:8], "little")
    for how, where, mask in damages:
        if how == "truncate":
            raw = raw[: int(where * len(raw))]
        elif raw:
            i = int(where * (min(header, len(raw)) if how == "flip-header" else len(raw)))
            raw[i] ^= mask
    path.write_bytes(bytes(raw))
    return bytes(raw) != orig


@FUZZ
@given(damages=st.lists(damage, min_size=1, max_size=3))
def test_damaged_tensor_file_with_sidecar_is_always_caught(damages: list, src_run: Path, tmp_path: Path) -> None:
    p = _copy_ckpt(src_run, tmp_path / "ck")
    assume(_apply(p, damages))
    with pytest.raises(UserError, match="corrupted or truncated") as e:
        ckpt.read_checkpoint(p)
    assert "\n" not in str(e.value)


@FUZZ
@given(damages=st.lists(damage, min_size=1, max_size=3))
def test_damaged_tensor_file_without_sidecar_never_crashes(damages: list, src_run: Path, tmp_path: Path) -> None:
    """No hash to check: the file is refused in one line, or it loads and fits the model or is refused."""
    p = _copy_ckpt(src_run, tmp_path / "bare", sidecar=False)
    _apply(p, damages)
    cfg = json.loads((src_run / "checkpoints" / "step-00000004.json").read_text())["config"]
    try:
        c = ckpt.read_checkpoint(p)
        for prefix, model in (("G", build_generator(cfg)), ("D", build_discriminator(cfg))):
            ckpt.load_module(prefix, model, c.tensors, f" {p.name}")
    except UserError as e:
        assert "\n" not in str(e)


def _tamper_step(meta: dict) -> None:
    meta["step"] -= 1


def _tamper_rng(meta: dict) -> None:
    s = meta["rng"]["torch"]
    meta["rng"]["torch"] = s[:40] + ("A" if s[40] != "A" else "B") + s[41:]


def _tamper_lr(meta: dict) -> None:
    meta["optim"]["opt_G"]["param_groups"][0]["lr"] = 0.5


def _drop_optim(meta: dict) -> None:
    del meta["optim"]


def _drop_optim_and_hash(meta: dict) -> None:  # a sidecar edited by hand and re-saved without its own hash
    del meta["optim"], meta["meta_sha256"]


@pytest.mark.parametrize("tamper, match", [
    (_tamper_step, r"step-00000004\.json is corrupted \(its SHA-256"),
    (lambda m: (_tamper_step(m), m.pop("meta_sha256")), r"step-00000004\.json is damaged \(it names step 3\)"),
    (_tamper_rng, r"step-00000004\.json is corrupted \(its SHA-256 does not match its content\)"),
    (_tamper_lr, r"step-00000004\.json is corrupted \(its SHA-256"),
    (_drop_optim, r"step-00000004\.json is corrupted \(its SHA-256"),
    (_drop_optim_and_hash, r"^step-00000004\.json has no 'optim': this checkpoint cannot be resumed; .*--init-from$"),
])
def test_tampered_sidecar_is_detected(tamper, match, src_run: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Reading the checkpoint refuses an edited sidecar by its hash; one without a hash fails when resumed, and
    each says which file and why in one line."""
    p = _copy_ckpt(src_run, tmp_path / "ck")
    js = p.with_suffix(".json")
    meta = json.loads(js.read_text())
    tamper(meta)
    js.write_text(json.dumps(meta, indent=1))
    with pytest.raises(UserError, match=match) as e:
        c = ckpt.read_checkpoint(p)
        assert tamper is _drop_optim_and_hash  # the others must be refused by read_checkpoint already
        Trainer(c.config, None, data=synthetic_data(n=32), quiet=True).load_state(c)
    assert "\n" not in str(e.value)


class _Payload:
    """Unpickling this creates `marker`: what a hostile checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize(
    "flavour", ["pickle.pt", "torch-zip.pth", "pickle.ckpt", "pickle.bin", "pickle-as.safetensors"]
)
def test_code_running_pickle_is_refused_without_running(
    flavour: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / f"evil.{flavour.split('.')[1]}"
    payload = {"G.main.0.weight": _Payload(marker)}
    if flavour.startswith("torch-zip"):
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    probe = tmp_path / "probe"  # the payload is live: plain unpickling does run it
    shutil.copyfile(evil, probe)
    torch.load(probe, weights_only=False) if flavour.startswith("torch-zip") else pickle.loads(probe.read_bytes())
    assert marker.exists()
    marker.unlink()

    line = the_error_line(*run_cli(["train", "fashion_mnist_dcgan", "--init-from", evil, "--run-dir", tmp_path / "ft"]))
    assert str(evil) in line
    assert not marker.exists()
    assert not (tmp_path / "ft").exists()


def _cli_init(src_run: Path, tmp_path: Path, init: Path, *extra: str) -> str:
    images = src_run.parent / "images"
    n = torch.get_num_threads()
    try:
        return the_error_line(
            *run_cli(
                [
                    "train",
                    "fashion_mnist_dcgan",
                    f"data.source={images}",
                    *FAST,
                    "train.steps=1",
                    *extra,
                    "--init-from",
                    init,
                    "--run-dir",
                    tmp_path / "ft",
                    "--quiet",
                ],
                60,
            )
        )
    finally:
        torch.set_num_threads(n)


HOLDS = "model 'dcgan' (nf=8, z_dim=100) at 32px x 1 channels"


@pytest.mark.parametrize(
    "extra", [["model.name=mlp"], ["data.resolution=64"], ["model.nf=16"], ["data.channels=3"], ["model.z_dim=64"]]
)
def test_checkpoint_of_another_architecture_names_what_it_holds(
    extra: list[str], src_run: Path, tmp_path: Path
) -> None:
    line = _cli_init(src_run, tmp_path, src_run / "checkpoints" / "step-00000004.safetensors", *extra)
    assert "does not fit this model" in line and HOLDS in line


def test_resume_with_another_architecture_names_what_it_holds(src_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(src_run, run, ignore=shutil.ignore_patterns(".lock"))
    n = torch.get_num_threads()
    try:
        line = the_error_line(*run_cli(["train", "--resume", run, "model.nf=16", "train.steps=6", "--quiet"], 60))
    finally:
        torch.set_num_threads(n)
    assert "does not fit this model" in line and "nf=8" in line


def test_safetensors_with_foreign_tensors_is_refused(src_run: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "resnet.safetensors"
    save_file({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.bias": torch.zeros(10)}, str(foreign))
    line = _cli_init(src_run, tmp_path, foreign)
    assert "no G tensors" in line and "not a ganforge checkpoint" in line


def test_failed_init_from_leaves_no_run_dir(src_run: Path, tmp_path: Path) -> None:
    _cli_init(src_run, tmp_path, src_run / "checkpoints" / "step-00000004.safetensors", "model.nf=16")
    assert not (tmp_path / "ft").exists()
