"""A stage that asks more than the cluster has fails before any worker starts, saying what fits."""

import time

import pytest

from pipelines.config import load_pipeline
from stages.cluster_check import AUTOSCALER_ENV, ClusterTooSmallError, check_tasks, check_training
from tests.conftest import PIPELINES

# The paper's request: 8 workers, one GPU each, on the test session's 2-CPU, GPU-less cluster.
PAPER = ["data.root=/data/ucf101", "train_uncond.train={num_workers: 8, use_gpu: true, cpus_per_worker: 1}"]


def _config(*overrides: str):
    return load_pipeline(PIPELINES / "ucf101.yaml", [*PAPER, *overrides])


def test_gpu_request_on_a_cpu_cluster_names_stage_request_cluster_and_the_fitting_set(
    ray_cluster, monkeypatch
):
    monkeypatch.delenv(AUTOSCALER_ENV, raising=False)
    config = _config()
    started = time.perf_counter()
    with pytest.raises(ClusterTooSmallError) as err:
        check_training("train_uncond", config, config.train_uncond.train)
    assert time.perf_counter() - started < 10  # no 60 s wait for a worker group
    message = str(err.value)
    for part in (
        "'train_uncond'",
        "8 Ray Train workers × {CPU: 1, GPU: 1}",
        "train_uncond.train.num_workers=8",
        "train_uncond.train.use_gpu=true",
        "train_uncond.train.cpus_per_worker=1",
        "{CPU: 2, GPU: 0}",
        "room for 0",
        "--set train_uncond.train.num_workers=2 --set train_uncond.train.use_gpu=false",
        "no autoscaler",
    ):
        assert part in message, (part, message)


def test_too_many_cpus_per_worker_suggests_what_one_node_holds(ray_cluster, monkeypatch):
    monkeypatch.delenv(AUTOSCALER_ENV, raising=False)
    config = _config("autoencoder.train={num_workers: 1, cpus_per_worker: 4}")
    with pytest.raises(
        ClusterTooSmallError,
        match=r"--set autoencoder\.train\.num_workers=1 "
        r"--set autoencoder\.train\.cpus_per_worker=2",
    ):
        check_training("train_autoencoder", config, config.autoencoder.train)


def test_a_request_that_fits_passes_silently(ray_cluster, capsys):
    config = _config("train_uncond.train={num_workers: 2, use_gpu: false}")
    check_training("train_uncond", config, config.train_uncond.train)
    assert capsys.readouterr().out == ""


def test_with_an_autoscaler_it_says_it_waits_and_for_how_long(ray_cluster, monkeypatch):
    monkeypatch.setenv(AUTOSCALER_ENV, "1")
    monkeypatch.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "90")
    config = _config()
    lines: list[str] = []
    check_training("train_uncond", config, config.train_uncond.train, echo=lines.append)
    assert len(lines) == 1 and "Waiting for the autoscaler" in lines[0] and "every 90 s" in lines[0]


def test_the_local_cluster_is_not_taken_for_an_autoscaling_one(ray_cluster, monkeypatch):
    """The head's monitor runs a read-only provider here: detection must say no autoscaler."""
    from stages.cluster_check import autoscaler_running

    monkeypatch.delenv(AUTOSCALER_ENV, raising=False)
    deadline = time.time() + 15  # the monitor's first report takes a few seconds
    while time.time() < deadline:
        from ray.experimental.internal_kv import _internal_kv_get

        if _internal_kv_get("__autoscaling_status"):
            break
        time.sleep(1)
    assert autoscaler_running() is False


def test_gpu_tasks_on_a_cpu_cluster_name_the_setting(ray_cluster, monkeypatch):
    monkeypatch.delenv(AUTOSCALER_ENV, raising=False)
    with pytest.raises(ClusterTooSmallError, match=r"--set cache_latents\.use_gpu=false"):
        check_tasks("cache_latents", "cache_latents.use_gpu=true", {"CPU": 1, "GPU": 1})
    check_tasks("cache_latents", "cache_latents.use_gpu=false", {"CPU": 1})


def test_a_pipeline_asking_for_gpus_fails_at_the_stage_before_any_worker_starts(
    ray_cluster, tmp_path, monkeypatch
):
    """The check is wired into every Ray Train stage: `lvdm run` reports it as the stage's error."""
    from pipelines.runner import PipelineError, run_pipeline
    from tests.conftest import TINY_AUTOENCODER, TINY_DEMO

    monkeypatch.delenv(AUTOSCALER_ENV, raising=False)
    overrides = TINY_DEMO + TINY_AUTOENCODER + ["stages=[shard, train_autoencoder]"]
    overrides += [
        "autoencoder.loss={perceptual_weight: 0, disc_start: 1000}",
        "autoencoder.train.use_gpu=true",
    ]
    config = load_pipeline(PIPELINES / "demo.yaml", overrides)
    with pytest.raises(PipelineError) as err:
        run_pipeline(config, tmp_path, "demo.yaml", echo=lambda *_: None)
    message = str(err.value)
    assert "stage 'train_autoencoder' failed: ClusterTooSmallError" in message
    assert "--set autoencoder.train.num_workers=1 --set autoencoder.train.use_gpu=false" in message
    assert not list((tmp_path / "stages").glob("train_autoencoder-*/ray/*"))  # no Ray Train run began


def test_a_local_workdir_is_refused_only_where_another_node_could_write_to_it(monkeypatch):
    from stages.cluster_check import SHARED_WORKDIR_ENV, Node, WorkdirUnreachableError, check_workdir_reach

    monkeypatch.delenv(SHARED_WORKDIR_ENV, raising=False)
    one, two = [Node("10.0.0.1", {"CPU": 8})], [Node("10.0.0.1", {"CPU": 8}), Node("10.0.0.2", {"GPU": 1})]
    check_workdir_reach("/home/me/lvdm-work", one, autoscaler=False)
    check_workdir_reach("s3://bucket/lvdm-work", two, autoscaler=True)
    for nodes, autoscaler in ((two, False), (one, True)):
        for workdir in ("/home/me/lvdm-work", "file:///home/me/lvdm-work"):
            with pytest.raises(WorkdirUnreachableError, match="10.0.0.1.*--workdir s3://BUCKET/lvdm-work"):
                check_workdir_reach(workdir, nodes, autoscaler)
    monkeypatch.setenv(SHARED_WORKDIR_ENV, "1")  # an NFS mount at the same path on every node
    check_workdir_reach("/mnt/shared/lvdm-work", two, autoscaler=True)
