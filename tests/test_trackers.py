"""log.mlflow / log.wandb: real mirrors of the run folder (a local MLflow file store, a wandb offline folder, each
read back with its own client), failures that warn once and never stop training, and config errors up front."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest
from conftest import FAST, synthetic_data

from ganforge.cli import main
from ganforge.errors import UserError
from ganforge.runs import trackers
from ganforge.runs.rundir import RunDir
from ganforge.training.launch import train

RUN = FAST + ["train.steps=20"]


def _train(tmp_path: Path, *extra: str, name: str = "run", steps: list[str] | None = None) -> Path:
    return train("fashion_mnist_dcgan", (steps or RUN) + list(extra), run_dir=tmp_path / name,
                 data=synthetic_data(n=64), quiet=True)[0].path


def _mlflow_run(uri: str):  # noqa: ANN202
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ganforge")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_mlflow_file_store_mirrors_the_run_and_resume_continues_it(tmp_path, one_torch_thread):
    pytest.importorskip("mlflow")
    uri = f"file:{tmp_path / 'mlruns'}"
    path = _train(tmp_path, f"log.mlflow={uri}", steps=FAST + ["train.steps=10"])
    RunDir(path, tensorboard=False).log_eval({"step": 10, "fid": 42.5, "network": "x", "n": 100})  # a ganforge eval
    train(None, ["train.steps=20"], resume=path, quiet=True)  # continues the same MLflow run
    client, run = _mlflow_run(uri)
    assert run.info.status == "FINISHED" and run.info.run_name == path.name
    assert run.data.params["model.name"] == "dcgan" and run.data.params["log.mlflow"] == uri
    logged = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    history = client.get_metric_history(run.info.run_id, "loss_d")
    assert sorted((m.step, m.value) for m in history) == sorted((r["step"], r["loss_d"]) for r in logged)
    assert [m.step for m in history][-1] == 20
    # eval.jsonl records written while a mirror runs arrive as eval/* (the resumed run's mirror tails from its start)
    arts = {a.path for d in ("", "samples", "checkpoint") for a in client.list_artifacts(run.info.run_id, d)}
    assert {"config.yaml", "samples/step-00000010.png", "samples/step-00000020.png",
            "checkpoint/step-00000020.safetensors", "checkpoint/step-00000020.json"} <= arts
    state = json.loads((path / "trackers.json").read_text())
    assert state["log.mlflow"]["run_id"] == run.info.run_id


def test_eval_records_are_mirrored(tmp_path):
    pytest.importorskip("mlflow")
    uri = f"file:{tmp_path / 'mlruns'}"
    run_dir = tmp_path / "r"
    (run_dir / "samples").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: r\n")
    from ganforge.config import load_config

    cfg = load_config("fashion_mnist_dcgan", [f"log.mlflow={uri}"])
    mirror = trackers.start(run_dir, cfg)
    run = RunDir(run_dir, tensorboard=False)
    run.log_metrics({"step": 3, "loss_d": 0.5})
    run.log_eval({"step": 3, "fid": 12.25, "kid": 0.01, "n": 1000, "network": "lenet", "source": "train"})
    mirror.stop()
    client, r = _mlflow_run(uri)
    assert [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, "eval/fid")] == [(3, 12.25)]
    assert r.data.metrics["eval/kid"] == 0.01 and "eval/n" not in r.data.metrics


def wandb_records(run_dir: Path) -> list:
    """The records of a wandb offline run, parsed with wandb's own protobuf schema (wandb_internal_pb2.Record); the
    .wandb file frames them as a LevelDB log (32 KiB blocks, 7-byte chunk headers) after a 7-byte W&B header."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    out, pos, buf = [], 7, b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            break
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def test_wandb_offline_mirrors_the_run(tmp_path, one_torch_thread):
    pytest.importorskip("wandb")
    path = _train(tmp_path, "log.wandb=offline", "log.project=gf-test")
    for _ in range(40):  # wandb's service process may still be writing the file out after run.finish()
        recs = wandb_records(path)
        kinds = [r.WhichOneof("record_type") for r in recs]
        if "exit" in kinds:
            break
        time.sleep(0.5)
    assert "run" in kinds and "exit" in kinds
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.project == "gf-test" and run.display_name == path.name
    history = [{(i.key or i.nested_key[0]): json.loads(i.value_json) for i in r.history.item} for r in recs
               if r.WhichOneof("record_type") == "history"]
    got = sorted((h["step"], h["loss_d"]) for h in history if "loss_d" in h)
    logged = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    assert got == sorted((r["step"], r["loss_d"]) for r in logged)
    assert sorted(h["step"] for h in history if "samples" in h) == [10, 20]
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["model"]["name"] == "dcgan" and config["log"]["wandb"] == "offline"
    assert any(r.WhichOneof("record_type") == "artifact" and r.artifact.type == "model" for r in recs)


