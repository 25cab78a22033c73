"""Evaluating a run folder: its newest checkpoint's generator, through `metrics.evaluate.evaluate_generator`,
logged in RUN_DIR/eval.jsonl. The function behind `ganforge eval RUN_DIR`, `ganforge demo` and the report; it sits
above the metrics (which take a generator, not a folder) because it needs the run-folder layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ganforge.generate import find_checkpoint, generator_of
from ganforge.metrics.evaluate import check_samples_dir, default_network, evaluate_generator
from ganforge.runs import bundle
from ganforge.runs.rundir import RunDir


def evaluate_run(
    run_dir: str | Path, *, metrics: str | list[str] = "fid,kid,is", n: int = 10000, network: str | None = None,
    ref: str | None = None, device: str = "cpu", ema: bool = True, seed: int = 0, inception_weights: str | None = None,
    progress: bool = True, log: bool = True, n_ref: int | None = None, announce: bool = False, resize: str = "legacy",
    quantized: bool = True, standing_stats: bool = True, truncation_psi: float = 1.0,
    save_samples: str | Path | None = None, **ppl: Any,
) -> dict[str, Any]:
    """Metrics of `n` generated images of a run's newest checkpoint, with their protocol; appended to
    RUN_DIR/eval.jsonl (not for a published bundle: it is read-only, its files are hashed). `ppl` passes
    lpips_weights, ppl_space and ppl_sampling through.

    The reference is the whole source by default (`n_ref=None`: the "full" protocol of StyleGAN's
    fid50k_full), computed once and cached, so later evaluations only embed the generated images.
    """
    check_samples_dir(save_samples)  # before loading anything
    found, cfg = find_checkpoint(run_dir)  # read once: the step recorded is the checkpoint's that was scored
    G = generator_of(found, cfg, ema=ema, device=device, standing_stats=standing_stats)
    if announce:
        ref_name = ref or cfg["data"]["source"]
        print(f"evaluating {n:,} samples against {ref_name} ({network or default_network(cfg['data']['source'])} "
              "features)")
    used_ema = getattr(G, "sampled_from", "G") == "G_ema"
    rec = evaluate_generator(G, cfg, metrics=metrics, n=n, network=network, ref=ref, device=device, seed=seed,
                             inception_weights=inception_weights, progress=progress, n_ref=n_ref, resize=resize,
                             quantized=quantized, truncation_psi=truncation_psi, ema=used_ema,
                             standing_stats=getattr(G, "standing_stats", None), save_samples=save_samples,
                             **ppl)
    record = {"time": rec.pop("time"), "step": found.step, **rec, "ema": used_ema}
    if log and not bundle.is_bundle(run_dir):
        RunDir(Path(run_dir), tensorboard=False).log_eval(record)
    return record
