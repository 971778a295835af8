"""A submitted pipeline tracked on a real `mlflow server`, as on a cluster: the Ray Job's driver
and the Ray Train workers log over HTTP, artifacts go up through the server (`--serve-artifacts`),
and a resubmission adds a parent run but no stage run. Servers: `ray_head`, `mlflow_server`."""

import json
from pathlib import Path

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from pipelines.cli import main
from tests.conftest import PIPELINES, TINY_AUTOENCODER, TINY_DEMO

# Two Ray Train workers of one CPU each (the head has two): only rank 0 may log. No LPIPS, no GAN.
OVERRIDES = TINY_DEMO + [
    *TINY_AUTOENCODER,
    "stages=[shard, train_autoencoder]",
    "autoencoder.loss={perceptual_weight: 0, disc_start: 1000}",
    "autoencoder.train.num_workers=2",
    "autoencoder.train.cpus_per_worker=1",
]


def _submit(ray_head, mlflow_url: str, workdir: Path, capsys) -> tuple[str, str]:
    """`lvdm submit --wait`; (its run id, the job's streamed output)."""
    sets = [a for o in [*OVERRIDES, f"mlflow.tracking_uri={mlflow_url}"] for a in ("--set", o)]
    argv = [
        "submit",
        str(PIPELINES / "demo.yaml"),
        "--address",
        ray_head.dashboard,
        "--workdir",
        str(workdir),
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
    ray_head, mlflow_server, tmp_path, capsys
):
    workdir = tmp_path / "w"
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
        manifest_file = next((workdir / "stages").glob(f"{stage}-*/manifest.json"))
        assert json.loads(manifest_file.read_text())["mlflow_run_id"] == run.info.run_id
        served = Path(client.download_artifacts(run.info.run_id, "manifest.json", str(tmp_path / stage)))
        assert served.read_bytes() == manifest_file.read_bytes(), stage

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
    checkpoint = next((workdir / "stages").glob("train_autoencoder-*/autoencoder.pt"))
    downloaded = client.download_artifacts(train.info.run_id, "checkpoint/autoencoder.pt", str(tmp_path))
    assert Path(downloaded).read_bytes() == checkpoint.read_bytes()
    assert [p.read_bytes() for p in mlflow_server.artifacts.rglob("autoencoder.pt")] == [
        checkpoint.read_bytes()
    ]
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlartifacts").exists()
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
