"""`lvdm run --address` joins a Ray cluster that already runs (`ray_head` in conftest, 127.0.0.1)."""

import os
import subprocess
import sys

from tests.conftest import TINY_DEMO


def test_run_joins_an_existing_cluster(ray_head, tmp_path):
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    sets = [a for o in TINY_DEMO for a in ("--set", o)]
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--workdir", str(tmp_path / "w")]
    result = subprocess.run(
        [*cmd, "--address", ray_head.address, *sets], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Connecting to existing Ray cluster" in result.stderr + result.stdout
    assert "Started a local Ray instance" not in result.stderr + result.stdout
    assert "[shard] done" in result.stdout
