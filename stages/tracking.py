"""MLflow in a few visible calls: a parent run per pipeline run, a child run per stage.

The embedded store is SQLite under the workdir (MLflow 3 refuses the old file store), with
artifacts beside it; a cluster points `mlflow.tracking_uri` at a server instead. A workdir on
an object store cannot hold a SQLite file: its embedded store keeps the SQLite file on this
machine (`~/.cache/lvdm/mlflow/`, keyed by the workdir URI) and the artifacts in the workdir
on the store (MLflow writes them with boto3, which reads the same AWS_* variables as pyarrow). Runs are
addressed by id through `MlflowClient`, never through the fluent "active run" stack, so a
Ray worker process can log to the stage's run with just the URI and the id.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import LifecycleStage, Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from data_prep import storage
from lvdm.credentials import strip_userinfo
from stages.contract import Tracking

REPLACES_TAG = "lvdm.replaces_mlflow_run_id"  # on a run started because the recorded one was lost
# MLflow's experiment kind (its front end's ExperimentKind enum): model training, not GenAI.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# The MLflow 3.17 UI opens an experiment in the view its URL's `workflowType` names, else in the one
# this browser showed last (GenAI in a fresh one); it does not read the kind tag for that. So every
# link the pipeline gives asks for the Model training view (runs table, loss charts).
TRAINING_VIEW_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves an embedded store by default


def ui_link(tracking_uri: str, experiment_id: str) -> str | None:
    """The URL that opens the experiment in MLflow's Model training view.

    A server's own address (without `user:password@`); for the embedded SQLite store, the
    address `mlflow ui --backend-store-uri <uri>` serves it at. None for a store without a UI.
    """
    if tracking_uri.startswith("sqlite"):
        base = LOCAL_UI
    elif tracking_uri.startswith(("http://", "https://")):
        base = strip_userinfo(tracking_uri).rstrip("/")
    else:
        return None
    return f"{base}/#/experiments/{experiment_id}?{TRAINING_VIEW_QUERY}"


def where_to_look(tracking_uri: str, experiment_id: str) -> str:
    """One line telling a user how to open the pipeline's runs in the Model training view."""
    link = ui_link(tracking_uri, experiment_id)
    shown = strip_userinfo(tracking_uri)
    if link is None:
        return f"{shown} (experiment {experiment_id})"
    if tracking_uri.startswith("sqlite"):
        return f"mlflow ui --backend-store-uri {shown}, then open {link}"
    return link


def default_tracking_uri(workdir: storage.Location) -> str:
    if not storage.is_uri(workdir):
        return f"sqlite:///{storage.local(workdir).resolve() / 'mlflow.db'}"
    folder = storage.machine_folder("mlflow", "LVDM_MLFLOW_DIR", workdir)
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def ensure_experiment(tracking_uri: str, name: str, workdir: storage.Location) -> str:
    """The pipeline's experiment (created on first use), marked as model training.

    `EXPERIMENT_KIND_TAG` is MLflow 3's record of an experiment's kind (its front end's
    ExperimentKind); an existing experiment gets it too, unless a user has picked a kind. The
    3.17.2 UI itself picks the view from its GenAI / Model training switch (`?workflowType=
    machine_learning`), not from the tag: the README says so.
    """
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    # With SQLite the default artifact root is ./mlruns of whatever cwd: pin it to the workdir.
    location = None
    if tracking_uri.startswith("sqlite"):
        root = storage.join(workdir, "mlartifacts")
        location = root if storage.is_uri(root) else storage.local(root).resolve().as_uri()
    return client.create_experiment(
        name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )


def start_run(
    tracking_uri: str,
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    parent_run_id: str | None = None,
    reattach_run_id: str | None = None,
    warn: Callable[[str], None] = warnings.warn,
) -> Tracking:
    """Open a run, or reopen `reattach_run_id` so a resumed stage keeps one run.

    A reopened run moves under `parent_run_id` and takes `tags` (the current pipeline run's id):
    a resubmitted pipeline is a new parent run, and its stages should be found under it. A run
    the store no longer holds (or holds deleted) cannot be reopened: `warn` says so and a new run
    starts, tagged with the lost id, rather than failing the same way on every resume.
    """
    client = MlflowClient(tracking_uri)
    all_tags = {MLFLOW_RUN_NAME: name, **tags}
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    lost = _why_not_reattachable(client, reattach_run_id) if reattach_run_id else None
    if lost is not None:
        # The store lost it (`ray down` took the head's SQLite, another store, another machine's
        # cache, deleted in the UI): the work on storage is intact, so a new run carries on.
        warn(
            f"MLflow run {reattach_run_id} of {name} is {lost} in {strip_userinfo(tracking_uri)}: "
            "logging to a new run "
            f"(tagged {REPLACES_TAG}={reattach_run_id}); the work done so far is kept"
        )
        all_tags[REPLACES_TAG] = reattach_run_id
        reattach_run_id = None
    if reattach_run_id:
        client.update_run(reattach_run_id, status="RUNNING")
        for key, value in all_tags.items():
            client.set_tag(reattach_run_id, key, value)
        return Tracking(tracking_uri, reattach_run_id)
    run = client.create_run(experiment_id, run_name=name, tags=all_tags)
    return Tracking(tracking_uri, run.info.run_id)


def _why_not_reattachable(client: MlflowClient, run_id: str) -> str | None:
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return "not found"
        raise
    return "deleted" if run.info.lifecycle_stage == LifecycleStage.DELETED else None


def end_run(tracking: Tracking, status: str) -> None:
    """End the run. With a server, MLflow prints its own "View run at" links here, which open the
    GenAI view; they stay off (unless the user set MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT) and the
    runner prints `where_to_look` instead."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
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


def log_artifact(tracking: Tracking, path: storage.Location, artifact_path: str | None = None) -> None:
    """Attach a file (local or in an object-store workdir) to the run."""
    with storage.local_copy(path) as local_path:
        MlflowClient(tracking.tracking_uri).log_artifact(tracking.run_id, str(local_path), artifact_path)


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
