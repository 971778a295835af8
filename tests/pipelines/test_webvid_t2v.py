"""pipelines/webvid_t2v.yaml: the release's text-to-video configuration, with the SD folder required."""

from __future__ import annotations

import pytest

from pipelines.config import ConfigError, load_pipeline
from tests.conftest import PIPELINES


def test_webvid_t2v_needs_a_stable_diffusion_folder() -> None:
    with pytest.raises(ConfigError, match=r"need t2v.stable_diffusion: set it"):
        load_pipeline(PIPELINES / "webvid_t2v.yaml", ["data.root=/data/webvid"])
    config = load_pipeline(
        PIPELINES / "webvid_t2v.yaml", ["data.root=/data/webvid", "t2v.stable_diffusion=/sd"]
    )
    assert config.stages == ("shard", "cache_t2v_latents", "train_t2v", "sample_t2v")
    assert config.t2v.caption_dropout == 0.1 and config.t2v.guidance_scale == 15.0
    unet = config.diffusion.unet
    assert (unet.context_dim, unet.temporal_transformer, unet.use_scale_shift_norm) == (768, True, False)


def test_training_settings_do_not_re_encode_the_dataset() -> None:
    """cache_t2v_latents hashes the VAE folder alone: a longer training run reuses its latents."""
    from stages.contract import cache_key
    from stages.registry import STAGES

    base = ["data.root=/data/webvid", "t2v.stable_diffusion=/sd"]
    short, longer, other_vae = (
        load_pipeline(PIPELINES / "webvid_t2v.yaml", base + extra)
        for extra in ([], ["t2v.train.steps=5"], ["t2v.stable_diffusion=/other-sd"])
    )
    key = {
        name: cache_key(STAGES["cache_t2v_latents"], config, {"shard": "k"})
        for name, config in (("short", short), ("longer", longer), ("other", other_vae))
    }
    assert key["short"] == key["longer"] != key["other"]


def test_webvid_t2v_dag_samples_its_prompts_from_the_trained_model() -> None:
    """The DAG validates: each stage's inputs are in the pipeline, sample_t2v reads train_t2v,
    which reads SD's latents; the prompts are set, so sample_t2v's config check passes."""
    from pipelines.runner import plan

    base = ["data.root=/data/webvid", "t2v.stable_diffusion=/sd"]
    config = load_pipeline(PIPELINES / "webvid_t2v.yaml", base)
    inputs = {stage.name: stage.inputs for stage in plan(config)}
    assert inputs == {
        "shard": (),
        "cache_t2v_latents": ("shard",),
        "train_t2v": ("cache_t2v_latents",),
        "sample_t2v": ("train_t2v",),
    }
    assert config.sample.prompts and config.sample.videos >= 1
    with pytest.raises(ConfigError, match="sample_t2v needs sample.prompts"):
        load_pipeline(PIPELINES / "webvid_t2v.yaml", [*base, "sample.prompts=[]"])
