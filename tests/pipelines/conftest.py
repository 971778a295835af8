"""Real servers for the pipeline tests, all on 127.0.0.1 and free ports: a Ray head (`ray start
--head`, with its dashboard / Jobs API) and an `mlflow server`. Each is started once and shared."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

VENV_BIN = Path(sys.executable).parent
# Every port `ray start --head` opens besides --port and --dashboard-port. Their defaults are
# fixed (52365, 8080, ...): another Ray on this machine may hold them, and a head without its
# job agent answers every submission "No available agent".
RAY_HEAD_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "ray-client-server-port",
    "node-manager-port",
    "object-manager-port",
)


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group started here, SIGKILL it if it lingers."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def _wait_until(ready, process: subprocess.Popen, log: Path, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            ready()
            return
        except Exception as err:
            if process.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {process.returncode}" if process.poll() is not None else "timed out"
                _stop(process, 15)
                tail = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
                pytest.fail(f"{what} {why} ({type(err).__name__}: {err}); its log:\n{tail}")
            time.sleep(1)


@dataclass(frozen=True)
class RayHead:
    address: str  # the GCS, for drivers: `lvdm run --address 127.0.0.1:PORT`
    dashboard: str  # the dashboard and Jobs API, for `lvdm submit --address http://127.0.0.1:PORT`


@pytest.fixture(scope="session")
def ray_head(s3):
    """`ray start --head` on 127.0.0.1 with two CPUs, every port free-picked; started once for
    the session, since a start costs ~15 s on 2 cores. It reaches the session's S3 server (`s3`
    sets AWS_ENDPOINT_URL and keys first), as a cluster's nodes reach their object store. The
    dashboard (Jobs API) listens on 127.0.0.1 only; Ray's GCS and raylet gRPC servers listen on
    all interfaces whatever --node-ip-address says (no `ray start` option changes that)."""
    # The job's entrypoint runs `python` from the head's PATH: this environment's.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    # Short: Ray's unix sockets live under --temp-dir, and pytest's tmp_path is too long for them.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    port, dashboard = free_port(), free_port()
    log = temp_dir / "ray-start.log"
    with log.open("wb") as out:
        head = subprocess.Popen(
            [
                str(VENV_BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--num-cpus=2",
                "--num-gpus=0",
                "--object-store-memory=300000000",  # a cap; tiny pipelines, a shared test machine
                "--disable-usage-stats",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dashboard}",
                f"--temp-dir={temp_dir}",
                *(f"--{name}={free_port()}" for name in RAY_HEAD_PORTS),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    head_ = RayHead(address=f"127.0.0.1:{port}", dashboard=f"http://127.0.0.1:{dashboard}")
    try:
        from ray.job_submission import JobSubmissionClient

        # The dashboard answers once the GCS is up; the job agent may come a little later, which
        # `lvdm submit` waits for itself.
        _wait_until(
            lambda: JobSubmissionClient(head_.dashboard).list_jobs(), head, log, "ray start --head", 120
        )
        yield head_
    finally:
        # `ray start --block` takes ~30 s to stop its processes gracefully; they are all in this
        # process group and hold nothing worth a graceful stop.
        _stop(head, 3)
        shutil.rmtree(temp_dir, ignore_errors=True)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    artifacts: Path  # --artifacts-destination: where the server writes what clients upload


@contextmanager
def running_mlflow_server(root: Path, *flags: str) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1: SQLite store, artifacts proxied (`--serve-artifacts`) to a
    folder under `root`, one worker process, plus `flags`."""
    port = free_port()
    log = root / "server.log"
    command = [str(VENV_BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--serve-artifacts", "--artifacts-destination", str(root / "artifacts")]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", *flags]
    with log.open("wb") as out:
        # A new session: its uvicorn workers go with it.
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until(
            lambda: urllib.request.urlopen(f"{url}/health", timeout=2).close(),
            server,
            log,
            "mlflow server",
            120,
        )
        yield MlflowServer(url=url, artifacts=root / "artifacts")
    finally:
        _stop(server, 5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """One `running_mlflow_server` per test module."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server
