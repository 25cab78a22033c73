"""Progressive growing, StyleGAN2 and ADA inside the trainer: the growing schedule, exact resume mid-fade
and with ADA on, ADA's p in checkpoints and logs, path-length regularization, truncation and style
mixing through the API and the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import SMALL_SG, assert_png_is_grid, synthetic_data
from safetensors.torch import load_file

from ganforge.cli import main
from ganforge.config import load_config
from ganforge.errors import UserError
from ganforge.generate import load_generator, sample, style_layers, style_mix
from ganforge.regularizers import path_length_penalty
from ganforge.runs import checkpoint as ckpt
from ganforge.training.launch import train
from ganforge.training.schedule import GrowSchedule

SMALL_PG = ["model.nf=8", "model.nf_max=16", "model.z_dim=16", "train.log_every=5", "train.sample_every=10",
            "train.checkpoint_every=10", "train.eval_every=0"]

def _sched(**grow):
    cfg = load_config("fashion_mnist32_progan", [f"grow.{k}={v}" for k, v in grow.items()])
    return GrowSchedule.from_config(cfg)


def test_grow_schedule_phases():
    s = _sched(fade_images=100, stable_images=50, batch_sizes="[8,8,4,2]")
    assert s.levels == 4
    seq = [
        (st.level, st.alpha, st.batch_size) for st in map(s.stage, [0, 49, 50, 75, 149, 150, 199, 200, 350, 499, 10**6])
    ]
    assert seq == [(0, 1.0, 8), (0, 1.0, 8), (1, 0.0, 8), (1, 0.25, 8), (1, 0.99, 8), (1, 1.0, 8), (1, 1.0, 8),
                   (2, 0.0, 4), (3, 0.0, 2), (3, 1.0, 2), (3, 1.0, 2)]
    assert s.stage(350).resolution == 32


def test_grow_schedule_rejects_wrong_batch_list():
    with pytest.raises(UserError, match="4 positive integers, one per resolution 4, 8, 16, 32"):
        _sched(batch_sizes="[8,8]")


def _final_tensors(run_dir, step):
    return load_file(str(run_dir / "checkpoints" / f"step-{step:08d}.safetensors"))


def _assert_same(a, b):
    ta, tb = _final_tensors(a, 40), _final_tensors(b, 40)
    assert ta.keys() == tb.keys() and len(ta) > 10
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k


@pytest.mark.cuda
def test_progan_trains_through_the_stages_and_resumes_mid_fade_bitwise(tmp_path, test_device):
    """stable 4x4 for 96 images, then 8x8 fades in over 320: step 20 (batch 8) is in the middle of a fade."""
    data = synthetic_data(n=300)
    over = SMALL_PG + ["grow.fade_images=320", "grow.stable_images=96", "grow.batch_sizes=[16,8,8,8]",
                       "model.conditional=false", f"device={test_device}"]
    train("fashion_mnist32_progan", over + ["train.steps=40"], run_dir=tmp_path / "a", data=data, quiet=True)
    run, _ = train("fashion_mnist32_progan", over + ["train.steps=20"], run_dir=tmp_path / "b", data=data, quiet=True)
    c, _ = ckpt.latest_checkpoint(run.checkpoints)
    assert c.step == 20 and c.meta["images_seen"] == 6 * 16 + 14 * 8  # batch size follows the stage
    stage = (float(c.tensors["G.stage_level"]), float(c.tensors["G.stage_alpha"]))
    assert stage[0] == 1.0 and 0.0 < stage[1] < 1.0, stage  # mid-fade
    train(None, ["train.steps=40"], resume=tmp_path / "b", data=data, quiet=True)
    _assert_same(tmp_path / "a", tmp_path / "b")
    rec = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {r["resolution"] for r in rec} >= {4.0, 8.0} and all("alpha" in r for r in rec)
    # grids are written at the target size whatever the stage
    from PIL import Image

    assert Image.open(tmp_path / "a" / "samples" / "step-00000010.png").size[0] > 8 * 32


def test_stylegan2_with_ada_and_path_length_resumes_bitwise(tmp_path):
    data = synthetic_data(n=300)
    over = SMALL_SG + ["augment.name=ada", "augment.ada_speed=2000", "augment.ada_interval=2", "augment.ada_p=0.2",
                       "loss.pl_weight=2", "loss.pl_every=2", "loss.r1_every=4"]
    train("fashion_mnist32_stylegan2", over + ["train.steps=40"], run_dir=tmp_path / "a", data=data, quiet=True)
    run, _ = train("fashion_mnist32_stylegan2", over + ["train.steps=20"], run_dir=tmp_path / "b", data=data,
                   quiet=True)
    c, _ = ckpt.latest_checkpoint(run.checkpoints)
    assert c.meta["parts"]["augment"]["p"] != 0.2, c.meta["parts"]  # p moved (2000-image speed) and is saved
    assert c.meta["parts"]["path_length"]["pl_mean"] > 0.0
    train(None, ["train.steps=40"], resume=tmp_path / "b", data=data, quiet=True)
    _assert_same(tmp_path / "a", tmp_path / "b")
    a, _ = ckpt.latest_checkpoint(tmp_path / "a" / "checkpoints")
    b, _ = ckpt.latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert a.meta["parts"] == b.meta["parts"]
    rec = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all("ada_p" in r and "pl_mean" in r for r in rec)
    assert [r["step"] for r in rec] == list(range(5, 45, 5))


def test_ada_works_with_other_models_and_resume_restores_p(tmp_path):
    data = synthetic_data(n=200)
    over = ["model.nf=8", "train.batch_size=16", "augment.name=ada", "augment.ada_speed=500", "augment.ada_p=0.3",
            "train.checkpoint_every=12"]
    # 12 steps = 3 adjustments of +-0.128 (an odd number: p cannot be back at 0.3)
    run, _ = train("fashion_mnist_dcgan", over + ["train.steps=12"], run_dir=tmp_path / "r", data=data, quiet=True)
    c, _ = ckpt.latest_checkpoint(run.checkpoints)
    p = c.meta["parts"]["augment"]["p"]
    assert p != 0.3
    from ganforge.training.trainer import Trainer

    t = Trainer(c.meta["config"], data=data, quiet=True)
    t.load_state(c)
    assert t.objective.parts["augment"].fn.p == p


def test_path_length_penalty_matches_its_definition():
    cfg = load_config("fashion_mnist32_stylegan2", SMALL_SG)
    from ganforge.models import build_generator

    torch.manual_seed(0)
    G = build_generator(cfg).eval()
    z = torch.randn(4, 16)
    pen, new_mean = path_length_penalty(G, z, None, torch.tensor(0.0), 0.5, torch.Generator().manual_seed(1), 2)
    # the same quantities by hand, sample by sample
    y = torch.randn((2, 1, 32, 32), generator=torch.Generator().manual_seed(1)) / 32.0
    lengths = []
    for i in range(2):
        ws = G.mapping(z[i : i + 1], None).detach().requires_grad_(True)
        (g,) = torch.autograd.grad((G.synthesis(ws) * y[i : i + 1]).sum(), ws)
        lengths.append(g.square().sum(2).mean().sqrt())
    lengths = torch.stack(lengths)
    a = 0.5 * lengths.mean()
    assert torch.allclose(new_mean, a, rtol=1e-4)
    assert torch.allclose(pen, (lengths - a).square().mean(), rtol=1e-3)


def test_pl_weight_needs_a_style_model(tmp_path):
    with pytest.raises(UserError, match="loss.pl_weight needs a style-based generator"):
        train("fashion_mnist_dcgan", ["loss.pl_weight=2", "train.steps=1"], run_dir=tmp_path / "r",
              data=synthetic_data(n=100), quiet=True)


@pytest.fixture(scope="module")
def sg_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sg")
    run, _ = train("fashion_mnist32_stylegan2", SMALL_SG + ["train.steps=10"], run_dir=d / "r",
                   data=synthetic_data(n=100), quiet=True)
    return run.path


def test_truncation_api(sg_run):
    G, _ = load_generator(sg_run)
    G.w_avg.copy_(torch.randn_like(G.w_avg))
    plain, psi1 = sample(G, 6, seed=3), sample(G, 6, seed=3, truncation_psi=1.0)
    assert torch.equal(plain, psi1)
    zero = sample(G, 6, seed=3, truncation_psi=0.0)
    # psi = 0: every latent becomes w_avg
    ws = G.mapping(torch.randn(3, G.z_dim), None, truncation_psi=0.0)
    assert torch.allclose(ws, G.w_avg.expand_as(ws), atol=1e-6)
    assert zero.shape == plain.shape and not torch.equal(zero, plain)
    assert zero.min() >= -1 and zero.max() <= 1


def test_style_mix_api_uses_column_styles_at_chosen_layers(sg_run):
    G, _ = load_generator(sg_run)
    assert style_layers(G, "coarse") == [i for i, r in enumerate(G.ws_resolutions) if r <= 8]
    assert style_layers(G, "fine") == [i for i, r in enumerate(G.ws_resolutions) if r == 32]
    assert style_layers(G, "1-2") == [1, 2]
    with pytest.raises(UserError, match="coarse, middle, fine or a range"):
        style_layers(G, "9-99")
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: seen.append((i, inp[0].detach().clone())))
             for i, m in G.synthesis.affines()]
    img = style_mix(G, [1, 2], [3, 4, 5], "coarse")
    for h in hooks:
        h.remove()
    assert img.shape == (3 * 4, 1, 32, 32)
    w_row = G.mapping(torch.randn(1, G.z_dim, generator=__import__("ganforge").data.pipeline.seeded_generator(1, 0)),
                      None)[0, 0]
    w_col = G.mapping(torch.randn(1, G.z_dim, generator=__import__("ganforge").data.pipeline.seeded_generator(4, 0)),
                      None)[0, 0]
    coarse = set(style_layers(G, "coarse"))
    cell = 1 * 4 + 2  # row seed 1 (first row after the header), column seed 4
    for i, w in seen:
        expect = w_col if i in coarse else w_row
        assert torch.allclose(w[cell], expect, atol=1e-5), i


def test_cli_truncation_and_style_mix(sg_run, tmp_path, capsys):
    """The CLI's pictures are pixel for pixel the API's: --truncation reaches the generator, --rows/--cols/--layers
    reach style_mix."""
    G, _ = load_generator(sg_run)
    assert main(["sample", str(sg_run), "--n", "8", "--truncation", "0.5", "--grid", str(tmp_path / "t.png")]) == 0
    truncated = sample(G, 8, truncation_psi=0.5)
    assert_png_is_grid(tmp_path / "t.png", truncated)
    assert not torch.equal(truncated, sample(G, 8))  # psi 0.5 changed the images
    assert main(["style-mix", str(sg_run), "--rows", "1,2", "--cols", "3,4,5", "--layers", "middle",
                 "--grid", str(tmp_path / "m.png")]) == 0
    mixed = style_mix(G, [1, 2], [3, 4, 5], "middle")
    assert_png_is_grid(tmp_path / "m.png", mixed, nrow=4)
    assert not torch.equal(mixed, style_mix(G, [1, 2], [3, 4, 5], "coarse"))
    assert main(["style-mix", str(sg_run), "--rows", "a,b", "--grid", str(tmp_path / "x.png")]) == 2
    assert "--rows takes" in capsys.readouterr().err
    assert main(["sample", str(sg_run), "--truncation", "7"]) == 2


def test_truncation_on_a_model_without_styles_is_a_one_line_error(tmp_path, capsys):
    run, _ = train("fashion_mnist_dcgan", ["model.nf=8", "train.steps=2", "train.batch_size=16"], run_dir=tmp_path / "d",
                   data=synthetic_data(n=100), quiet=True)
    assert main(["sample", str(run.path), "--truncation", "0.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "truncation needs a style-based model (stylegan2)" in err
    assert main(["style-mix", str(run.path)]) == 2
    assert "style mixing needs a style-based model (stylegan2)" in capsys.readouterr().err


def test_limit_takes_a_fixed_subset():
    from ganforge.data.from_config import subset

    data = synthetic_data(n=300, labels=True)
    a, b = subset(data, 50), subset(data, 50)
    assert len(a.images) == 50 and (a.images == b.images).all() and (a.labels == b.labels).all()
    assert subset(data, 1000) is data
