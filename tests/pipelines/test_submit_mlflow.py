"""A submitted pipeline on a cluster's three services, all real and on 127.0.0.1: a Ray head
(`ray_head`), an S3-protocol store holding the workdir (`s3`), and an `mlflow server` with a
database and its artifacts on the same store. The Ray Job's driver and the Ray Train workers log
over HTTP, artifacts go up through the server (`--serve-artifacts`), and a resubmission resumes
the run: a new parent run, every stage cached, no new stage run."""

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from data_prep import storage
from pipelines.cli import main
from tests.conftest import PIPELINES, S3_BUCKET, TINY_AUTOENCODER, TINY_DEMO
from tests.pipelines.conftest import running_mlflow_server

# Two Ray Train workers of one CPU each (the head has two): only rank 0 may log. No LPIPS, no GAN.
OVERRIDES = TINY_DEMO + [
    *TINY_AUTOENCODER,
    "stages=[shard, train_autoencoder]",
    "autoencoder.loss={perceptual_weight: 0, disc_start: 1000}",
    "autoencoder.train.num_workers=2",
    "autoencoder.train.cpus_per_worker=1",
]


@pytest.fixture(scope="module")
def mlflow_on_s3(s3, tmp_path_factory):
    """The server of README "MLflow on a cluster": its artifacts on the workdir's object store."""
    destination = f"s3://{S3_BUCKET}/mlflow-artifacts"
    root = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(root, "--artifacts-destination", destination) as server:
        yield server, destination


def _submit(ray_head, mlflow_url: str, workdir: str, capsys) -> tuple[str, str]:
    """`lvdm submit --wait`; (its run id, the job's streamed output)."""
    sets = [a for o in [*OVERRIDES, f"mlflow.tracking_uri={mlflow_url}"] for a in ("--set", o)]
    argv = [
        "submit",
        str(PIPELINES / "demo.yaml"),
        "--address",
        ray_head.dashboard,
        "--workdir",
        workdir,
    ]
    code = main([*argv, "--wait", *sets])
    out = capsys.readouterr().out
    job = out.splitlines()[0]
    assert code == 0 and f"job {job}: SUCCEEDED" in out, out[-3000:]
    return job.removeprefix("lvdm-demo-"), out


def _runs(client: MlflowClient) -> tuple[list, dict]:
    """(the parent runs, the stage runs by id) of the `demo` experiment."""
    experiment = client.get_experiment_by_name("demo")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    return parents, {r.info.run_id: r for r in runs if MLFLOW_PARENT_RUN_ID in r.data.tags}


# 75 s on 2 cores (2.5 min when busy): a Ray head, an MLflow server, 2 jobs. In the default run:
# it is issue 13's "submitted job against a real MLflow server".
def test_a_submitted_pipeline_is_tracked_on_the_server_and_a_resubmission_adds_no_stage_run(
    ray_head, mlflow_on_s3, tmp_path, capsys
):
    mlflow_server, destination = mlflow_on_s3
    workdir = f"s3://{S3_BUCKET}/submitted"
    run_id, out = _submit(ray_head, mlflow_server.url, workdir, capsys)
    assert "[shard] done" in out and "[train_autoencoder] done" in out
    client = MlflowClient(mlflow_server.url)
    parents, stage_runs = _runs(client)

    assert len(parents) == 1 and len(stage_runs) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["lvdm.run_id"] == run_id
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["config.yaml"]
    by_stage = {r.data.tags["lvdm.stage"]: r for r in stage_runs.values()}
    assert set(by_stage) == {"shard", "train_autoencoder"}
    for stage, run in by_stage.items():
        assert run.info.status == "FINISHED", stage
        assert run.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id
        [stage_dir] = storage.glob(f"{workdir}/stages/{stage}-*")  # wildcards in the last part only
        manifest_file = storage.join(stage_dir, "manifest.json")
        assert storage.read_json(manifest_file)["mlflow_run_id"] == run.info.run_id
        served = Path(client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path / stage)))
        assert served.read_bytes() == storage.read_bytes(manifest_file), stage

    train = by_stage["train_autoencoder"]
    # Logged by rank 0 of the two workers: one value per step (two ranks logging would give two).
    assert [m.step for m in client.get_metric_history(train.info.run_id, "ae/loss")] == [1, 2, 3, 4]
    for name in ("lr", "clips_per_s", "heldout_psnr"):  # rank 0's logs and previews
        assert name in train.data.metrics, name
    assert "latent_scale" in train.data.metrics  # the stage's driver, inside the Ray Job
    assert train.data.params["autoencoder.train.num_workers"] == "2"
    previews = [a.path for a in client.list_artifacts(train.info.run_id, "previews")]
    assert previews == ["previews/recon_step0000002.mp4", "previews/recon_step0000004.mp4"]
    # The checkpoint went up through the server, into its --artifacts-destination.
    [train_dir] = storage.glob(f"{workdir}/stages/train_autoencoder-*")
    checkpoint = storage.read_bytes(storage.join(train_dir, "autoencoder.pt"))
    downloaded = client.download_artifacts(train.info.run_id, "checkpoint/autoencoder.pt", str(tmp_path))
    assert Path(downloaded).read_bytes() == checkpoint
    # The server wrote it into its --artifacts-destination on the store; the workdir has no
    # embedded MLflow store beside it.
    stored = [f for f in storage.walk_files(destination) if f.endswith("/checkpoint/autoencoder.pt")]
    assert [storage.read_bytes(f) for f in stored] == [checkpoint]
    assert not storage.exists(f"{workdir}/mlartifacts")
    ae_loss_entries = len(client.get_metric_history(train.info.run_id, "ae/loss"))

    # Resubmitting is the retry: a new run (and parent run), every stage cached, no new stage run.
    second_id, out = _submit(ray_head, mlflow_server.url, workdir, capsys)
    assert second_id != run_id
    assert "[shard] cached" in out and "[train_autoencoder] cached" in out
    assert "[shard] done" not in out and "[train_autoencoder] done" not in out
    parents_after, stage_runs_after = _runs(client)
    assert sorted(p.data.tags["lvdm.run_id"] for p in parents_after) == sorted([run_id, second_id])
    assert all(p.info.status == "FINISHED" for p in parents_after)
    assert stage_runs_after.keys() == stage_runs.keys()
    assert len(client.get_metric_history(train.info.run_id, "ae/loss")) == ae_loss_entries
