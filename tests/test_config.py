from __future__ import annotations

import pytest

from ganforge.config import apply_overrides, defaults, list_presets, load_config, parse_override
from ganforge.errors import UserError


def test_presets_load_and_validate():
    names = list_presets()
    for required in ("fashion_mnist_dcgan", "fashion_mnist_mlp", "mnist_dcgan"):
        assert required in names
    for n in names:
        cfg = load_config(n)
        assert cfg["name"] == n
        assert cfg["data"]["resolution"] in (28, 32, 64, 128)


def test_overrides_are_typed():
    cfg = load_config("fashion_mnist_dcgan", ["train.steps=40", "train.lr_d=1e-4", "model.nf=32", "seed=1",
                                              "train.ema=false", "data.data_dir=/x"])
    assert cfg["train"]["steps"] == 40 and isinstance(cfg["train"]["steps"], int)
    assert cfg["train"]["lr_d"] == pytest.approx(1e-4)
    assert cfg["model"]["nf"] == 32 and cfg["seed"] == 1 and cfg["train"]["ema"] is False
    assert cfg["data"]["data_dir"] == "/x"


def test_int_accepted_for_float():
    assert apply_overrides(defaults(), ["train.lr_g=1"])["train"]["lr_g"] == 1.0


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.stepz=5", ["train.stepz", "did you mean 'train.steps'"]),
        ("bogus=1", ["unknown config key 'bogus'", "valid keys"]),
        ("train.steps=abc", ["train.steps", "integer"]),
        ("train.steps=0", ["train.steps", "[1,"]),
        ("train.steps=1.5", ["train.steps", "integer"]),
        ("train.ema=maybe", ["train.ema", "true or false"]),
        ("data.resolution=33", ["data.resolution", "28, 32, 64, 128"]),
        ("device=tpu", ["device", "auto, cpu, cuda"]),
        ("train.lr_d=nan", ["train.lr_d", "finite"]),
        ("train.lr_d=-1", ["train.lr_d", "[0.0,"]),
        ("train=5", ["section"]),
        ("train.steps", ["key=value"]),
        ("=5", ["no key"]),
        ("train.steps=", ["train.steps", "is null but there is no time budget"]),
        ("model.z_dim=true", ["model.z_dim", "integer"]),
    ],
)
def test_bad_overrides(override, words):
    with pytest.raises(UserError) as e:
        load_config("fashion_mnist_dcgan", [override])
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_bad_yaml_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="mapping"):
        load_config(str(lst))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  nope: 1\n")
    with pytest.raises(UserError, match="train.nope"):
        load_config(str(unknown))
    wrong_section = tmp_path / "ws.yaml"
    wrong_section.write_text("train: 3\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(str(wrong_section))
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_parse_override_keeps_strings():
    assert parse_override("data.source=fashion-mnist:test") == ("data.source", "fashion-mnist:test")
    assert parse_override("data.source=/a/b.zip") == ("data.source", "/a/b.zip")


def test_family_and_source_keys_are_declared_beside_their_code():
    """Schema fragments: model.w_dim belongs to stylegan2, data.crop to celeba; they validate like any key,
    and a second declaration of a key by another owner is refused."""
    from ganforge.config import OWNERS, Key, extend_schema, load_config

    cfg = load_config("fashion_mnist32_stylegan2", ["model.w_dim=32", "data.crop=140"])
    assert cfg["model"]["w_dim"] == 32 and cfg["data"]["crop"] == "140"
    assert OWNERS["model.w_dim"] == "stylegan2" and OWNERS["data.crop"] == "celeba"
    assert OWNERS["model.hidden"] == "mlp" and OWNERS["model.nf_max"] == "progan/stylegan2"
    with pytest.raises(UserError, match="model.mapping_layers"):
        load_config(None, ["model.mapping_layers=0"])
    with pytest.raises(ValueError, match="declared twice"):
        extend_schema("model", {"w_dim": Key(1, int)}, owner="someone-else")


def test_source_options_reach_only_their_source():
    from ganforge.config import load_config
    from ganforge.data.from_config import source_options

    assert source_options(load_config(None)) == {}
    cfg = load_config(None, ["data.source=celeba", "data.attributes=Male,Smiling", "data.crop=108"])
    assert source_options(cfg) == {"attributes": "Male,Smiling", "crop": "108"}


def test_typed_views_cover_the_core_keys_of_their_sections():
    import dataclasses

    from ganforge.config import OWNERS, DataView, ModelView, TrainView, model_view, schema, train_view

    for cls in (TrainView, DataView, ModelView):
        core = {k for k in schema()[cls.SECTION] if f"{cls.SECTION}.{k}" not in OWNERS}
        assert {f.name for f in dataclasses.fields(cls)} - {"extra"} == core, cls.__name__
    cfg = load_config("fashion_mnist32_stylegan2", ["train.lr_g=0.001"])
    t = train_view(cfg)
    assert t.lr_g == 0.001 and t.steps == cfg["train"]["steps"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.lr_g = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        _ = t.lr  # type: ignore[attr-defined]  # a misspelt key fails at its first read
    m = model_view(cfg)
    assert m.extra["w_dim"] == cfg["model"]["w_dim"] and "w_dim" not in {f.name for f in dataclasses.fields(m)}
    with pytest.raises(TypeError):
        m.extra["w_dim"] = 3  # type: ignore[index]


def test_steps_may_be_null_only_under_a_time_budget():
    assert load_config("fashion_mnist_dcgan", ["train.steps=null", "train.max_seconds=60"])["train"]["steps"] is None
    with pytest.raises(UserError, match="train.steps is null but there is no time budget"):
        load_config("fashion_mnist_dcgan", ["train.steps=null"])


def test_demo_preset_and_the_recipe_it_replaced():
    """`make demo` trains fashion_mnist_dcgan_fast; fashion_mnist_dcgan keeps its published meaning (the Radford et al.
    recipe at CPU width), and benchmarks/recipes.py's `old` pins exactly that recipe."""
    import importlib.util
    from pathlib import Path

    from ganforge.training.launch import DEMO_PRESET

    fast, old = load_config(DEMO_PRESET), load_config("fashion_mnist_dcgan")
    assert DEMO_PRESET == "fashion_mnist_dcgan_fast"
    assert (fast["model"]["nf"], fast["model"]["d_nf"], fast["train"]["lr_g"], fast["train"]["lr_d"]) == (48, 32, 8e-4, 8e-4)
    assert (fast["model"]["d_mbstd"], fast["train"]["ema_decay"]) == (4, 0.9995)
    assert (old["model"]["nf"], old["train"]["lr_g"], old["train"]["lr_d"], old["train"]["beta1"]) == (32, 2e-4, 2e-4, 0.5)
    assert (old["model"]["d_mbstd"], old["train"]["ema_decay"]) == (0, 0.999)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "recipes.py"
    spec = importlib.util.spec_from_file_location("recipes_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    preset, *overrides = bench.RECIPES["old"].split()
    assert load_config(preset, overrides) == old  # the pins change nothing today: `old` is the old preset
    assert bench.RECIPES["new"] == DEMO_PRESET
