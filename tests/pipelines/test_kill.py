"""SIGKILL the whole `lvdm run` process group mid-stage, as a lost machine would, then resume."""

import json
import os
import signal
import subprocess
import sys
import time

from data_prep.index import read_index

OVERRIDES = [
    "stages=[shard]",
    "ray.num_cpus=1",  # one chunk at a time: the kill lands between chunks and inside one
    "data.resolution=64",
    "data.frames=8",
    "data.splits=[train]",
    # 16 chunks of ~0.2 s each on a 2-core machine: at 2 videos of 48 frames a chunk took 30 ms and on
    # CI all 8 chunks were done before the 0.2 s poll saw two, so there was nothing left to kill
    "data.synthetic.videos={train: 64}",
    "data.synthetic.frames=192",
    "shard.videos_per_shard=4",
]
LVDM = [sys.executable, "-m", "pipelines.cli"]


def _lvdm(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run([*LVDM, *args], capture_output=True, text=True, env=env, timeout=300, **kwargs)


def test_killed_run_shows_interrupted_and_resume_finishes_without_redoing_chunks(tmp_path):
    sets = [a for o in OVERRIDES for a in ("--set", o)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen(
        [*LVDM, "run", "--workdir", str(tmp_path), *sets],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(list(tmp_path.glob("stages/shard-*/chunks/*.json"))) < 2:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray cluster it started
    proc.wait()

    out = next(tmp_path.glob("stages/shard-*"))
    assert not (out / "manifest.json").exists()
    done_before = {
        p.stem: (out / f"{p.stem}.tar").stat().st_mtime_ns for p in (out / "chunks").glob("*.json")
    }
    assert 2 <= len(done_before) < 16
    status = _lvdm("status", "--workdir", str(tmp_path))
    assert "status interrupted" in status.stdout and "shard  interrupted" in status.stdout

    run_id = next((tmp_path / "runs").iterdir()).name
    resumed = _lvdm("resume", run_id, "--workdir", str(tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "half-written files must be gone"
    assert all((out / f"{n}.tar").stat().st_mtime_ns == m for n, m in done_before.items()), "chunks redone"
    keys = [row["key"] for row in read_index(out / "index.parquet").to_pylist()]
    assert len(keys) == len(set(keys)) == 64
    record = json.loads((tmp_path / "runs" / run_id / "run.json").read_text())
    assert record["status"] == "done" and record["stages"]["shard"]["status"] == "done"
