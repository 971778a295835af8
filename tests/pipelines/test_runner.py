"""The stage contract end to end on the shard stage: cache, rerun, failure, resume, MLflow."""

import json
import socket
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from data_prep.index import read_index
from pipelines.config import load_pipeline
from pipelines.run_record import RunRecord, list_runs
from pipelines.runner import PipelineError, plan, run_pipeline, stage_dir, stage_keys
from stages.shard import FAULT_ENV
from tests.conftest import PIPELINES, TINY_DEMO
from tests.data_prep.test_atomic import hold_lock


def _config(*extra: str):
    return load_pipeline(PIPELINES / "demo.yaml", TINY_DEMO + list(extra))


def _run(config, workdir: Path, **kwargs) -> RunRecord:
    return run_pipeline(config, workdir, "demo.yaml", echo=lambda *_: None, **kwargs)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_second_run_is_cached_and_does_no_work(ray_cluster, tmp_path):
    first = _run(_config(), tmp_path)
    out = Path(first.stages["shard"].output)
    before = _mtimes(out)
    second = _run(_config(), tmp_path)
    assert first.stages["shard"].status == "done"
    assert second.stages["shard"].status == "cached"
    assert _mtimes(out) == before
    assert second.stages["shard"].output == first.stages["shard"].output


def test_changing_a_section_changes_the_key_and_reruns(ray_cluster, tmp_path):
    first = _run(_config(), tmp_path)
    second = _run(_config("shard.crf=30"), tmp_path)
    assert second.stages["shard"].status == "done"
    assert second.stages["shard"].key != first.stages["shard"].key


def test_injected_chunk_failure_fails_the_stage_then_rerun_writes_every_sample_once(
    ray_cluster, tmp_path, monkeypatch
):
    config = _config()
    monkeypatch.setenv(FAULT_ENV, "train-000001:1")
    with pytest.raises(PipelineError, match=r"stage 'shard' failed.*train-000001"):
        _run(config, tmp_path)
    record = RunRecord.load(tmp_path.resolve(), sorted((tmp_path / "runs").iterdir())[-1].name)
    assert record.status == "failed" and record.stages["shard"].status == "failed"
    out = Path(record.stages["shard"].output)
    assert not (out / "manifest.json").exists()
    assert not (out / "train-000001.tar").exists(), "a failed chunk must leave no shard"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "no temporary files left behind"
    survivors = _mtimes(out)

    monkeypatch.delenv(FAULT_ENV)
    resumed = _run(config, tmp_path, run_id=record.run_id)  # what `lvdm resume RUN` does
    assert resumed.status == "done" and resumed.stages["shard"].status == "done"
    after = _mtimes(out)
    untouched = [n for n in survivors if n.endswith(".tar") and n != "train-000001.tar"]
    assert untouched and all(after[n] == survivors[n] for n in untouched), "complete chunks were redone"
    index = read_index(out / "index.parquet").to_pylist()
    keys = [row["key"] for row in index]
    assert len(keys) == len(set(keys)) == 8
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["outputs"]["counts"] == {
        "found": 8,
        "written": 8,
        "skipped": 0,
        "written_train": 6,
        "written_test": 2,
    }
    # The resumed stage reattached to its MLflow run instead of opening a second one.
    assert manifest["mlflow_run_id"] == record.stages["shard"].mlflow_run_id


def test_mlflow_holds_parent_and_child_runs_with_config_and_manifest(ray_cluster, tmp_path):
    record = _run(_config(), tmp_path)
    client = MlflowClient(record.mlflow_tracking_uri)
    parent = client.get_run(record.mlflow_parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["lvdm.pipeline"] == "demo" and parent.data.tags["lvdm.run_id"] == record.run_id
    assert "config.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    child = client.get_run(record.stages["shard"].mlflow_run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.params["data.resolution"] == "32"
    assert child.data.metrics["videos_written"] == 8
    assert "manifest.json" in [a.path for a in client.list_artifacts(child.info.run_id)]


def test_until_and_unknown_stages():
    config = _config()
    assert [s.name for s in plan(config, until="shard")] == ["shard"]
    with pytest.raises(PipelineError, match="not a stage"):
        plan(config, until="evaluate")
    with pytest.raises(PipelineError, match="unknown stage"):
        plan(_config("stages=[shard, bogus]"))


def test_unreachable_mlflow_server_fails_fast_naming_the_uri_and_records_the_run_failed(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
    started = time.monotonic()
    with pytest.raises(PipelineError, match=rf"mlflow.tracking_uri {uri}: no MLflow server answers") as info:
        _run(_config(f"mlflow.tracking_uri={uri}"), tmp_path)
    assert time.monotonic() - started < 30, "MLflow's own retries run for minutes"
    assert "mlflow server" in str(info.value) and "--set mlflow.tracking_uri" in str(info.value)
    [run_id] = list_runs(tmp_path.resolve())
    record = RunRecord.load(tmp_path.resolve(), run_id)
    assert record.status == "failed" and uri in record.error


def test_stage_locked_by_another_process_fails_naming_the_folder_and_its_holder(tmp_path):
    config = _config()
    stages = plan(config)
    out = stage_dir(tmp_path.resolve(), stages[0], stage_keys(stages, config)["shard"])
    holder = hold_lock(out)  # another run, in another process, writing the same stage
    try:
        with pytest.raises(PipelineError, match=r"stage 'shard': .* is being written by another run") as info:
            _run(config, tmp_path)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert str(out) in str(info.value) and "run-A" in str(info.value) and str(holder.pid) in str(info.value)
    [run_id] = list_runs(tmp_path.resolve())
    record = RunRecord.load(tmp_path.resolve(), run_id)
    assert record.status == "failed" and record.stages["shard"].status == "failed"


def test_an_mlflow_server_that_refuses_our_host_header_fails_fast_naming_allowed_hosts(tmp_path):
    """MLflow 3 answers /health to anyone but refuses API calls whose Host it does not allow."""
    from pipelines.runner import _check_tracking_server
    from tests.pipelines.conftest import running_mlflow_server

    with running_mlflow_server(tmp_path, "--allowed-hosts", "mlflow:5000") as server:
        with pytest.raises(PipelineError) as caught:
            _check_tracking_server(server.url)
    message = str(caught.value)
    host = server.url.removeprefix("http://")
    assert f"refuses requests addressed to {host!r}" in message
    assert f"--allowed-hosts {host}" in message
