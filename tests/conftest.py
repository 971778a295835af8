"""Shared test fixtures: one real local Ray cluster per test session, tiny pipelines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file under ~/.ray for tests
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster, started once: each start costs several seconds."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, log_to_driver=False)
    yield ray
    ray.shutdown()


# Small enough for 2 CI cores, same code paths as a full run. TINY_DEMO stops after `shard`;
# add TINY_AUTOENCODER (and a `stages=` override) to go further.
TINY_DEMO = [
    "stages=[shard]",
    "data.resolution=32",
    "data.frames=8",
    "data.synthetic.videos={train: 6, test: 2}",
    "data.synthetic.frames=12",
    "shard.videos_per_shard=2",
]

TINY_AUTOENCODER = [
    "autoencoder.model={hidden: 8, fs: 4, ft: 2, norm_groups: 8}",
    "autoencoder.loss={lpips: random, disc_start: 2, disc_channels: 8, disc_layers: 2}",
    "autoencoder.train={steps: 4, batch_size: 2, checkpoint_every: 2, log_every: 1, preview_every: 2,"
    " loader_workers: 0, normalisation_clips: 4, heldout_clips: 2, max_failures: 0}",
]
