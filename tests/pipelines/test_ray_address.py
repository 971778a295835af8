"""`lvdm run --address` joins a Ray cluster that already runs (started here on 127.0.0.1)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import TINY_DEMO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_joins_an_existing_cluster(tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    # Ray's unix sockets live under --temp-dir; pytest's tmp_path is too long a path for them.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    head = subprocess.Popen(
        [
            ray_bin,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            f"--dashboard-port={_free_port()}",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        address = f"127.0.0.1:{port}"
        sets = [a for o in TINY_DEMO for a in ("--set", o)]
        cmd = [
            sys.executable,
            "-m",
            "pipelines.cli",
            "run",
            "--workdir",
            str(tmp_path / "w"),
            "--address",
            address,
        ]
        deadline = time.time() + 120
        while True:  # the head takes a few seconds to accept drivers
            result = subprocess.run(cmd + sets, capture_output=True, text=True, env=env, timeout=180)
            if result.returncode == 0 or time.time() > deadline:
                break
            time.sleep(2)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Connecting to existing Ray cluster" in result.stderr + result.stdout
        assert "Started a local Ray instance" not in result.stderr + result.stdout
        assert "[shard] done" in result.stdout
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
