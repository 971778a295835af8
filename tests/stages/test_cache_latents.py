"""Stage `cache_latents` on a real local Ray cluster, with a tiny random autoencoder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from pipelines.config import load_pipeline
from stages.autoencoder_file import FILENAME, save_autoencoder
from stages.cache_latents import run
from stages.contract import StageContext, Tracking
from tests.conftest import PIPELINES, TINY_DEMO


def test_every_failed_shard_is_named_after_all_tasks_finished(ray_cluster, tmp_path):
    videos, ae_dir, out = tmp_path / "videos", tmp_path / "ae", tmp_path / "latents"
    for folder in (videos, ae_dir, out):
        folder.mkdir()
    shards = ["train-000000.tar", "train-000001.tar"]
    for name in shards:
        (videos / name).write_bytes(b"not a tar archive" * 64)  # a corrupt video shard
    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8))
    save_autoencoder(ae_dir / FILENAME, model, scale=1.0, shift=0.0, step=0)
    config = load_pipeline(PIPELINES / "demo.yaml", [*TINY_DEMO, "ray.num_cpus=2"])
    ctx = StageContext(
        name="cache_latents",
        key="test",
        config=config,
        out_dir=out,
        inputs={
            "shard": {"out_dir": str(videos), "outputs": {"shards": {"train": shards}}},
            "train_autoencoder": {
                "out_dir": str(ae_dir),
                "outputs": {"autoencoder": FILENAME, "scale": 1.0, "shift": 0.0},
            },
        },
        tracking=Tracking("unused: the stage fails before it logs", "none"),
        run_name="cache_latents-test",
    )
    with pytest.raises(RuntimeError, match="2 of 2 video shards failed") as info:
        run(ctx)
    assert all(name in str(info.value) for name in shards)
    assert not any(Path(out).glob("*.tar")), "no latent shard from a failed task"
