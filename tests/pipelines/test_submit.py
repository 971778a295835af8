"""`lvdm submit` against a real Ray head with its Jobs API on 127.0.0.1 (started here)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.conftest import PIPELINES, TINY_DEMO
from tests.pipelines.test_ray_address import _free_port

AGENT_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "ray-client-server-port",
)


@pytest.fixture(scope="module")
def jobs_api():
    """`ray start --head` with its dashboard (the Jobs API) on 127.0.0.1; yields its URL."""
    venv_bin = str(Path(sys.executable).parent)
    # The job's entrypoint runs `python` from the head's PATH: this environment's.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": venv_bin + os.pathsep + os.environ["PATH"]}
    port, dashboard = _free_port(), _free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's unix sockets live there
    head = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("ray")),
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--temp-dir={temp_dir}",
            # Off the fixed defaults (52365, ...): another Ray on this machine may hold them, and
            # a head without its job agent answers every submission "No available agent".
            *(f"--{name}={_free_port()}" for name in AGENT_PORTS),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard}"
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 120
        while True:  # the dashboard takes a few seconds to answer
            try:
                JobSubmissionClient(url).list_jobs()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(2)
        yield url
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=15)
        except subprocess.TimeoutExpired:  # `ray start --block` can take half a minute to stop
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _submit(url: str, workdir: Path) -> list[str]:
    sets = [a for o in TINY_DEMO for a in ("--set", o)]
    return [
        "submit",
        str(PIPELINES / "demo.yaml"),
        "--address",
        url,
        "--workdir",
        str(workdir),
        "--wait",
        *sets,
    ]


def test_submitted_pipeline_succeeds_and_a_resubmission_resumes_it(jobs_api, tmp_path, capsys):
    assert main(_submit(jobs_api, tmp_path / "w")) == 0
    out = capsys.readouterr().out
    first_id = out.splitlines()[0]
    assert first_id.startswith("lvdm-demo-") and f"job {first_id}: SUCCEEDED" in out
    assert "[shard] done" in out
    manifests = list((tmp_path / "w" / "stages").glob("shard-*/manifest.json"))
    assert len(manifests) == 1
    run_id = first_id.removeprefix("lvdm-demo-")
    assert (tmp_path / "w" / "runs" / run_id / "config.yaml").is_file()  # the resolved config, recorded

    # Ray never retries a job: submitting again is the retry, and complete stages are skipped.
    assert main(_submit(jobs_api, tmp_path / "w")) == 0
    out = capsys.readouterr().out
    second_id = out.splitlines()[0]
    assert second_id != first_id and "[shard] cached" in out and "[shard] done" not in out
    assert list((tmp_path / "w" / "stages").glob("shard-*/manifest.json")) == manifests

    assert main(["logs", first_id, "--address", jobs_api]) == 0
    assert "[shard] done" in capsys.readouterr().out


def test_a_failed_job_gives_a_nonzero_exit(jobs_api, tmp_path, capsys):
    args = _submit(jobs_api, tmp_path / "w") + ["--set", "data.synthetic.videos={train: 0}"]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "error: stage 'shard' failed" in out and ": FAILED" in out  # the job's own error, streamed