def _warnings(path: Path) -> list[str]:
    return [line for line in (path / "train.log").read_text().splitlines() if "WARNING" in line]


def test_unreachable_server_warns_once_and_training_goes_on(tmp_path, capsys):
    pytest.importorskip("mlflow")
    path = _train(tmp_path, "log.mlflow=http://127.0.0.1:9")
    warned = _warnings(path)
    assert len(warned) == 1 and "log.mlflow: mirroring stopped" in warned[0]
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert RunDir(path, tensorboard=False).latest().step == 20


def test_a_tracker_failing_mid_run_is_dropped_after_one_warning(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    calls = []

    def flaky(self, step, values):  # noqa: ANN001
        calls.append(step)
        raise ConnectionError("server went away")

    monkeypatch.setattr(trackers.MlflowTracker, "metrics", flaky)
    path = _train(tmp_path, f"log.mlflow=file:{tmp_path / 'mlruns'}")
    assert len(calls) == 1  # dropped after the first failure, not retried per record
    warned = _warnings(path)
    assert len(warned) == 1 and "ConnectionError: server went away" in warned[0]
    assert len((path / "metrics.jsonl").read_text().splitlines()) == 4  # the run folder has everything


def test_a_slow_tracker_never_holds_up_training(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setattr(trackers.MlflowTracker, "metrics", lambda self, step, values: time.sleep(60))
    monkeypatch.setattr(trackers, "FINAL_SECONDS", 1.0)
    t0 = time.perf_counter()
    path = _train(tmp_path, f"log.mlflow=file:{tmp_path / 'mlruns'}")
    assert time.perf_counter() - t0 < 55  # 60 s per record would be minutes if training waited for it
    assert RunDir(path, tensorboard=False).latest().step == 20
    assert any("still sending after 1 s" in w for w in _warnings(path))


@pytest.mark.parametrize(("override", "why"), [
    ("log.mlflow=ftp://host/x", "unknown tracking URI scheme 'ftp'"),
    ("log.mlflow=s3://bucket", "unknown tracking URI scheme 's3'"),
    ("log.wandb=maybe", "must be one of offline, online"),
])
def test_bad_tracker_config_is_one_line_before_anything(tmp_path, override, why, capsys):
    with pytest.raises(UserError, match=why):
        _train(tmp_path, override)
    assert not (tmp_path / "run").exists()
    assert main(["train", "fashion_mnist_dcgan", override, "--run-dir", str(tmp_path / "cli")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[0] and not (tmp_path / "cli").exists()


def test_missing_package_is_a_config_error(tmp_path, monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(UserError, match=r"log.wandb needs the wandb package.*ganforge\[wandb\]"):
        _train(tmp_path, "log.wandb=offline")


@pytest.mark.parametrize(("uri", "scheme"), [("file:./mlruns", "file"), ("./mlruns", "file"), ("C:\\runs", "file"),
                                             ("https://mlflow.example:5000", "https"), ("sqlite:///m.db", "sqlite"),
                                             ("postgresql+psycopg2://h/db", "postgresql"), ("databricks", "file")])
def test_uri_schemes(uri, scheme):
    assert trackers.mlflow_scheme(uri) == scheme
