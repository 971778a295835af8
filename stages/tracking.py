"""MLflow in a few visible calls: a parent run per pipeline run, a child run per stage.

The embedded store is SQLite under the workdir (MLflow 3 refuses the old file store), with
artifacts beside it; a cluster points `mlflow.tracking_uri` at a server instead. Runs are
addressed by id through `MlflowClient`, never through the fluent "active run" stack, so a
Ray worker process can log to the stage's run with just the URI and the id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from stages.contract import Tracking


def default_tracking_uri(workdir: Path) -> str:
    return f"sqlite:///{workdir.resolve() / 'mlflow.db'}"


def ensure_experiment(tracking_uri: str, name: str, workdir: Path) -> str:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # With SQLite the default artifact root is ./mlruns of whatever cwd: pin it to the workdir.
    location = (workdir.resolve() / "mlartifacts").as_uri() if tracking_uri.startswith("sqlite") else None
    return client.create_experiment(name, artifact_location=location)


def start_run(
    tracking_uri: str,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    reattach_run_id: str | None = None,
) -> Tracking:
    """Open a run, or reopen `reattach_run_id` so a resumed stage keeps one run."""
    client = MlflowClient(tracking_uri)
    if reattach_run_id:
        client.update_run(reattach_run_id, status="RUNNING")
        return Tracking(tracking_uri, reattach_run_id)
    all_tags = {MLFLOW_RUN_NAME: name, **tags}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return Tracking(tracking_uri, run.info.run_id)


def end_run(tracking: Tracking, status: str) -> None:
    MlflowClient(tracking.tracking_uri).set_terminated(tracking.run_id, status=status)


def log_params(tracking: Tracking, params: dict[str, Any]) -> None:
    """Log a nested dict flattened to dotted keys; re-logging an identical value is a no-op."""
    client = MlflowClient(tracking.tracking_uri)
    existing = client.get_run(tracking.run_id).data.params
    flat = {k: str(v)[:6000] for k, v in _flatten(params).items()}
    fresh = [Param(k, v) for k, v in flat.items() if k not in existing]
    for start in range(0, len(fresh), 100):
        client.log_batch(tracking.run_id, params=fresh[start : start + 100])


def log_metrics(tracking: Tracking, metrics: dict[str, float], step: int) -> None:
    import time

    now = int(time.time() * 1000)
    batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    MlflowClient(tracking.tracking_uri).log_batch(tracking.run_id, metrics=batch)


def log_artifact(tracking: Tracking, path: Path, artifact_path: str | None = None) -> None:
    MlflowClient(tracking.tracking_uri).log_artifact(tracking.run_id, str(path), artifact_path)


def set_tags(tracking: Tracking, tags: dict[str, str]) -> None:
    client = MlflowClient(tracking.tracking_uri)
    for key, value in tags.items():
        client.set_tag(tracking.run_id, key, value)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
