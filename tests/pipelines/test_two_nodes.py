"""The closest this machine gets to the cluster the pipeline is for: two Ray nodes (`ray start
--head` and a second `ray start --address`, each with its own CPUs, ports and temp dir), a workdir
on the moto S3 server and an `mlflow server`, and the demo through `train_uncond` on them.

What it exercises:
- the refusal of the embedded MLflow store (a SQLite file on the driver's machine) once the
  cluster has two nodes, before any training worker starts;
- `train_autoencoder` with one worker that only the second node can hold (3 CPUs): its Ray
  Train checkpoints go to S3 and its metrics to the MLflow server from the non-head node;
- `train_uncond` with one worker on each node (2 CPUs each; the head has 2, the second node 3):
  DDP over gloo between the nodes, rank 0's checkpoints and metrics from whichever node it got;
- `cache_latents` and `shard` tasks scheduled on either node, all reading and writing S3.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from data_prep import storage
from tests.conftest import PIPELINES, S3_BUCKET, TINY_DEMO, free_port
from tests.pipelines.conftest import RAY_HEAD_PORTS, VENV_BIN, _stop, _wait_until, running_mlflow_server

LVDM = [sys.executable, "-m", "pipelines.cli"]

OVERRIDES = [
    *TINY_DEMO,
    "stages=[shard, train_autoencoder, cache_latents, train_uncond]",
    "autoencoder.model={hidden: 8, fs: 4, ft: 2, norm_groups: 8}",
    "autoencoder.loss={perceptual_weight: 0, lpips: random, disc_start: 1000}",
    "autoencoder.train={steps: 4, batch_size: 2, checkpoint_every: 2, log_every: 1, preview_every: 100,"
    " loader_workers: 0, normalisation_clips: 2, heldout_clips: 1, max_failures: 0,"
    " num_workers: 1, cpus_per_worker: 3}",
    "diffusion.unet={model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1,"
    " attention_resolutions: [2], num_heads: 2, norm_groups: 4}",
    "train_uncond={frames: 2, train: {steps: 4, batch_size: 2, checkpoint_every: 2, log_every: 1,"
    " preview_every: 100, loader_workers: 0, heldout_clips: 1, max_failures: 0,"
    " num_workers: 2, cpus_per_worker: 2}}",
]


def _ray_start(temp_dir: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    ports = [f"--{name}={free_port()}" for name in RAY_HEAD_PORTS]
    with (temp_dir / "ray-start.log").open("wb") as out:
        return subprocess.Popen(
            [str(VENV_BIN / "ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--num-gpus=0", *args]
            + ["--object-store-memory=200000000", "--disable-usage-stats", f"--temp-dir={temp_dir}", *ports],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _alive_nodes(address: str) -> int:
    code = f"import ray; ray.init(address='{address}'); print(sum(n['Alive'] for n in ray.nodes()))"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    return int(done.stdout.strip().splitlines()[-1])


def _rank0_logs(temp_dir: Path, stage: str) -> bool:
    """Whether a worker on this node drew `stage`'s progress bar, which only rank 0 does."""
    return any(
        f"{stage}: 100%" in path.read_text(errors="replace") for path in temp_dir.rglob("logs/worker-*.err")
    )


@pytest.mark.slow
def test_the_demo_trains_across_two_nodes_on_s3_with_an_mlflow_server(s3, tmp_path):
    from mlflow import MlflowClient

    head_dir = Path(tempfile.mkdtemp(prefix="ray-h-", dir="/tmp"))  # short: Ray's unix sockets
    node_dir = Path(tempfile.mkdtemp(prefix="ray-n-", dir="/tmp"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    head = _ray_start(head_dir, "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false")
    node = None
    try:
        _wait_until(lambda: _alive_nodes(address), head, head_dir / "ray-start.log", "ray start --head", 120)
        node = _ray_start(node_dir, f"--address={address}", "--num-cpus=3")

        def two_nodes() -> None:
            assert _alive_nodes(address) == 2

        _wait_until(two_nodes, node, node_dir / "ray-start.log", "ray start --address", 120)
        workdir = f"s3://{S3_BUCKET}/two-nodes"
        base = [*LVDM, "run", str(PIPELINES / "demo.yaml"), "--address", address, "--workdir", workdir]
        sets = [arg for item in OVERRIDES for arg in ("--set", item)]

        refused = subprocess.run([*base, *sets], capture_output=True, text=True, timeout=600)
        assert refused.returncode != 0
        assert (
            "embedded store" in refused.stdout + refused.stderr
            and "2 nodes" in refused.stdout + refused.stderr
        )

        with running_mlflow_server(tmp_path) as server:
            sets += ["--set", f"mlflow.tracking_uri={server.url}"]
            done = subprocess.run([*base, *sets], capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]

            files = storage.walk_files(workdir)
            for stage, weights in (("train_autoencoder", "autoencoder.pt"), ("train_uncond", "unet.pt")):
                assert any(f"/stages/{stage}-" in f and f.endswith(f"/{weights}") for f in files), stage
                assert any(f"/stages/{stage}-" in f and f.endswith("/trainer.pt") for f in files), stage
            client = MlflowClient(server.url)
            runs = {
                r.data.tags.get("lvdm.stage"): r
                for r in client.search_runs([e.experiment_id for e in client.search_experiments()])
            }
            for stage in ("train_autoencoder", "train_uncond"):
                metrics = runs[stage].data.metrics
                assert "clips_per_s" in metrics and "tflops_per_worker" in metrics, metrics.keys()
        # The autoencoder's one worker needed the second node's 3 CPUs: its rank 0 ran there.
        assert _rank0_logs(node_dir, "train_autoencoder") and not _rank0_logs(head_dir, "train_autoencoder")
        # train_uncond's two workers (2 CPUs each) cannot share a node: rank 0 is on one of them.
        on_node = _rank0_logs(node_dir, "train_uncond")
        assert on_node != _rank0_logs(head_dir, "train_uncond")
        print(f"train_uncond rank 0 ran on the {'second' if on_node else 'head'} node")
    finally:
        for process in (node, head):
            if process is not None:
                _stop(process, 3)
        shutil.rmtree(head_dir, ignore_errors=True)
        shutil.rmtree(node_dir, ignore_errors=True)
