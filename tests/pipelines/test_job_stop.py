"""`ray job stop` on a submitted pipeline mid-training: its MLflow runs end KILLED, not FAILED.

The job's driver takes SIGTERM as Ctrl-C (pipelines.submit.job_main), and ensure_ray puts that
handler back after ray.init replaces it (tests/stages/test_ray_session.py checks that part in
seconds; this is the whole path through a real Ray head, its job supervisor and MLflow).
"""

import time

import pytest
from mlflow import MlflowClient

from pipelines.run_record import RunRecord
from pipelines.submit import submit
from tests.conftest import PIPELINES
from tests.pipelines.test_object_store import OVERRIDES

# Long enough that the stop lands mid-training.
TRAINING = [o for o in OVERRIDES if not o.startswith("autoencoder.train=")] + [
    "autoencoder.train={steps: 2000, batch_size: 2, checkpoint_every: 500, log_every: 10,"
    " preview_every: 5000, loader_workers: 0, normalisation_clips: 4, heldout_clips: 2, max_failures: 0}"
]


@pytest.mark.slow  # a Ray head, a job through shard into training: about a minute on 2 cores
def test_ray_job_stop_mid_training_ends_the_parent_and_stage_runs_killed(ray_head, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    workdir = tmp_path / "w"
    job, run_id = submit(
        str(PIPELINES / "demo.yaml"),
        address=ray_head.dashboard,
        workdir=str(workdir),
        overrides=TRAINING,
        until=None,
        echo=lambda *_: None,
    )
    client = JobSubmissionClient(ray_head.dashboard)
    deadline = time.monotonic() + 300
    while not list(workdir.glob("stages/train_autoencoder-*/stage.json")):
        status = client.get_job_status(job)
        assert not status.is_terminal(), client.get_job_logs(job)[-3000:]
        assert time.monotonic() < deadline, "training never started"
        time.sleep(1)
    time.sleep(3)  # the fit is under way
    client.stop_job(job)
    while not (status := client.get_job_status(job)).is_terminal():
        time.sleep(1)
    assert status == JobStatus.STOPPED

    record = RunRecord.load(str(workdir), run_id)
    mlflow = MlflowClient(record.mlflow_tracking_uri)
    logs = client.get_job_logs(job)[-3000:]
    assert mlflow.get_run(record.mlflow_parent_run_id).info.status == "KILLED", logs
    stage = record.stages["train_autoencoder"]
    assert stage.status == "failed" and "interrupted" in (stage.error or ""), logs
    assert mlflow.get_run(stage.mlflow_run_id).info.status == "KILLED", logs
