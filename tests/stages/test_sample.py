"""The sample stage's job, without Ray: exact frame counts, mp4 files, a contact sheet."""

import json

import numpy as np
import torch
from PIL import Image

from data_prep.decode import decode_video
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.long_video import SamplingSettings
from lvdm.unet import UNet3D
from stages.autoencoder_file import save_autoencoder
from stages.sample import _keep_frames, contact_steps, expected_cost, sample_job
from stages.unet_file import save_unet

TINY_UNET = dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,),
                 num_heads=2, norm_groups=4)  # fmt: skip


def test_contact_steps_span_the_video_evenly():
    assert contact_steps(64, 8) == [0, 9, 18, 27, 36, 45, 54, 63]
    assert contact_steps(3, 8) == [0, 1, 2]


def test_kept_frames_are_the_frames_at_the_steps_of_every_video():
    video = np.arange(2 * 10).reshape(2, 10, 1, 1, 1).astype(np.uint8).repeat(3, axis=-1)
    kept: dict = {}
    passed = list(_keep_frames((video[:, s : s + 3] for s in range(0, 10, 3)), [0, 4, 9], kept))
    assert np.array_equal(np.concatenate(passed, axis=1), video)
    assert {k: v[:, 0, 0, 0].tolist() for k, v in kept.items()} == {0: [0, 10], 4: [4, 14], 9: [9, 19]}


def test_a_sample_job_writes_every_video_at_the_exact_length_and_a_contact_sheet(tmp_path):
    torch.manual_seed(0)
    autoencoder = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8))
    save_autoencoder(tmp_path / "ae.pt", autoencoder, scale=1.0, shift=0.0, step=0)
    for name, kwargs in {
        "uncond": {"in_channels": 4},
        "pred": {"in_channels": 5, "max_noise_level": 10, "temporal_length": 3},
        "interp": {"in_channels": 5, "max_noise_level": 10, "temporal_length": 3},
    }.items():
        config = {**TINY_UNET, **kwargs}
        save_unet(tmp_path / f"{name}.pt", config, UNet3D(**config).state_dict(), step=0)
    files = {
        "unconditional": str(tmp_path / "uncond.pt"),
        "prediction": str(tmp_path / "pred.pt"),
        "interpolation": str(tmp_path / "interp.pt"),
        "autoencoder": str(tmp_path / "ae.pt"),
        "scale": 1.0,
        "shift": 0.0,
        "schedule": {"timesteps": 100, "linear_start": 0.0015, "linear_end": 0.0155},
    }
    plan = {"frames": 27, "clip": 3, "cond_frames": 1, "latent_stride": 2, "max_batch": 4, "decode_window": 4}
    record = sample_job(
        tmp_path / "out", "default", "hierarchical", SamplingSettings(steps=2, noise_level=5), plan, files,
        videos=2, resolution=16, fps=8, columns=4, seed=0, device=torch.device("cpu"),
    )  # fmt: skip
    assert len(record["videos"]) == 2
    for video in record["videos"]:
        assert decode_video(tmp_path / "out" / video).frames.shape == (27, 16, 16, 3)
    sheet = Image.open(tmp_path / "out" / record["contact_sheet"])
    assert sheet.size == (4 * 16, 2 * 16)  # 4 steps across, one row per video
    saved = json.loads((tmp_path / "out" / "chunks" / "default-hierarchical.json").read_text())
    assert saved["contact_steps"] == [0, 9, 17, 26] and saved["seconds_per_frame"] > 0


def test_expected_cost_counts_the_clips_of_each_strategy_and_doubles_guided_ones():
    plan = {"frames": 16, "clip": 4, "cond_frames": 1, "latent_stride": 2}
    guided, unguided = SamplingSettings(guidance_weight=0.1), SamplingSettings(guidance_weight=0.0)
    # Autoregressive: the first clip (4), then ceil((16 - 4) / 3) = 4 clips of 4 latents.
    assert expected_cost("autoregressive", unguided, plan) == 4 + 16
    assert expected_cost("autoregressive", guided, plan) == 4 + 2 * 16
    # Hierarchical: 9 keys, ceil((9 - 4) / 3) = 2 key clips of 4, and 8 fills of 3 latents.
    assert expected_cost("hierarchical", unguided, plan) == 4 + 2 * 4 + 8 * 3


def test_the_reference_runs_jobs_are_ordered_longest_first():
    """The order `sample` submits in: measured 557-587 s for guided hierarchical jobs, 239-256 s
    for unguided autoregressive ones (reference run, session 6)."""
    plan = {"frames": 1024, "clip": 4, "cond_frames": 1, "latent_stride": 2}
    costs = {
        (strategy, w): expected_cost(strategy, SamplingSettings(guidance_weight=w), plan)
        for strategy in ("autoregressive", "hierarchical")
        for w in (0.0, 0.1)
    }
    ranked = sorted(costs, key=costs.get, reverse=True)
    assert ranked[0] == ("hierarchical", 0.1) and ranked[-1] == ("autoregressive", 0.0)
