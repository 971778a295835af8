"""shard -> train_autoencoder -> cache_latents on Ray Train, killed mid-way and resumed."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from data_prep.clip_sampling import frames_to_model_range
from data_prep.decode import decode_video
from data_prep.loader import latent_window_loader
from data_prep.shard_writer import read_shard
from lvdm.latent_sequence import decode_sequence, encode_sequence
from pipelines.config import load_pipeline
from pipelines.runner import PipelineError, run_pipeline
from stages.autoencoder_file import load_autoencoder
from stages.train_autoencoder import FAULT_ENV
from tests.conftest import PIPELINES, TINY_AUTOENCODER, TINY_DEMO

STAGES = "stages=[shard, train_autoencoder, cache_latents]"


def _run(workdir: Path, **kwargs):
    # Two Ray Train workers: DDP over gloo, each rank reading its own shards.
    # fp32 encoding: the round trip below compares stored latents with a direct fp32 encode.
    overrides = TINY_DEMO + TINY_AUTOENCODER + [STAGES, "autoencoder.train.num_workers=2"]
    overrides += ["cache_latents.precision=fp32"]
    config = load_pipeline(PIPELINES / "demo.yaml", overrides)
    return run_pipeline(config, workdir, "demo.yaml", echo=lambda *_: None, **kwargs)


@pytest.mark.pretrained  # trains with the real LPIPS-VGG16, as the demo does
def test_training_killed_after_a_checkpoint_resumes_there_and_the_latent_cache_round_trips(
    ray_cluster, pretrained_home, tmp_path, monkeypatch
):
    monkeypatch.setenv(FAULT_ENV, "train_autoencoder:3")  # crash after step 3; checkpoint at step 2
    with pytest.raises(PipelineError, match="train_autoencoder"):
        _run(tmp_path)
    failed = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    train_dir = Path(failed["stages"]["train_autoencoder"]["output"])
    assert not (train_dir / "autoencoder.pt").exists() and not (train_dir / "manifest.json").exists()

    monkeypatch.delenv(FAULT_ENV)
    record = _run(tmp_path, run_id=failed["run_id"])
    assert [s.status for s in record.stages.values()] == ["done", "done", "done"]
    train = json.loads((train_dir / "manifest.json").read_text())["outputs"]
    assert train["resumed_from_step"] == 2 and train["steps"] == 4
    assert train["scale"] > 0 and np.isfinite(train["shift"])

    client = MlflowClient(record.mlflow_tracking_uri)
    run_id = record.stages["train_autoencoder"].mlflow_run_id
    assert run_id == failed["stages"]["train_autoencoder"]["mlflow_run_id"], "resume must reattach"
    metrics = client.get_run(run_id).data.metrics
    logged = ("ae/loss", "ae/perceptual", "disc/loss", "heldout_psnr", "lr")
    for name in (*logged, "clips_per_s", "tflops_per_worker"):  # throughput, every training stage
        assert name in metrics, name
    assert client.get_run(run_id).data.params["autoencoder.loss.lpips"] == "vgg"
    steps = [m.step for m in client.get_metric_history(run_id, "ae/loss")]
    assert sorted(set(steps)) == [1, 2, 3, 4]
    assert client.get_metric_history(run_id, "disc/active")[-1].value == 1.0  # on from disc_start=2
    assert [a.path for a in client.list_artifacts(run_id, "previews")]
    assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/autoencoder.pt"]

    # Latent cache: stored fp16 latents decode like a direct encode -> decode of the same video.
    cache = json.loads((Path(record.stages["cache_latents"].output) / "manifest.json").read_text())
    cache_dir = Path(record.stages["cache_latents"].output)
    shard_dir = Path(record.stages["shard"].output)
    every_shard = [n for names in cache["outputs"]["shards"].values() for n in names]
    assert sorted(p.stem for p in (cache_dir / "chunks").glob("*.json")) == sorted(
        Path(n).stem for n in every_shard
    )
    assert cache["outputs"]["counts"]["latents"] == 8 and cache["outputs"]["skipped"] == []
    model, meta = load_autoencoder(train_dir / "autoencoder.pt")
    assert cache["outputs"]["scale"] == meta["scale"]
    name = cache["outputs"]["shards"]["test"][0]
    key, fields = next(read_shard(cache_dir / name))
    stored = torch.from_numpy(np.load(__import__("io").BytesIO(fields["npy"])).astype(np.float32))
    video = dict(read_shard(shard_dir / name))[key]["mp4"]
    pixels = torch.from_numpy(frames_to_model_range(decode_video(video).frames))
    direct = encode_sequence(model, pixels, window=8)
    assert stored.shape == direct.shape == (4, 4, 8, 8)
    assert torch.allclose(stored, direct, atol=2e-2 * direct.abs().max().item())
    window = model.config.ft and 8 // model.config.ft
    assert torch.allclose(
        decode_sequence(model, stored, window), decode_sequence(model, direct, window), atol=2e-2
    )

    loader = latent_window_loader(
        [str(cache_dir / s) for s in cache["outputs"]["shards"]["train"]],
        frames=2,
        batch_size=3,
        batches_per_epoch=2,
    )
    assert [tuple(b.shape) for b in loader] == [(3, 4, 2, 8, 8)] * 2


@pytest.mark.slow
@pytest.mark.pretrained
def test_a_crashed_worker_is_retried_by_ray_train_from_the_last_checkpoint(
    ray_cluster, pretrained_home, tmp_path, monkeypatch
):
    """`autoencoder.train.max_failures`: the same fit restarts its workers, no rerun needed."""
    monkeypatch.setenv(FAULT_ENV, "train_autoencoder:3")
    overrides = TINY_DEMO + TINY_AUTOENCODER + ["stages=[shard, train_autoencoder]"]
    config = load_pipeline(PIPELINES / "demo.yaml", overrides + ["autoencoder.train.max_failures=1"])
    record = run_pipeline(config, tmp_path, "demo.yaml", echo=lambda *_: None)
    train = json.loads((Path(record.stages["train_autoencoder"].output) / "manifest.json").read_text())
    assert record.status == "done" and train["outputs"]["resumed_from_step"] == 2


def test_missing_lpips_weights_stop_the_stage_before_training_saying_what_to_run(ray_cluster, tmp_path):
    overrides = TINY_DEMO + TINY_AUTOENCODER + [STAGES, f"weights.home={tmp_path / 'empty'}"]
    config = load_pipeline(PIPELINES / "demo.yaml", overrides)
    with pytest.raises(PipelineError) as err:
        run_pipeline(config, tmp_path / "w", "demo.yaml", echo=lambda *_: None)
    message = str(err.value)
    assert "train_autoencoder" in message and "lvdm weights fetch" in message
    assert "lpips-vgg16.safetensors" in message and str(tmp_path / "empty") in message
    assert not list((tmp_path / "w" / "stages").glob("train_autoencoder-*/ray"))
