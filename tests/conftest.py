"""Shared test fixtures: one real local Ray cluster per test session, tiny pipelines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pyarrow import fs as pafs

from data_prep import storage

REPO = Path(__file__).resolve().parents[1]
PIPELINES = REPO / "pipelines"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no token file under ~/.ray for tests
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="session")
def pretrained_home() -> Path:
    """The real weights cache. Tests marked `pretrained` need it (`lvdm weights fetch` fills it):
    without it they skip saying what to run; with LVDM_REQUIRE_PRETRAINED=1 (CI, after the fetch)
    they fail instead, so a broken fetch cannot pass as a skip."""
    from lvdm.pretrained.cache import I3D_FILE, LPIPS_FILES, weights_home

    home = weights_home()
    missing = [name for name in (I3D_FILE, *LPIPS_FILES.values()) if not (home / name).is_file()]
    if missing:
        reason = f"pretrained weights {', '.join(missing)} not in {home}: run `lvdm weights fetch`"
        if os.environ.get("LVDM_REQUIRE_PRETRAINED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return home


@pytest.fixture
def one_thread():
    """Tiny tensors: on a shared 2-core CI box intra-op threads cost more than they save."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


S3_BUCKET = "lvdm-test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3(tmp_path_factory) -> dict[str, str]:
    """moto's S3 server on 127.0.0.1 with bucket S3_BUCKET, for the whole session; sets (and
    yields) the environment that reaches it, as a user reaches S3 or MinIO: AWS_ENDPOINT_URL
    and keys, read by pyarrow.fs and boto3."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LVDM_LOCK_DIR": str(tmp_path_factory.mktemp("locks")),
        "LVDM_MLFLOW_DIR": str(tmp_path_factory.mktemp("mlflow")),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.time() < deadline, log.read_text()
                time.sleep(0.2)
        pafs.S3FileSystem(
            endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1", allow_bucket_creation=True
        ).create_dir(S3_BUCKET)
        storage._filesystem.cache_clear()  # clients built before the endpoint was set
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        storage._filesystem.cache_clear()


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
    "autoencoder.loss={lpips: vgg, disc_start: 2, disc_channels: 8, disc_layers: 2}",
    "autoencoder.train={steps: 4, batch_size: 2, checkpoint_every: 2, log_every: 1, preview_every: 2,"
    " loader_workers: 0, normalisation_clips: 4, heldout_clips: 2, max_failures: 0}",
]

# The three diffusion stages at toy size: TINY_DEMO's 12-frame videos hold one 8-frame window,
# 4 latents at ft=2: prediction windows of 2 latents at stride 3, interpolation of 3.
_TINY_DIFFUSION_TRAIN = (
    "{steps: 4, batch_size: 2, lr: 1.0e-3, ema_decay: 0.9, checkpoint_every: 2, log_every: 1,"
    " preview_every: 2, loader_workers: 0, heldout_clips: 2, max_failures: 0}"
)
TINY_DIFFUSION = [
    "diffusion.unet={model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1,"
    " attention_resolutions: [2], num_heads: 2, norm_groups: 4}",
    f"train_uncond={{frames: 2, train: {_TINY_DIFFUSION_TRAIN}}}",
    f"train_pred={{frames: 2, latent_stride: 3, eval_clips: 2, train: {_TINY_DIFFUSION_TRAIN}}}",
    f"train_interp={{frames: 3, train: {_TINY_DIFFUSION_TRAIN}}}",
    "sampling={steps: 3}",
]
