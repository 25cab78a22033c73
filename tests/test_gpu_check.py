"""benchmarks/gpu_check.py: the table and exit code, and the command end to end with only its `env` check (fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
from gpu_check import Result, exit_code, table  # noqa: E402


def test_table_and_exit_code():
    ok = Result("a", "ok", numbers={"img_s": 1234.5678, "x": [1.0, float("nan")], "_hidden": 1}, seconds=3.4)
    skipped = Result("b", "skipped", "no CUDA GPU visible")
    text = table([ok, skipped])
    assert "| a | ok | img_s=1235; x=[1, nan] | 3 |" in text
    assert "| b | skipped (no CUDA GPU visible) |  | 0 |" in text
    assert exit_code([ok, skipped]) == 0
    assert exit_code([ok, Result("c", "FAIL", "boom")]) == 1
    assert exit_code([ok, Result("d")]) == 1  # not reached: the check did not run, which is no success


def test_every_check_has_a_unique_name_and_a_timeout_within_the_deadline():
    names = [c.name for c in gpu_check.checks(90)]
    assert len(names) == len(set(names)) and {"pytest-cuda", "torchrun-nccl", "fmnist-demo"} <= set(names)
    assert all(0 < c.timeout <= 300 and c.expected <= c.timeout for c in gpu_check.checks(90))


def test_command_runs_without_cuda_and_writes_its_outputs(tmp_path):
    """Only the env check (--only with no name): the parent, a child process, the outputs and the exit code."""
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--only", "",
                        "--out", str(out), "--deadline", "120"], capture_output=True, text=True, timeout=180,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads((out / "gpu_check.json").read_text())
    by_name = {r["name"]: r for r in doc["results"]}
    assert by_name["env"]["status"] == "ok" and "torch" in by_name["env"]["numbers"]
    assert by_name["pytest-cuda"]["status"] == "skipped"
    assert "| env | ok |" in (out / "gpu_check.md").read_text()
    assert "===== env" in (out / "gpu_check.log").read_text()
