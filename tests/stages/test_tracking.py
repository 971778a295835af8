"""stages/tracking.py on a real SQLite MLflow store: reattaching runs (and a pipeline whose
recorded runs are gone resuming in new ones), the experiment's kind."""

import json
import socket
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.config import load_pipeline
from pipelines.generate_cli import print_outputs
from pipelines.run_record import RunRecord
from pipelines.runner import PipelineError, run_pipeline
from stages import tracking
from stages.shard import FAULT_ENV
from stages.tracking import REPLACES_TAG
from tests.conftest import PIPELINES, TINY_DEMO


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """One SQLite store for the module: creating one (MLflow's migrations) takes seconds."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    return uri, tracking.ensure_experiment(uri, "demo", folder)


def test_a_recorded_run_that_exists_is_reattached(store):
    uri, experiment = store
    first = tracking.start_run(uri, experiment, "shard-abc", {"lvdm.run_id": "r1"})
    tracking.end_run(first, "FAILED")
    warnings: list[str] = []
    again = tracking.start_run(
        uri,
        experiment,
        "shard-abc",
        {"lvdm.run_id": "r2"},
        reattach_run_id=first.run_id,
        warn=warnings.append,
    )
    assert again.run_id == first.run_id and not warnings
    run = MlflowClient(uri).get_run(first.run_id)
    assert run.info.status == "RUNNING" and run.data.tags["lvdm.run_id"] == "r2"


def test_a_recorded_run_the_store_never_held_is_replaced_by_a_new_run_tagged_with_its_id(store):
    uri, experiment = store
    lost = "0123456789abcdef0123456789abcdef"  # from a store that is gone (`ray down`, another machine)
    warnings: list[str] = []
    new = tracking.start_run(
        uri, experiment, "shard-abc", {"lvdm.run_id": "r2"}, reattach_run_id=lost, warn=warnings.append
    )
    assert new.run_id != lost
    assert MlflowClient(uri).get_run(new.run_id).data.tags[tracking.REPLACES_TAG] == lost
    assert len(warnings) == 1 and lost in warnings[0] and "not found" in warnings[0]


def test_a_recorded_run_deleted_in_the_ui_is_replaced_not_revived(store):
    uri, experiment = store
    first = tracking.start_run(uri, experiment, "shard-abc", {})
    MlflowClient(uri).delete_run(first.run_id)
    warnings: list[str] = []
    new = tracking.start_run(
        uri, experiment, "shard-abc", {}, reattach_run_id=first.run_id, warn=warnings.append
    )
    client = MlflowClient(uri)
    assert new.run_id != first.run_id
    assert client.get_run(first.run_id).info.lifecycle_stage == "deleted"
    assert client.get_run(new.run_id).data.tags[tracking.REPLACES_TAG] == first.run_id
    assert len(warnings) == 1 and "deleted" in warnings[0]


def test_the_experiment_opens_in_mlflows_model_training_view(store, tmp_path):
    uri, experiment = store
    client = MlflowClient(uri)
    assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == "custom_model_development"
    # An experiment made before the tag existed gets it; a kind a user picked in the UI stays.
    old = client.create_experiment("old")
    assert tracking.ensure_experiment(uri, "old", tmp_path) == old
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"
    picked = client.create_experiment("picked", tags={"mlflow.experimentKind": "genai_development"})
    tracking.ensure_experiment(uri, "picked", tmp_path)
    assert client.get_experiment(picked).tags["mlflow.experimentKind"] == "genai_development"


def test_links_open_the_model_training_view_without_credentials(store, capsys):
    uri, experiment = store
    query = "?workflowType=machine_learning"
    local = f"http://127.0.0.1:5000/#/experiments/{experiment}{query}"
    assert tracking.ui_link(uri, experiment) == local
    embedded = f"mlflow ui --backend-store-uri {uri}, then open {local}"
    assert tracking.where_to_look(uri, experiment) == embedded
    server = "https://alice:s3cr3t@mlflow.example.org:8443/"
    assert tracking.ui_link(server, "7") == f"https://mlflow.example.org:8443/#/experiments/7{query}"
    assert tracking.ui_link("databricks", "7") is None
    # What `lvdm run` / `lvdm generate` print last, from the run's record.
    record = RunRecord(run_id="r1", pipeline="demo.yaml", name="demo", workdir="/unused")
    record.mlflow_tracking_uri, record.mlflow_experiment_id = uri, experiment
    record.mlflow_parent_run_id = "p1"
    print_outputs(record)
    assert capsys.readouterr().out == f"MLflow: {embedded}  (parent run p1)\n"


def test_a_stage_whose_mlflow_runs_were_deleted_resumes_in_new_runs_keeping_its_chunks(
    ray_cluster, store, tmp_path, monkeypatch
):
    config = load_pipeline(PIPELINES / "demo.yaml", [*TINY_DEMO, f"mlflow.tracking_uri={store[0]}"])
    monkeypatch.setenv(FAULT_ENV, "train-000001:1")
    with pytest.raises(PipelineError, match="train-000001"):
        run_pipeline(config, tmp_path, "demo.yaml", echo=lambda *_: None)
    monkeypatch.delenv(FAULT_ENV)
    record = RunRecord.load(tmp_path.resolve(), sorted((tmp_path / "runs").iterdir())[-1].name)
    out = Path(record.stages["shard"].output)
    lost_stage = json.loads((out / "stage.json").read_text())["mlflow_run_id"]
    lost_parent = record.mlflow_parent_run_id
    # Deleted in the UI; a store lost whole (`ray down`, another machine) reads "not found" instead.
    client = MlflowClient(record.mlflow_tracking_uri)
    client.delete_run(lost_stage)
    client.delete_run(lost_parent)
    chunks = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert chunks, "the failed run wrote no complete chunk to keep"

    lines: list[str] = []
    resumed = run_pipeline(config, tmp_path, "demo.yaml", run_id=record.run_id, echo=lines.append)

    assert resumed.status == "done" and resumed.stages["shard"].status == "done"
    assert resumed.host == socket.gethostname()  # `lvdm status` tells a run driven elsewhere by it
    assert all(out.joinpath(name).stat().st_mtime_ns == mtime for name, mtime in chunks.items())
    stage_run = resumed.stages["shard"].mlflow_run_id
    assert stage_run != lost_stage and resumed.mlflow_parent_run_id != lost_parent
    assert json.loads((out / "manifest.json").read_text())["mlflow_run_id"] == stage_run
    assert client.get_run(stage_run).data.tags[REPLACES_TAG] == lost_stage
    assert client.get_run(resumed.mlflow_parent_run_id).data.tags[REPLACES_TAG] == lost_parent
    assert client.get_run(stage_run).info.status == "FINISHED"
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 2 and lost_stage in warnings[1] and "[shard]" in warnings[1]
