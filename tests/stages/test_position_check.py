"""train_pred's position check end to end on tiny random models: every row, the known ones exact.

Random networks predict nothing; the rows that do not depend on them are known: the true
continuation scores ~0 px, the still frame the true displacement (the library's own tests),
and the autoencoder row and both prediction rows run through the real encode / sample / decode.
"""

from __future__ import annotations

import pytest
import torch

from data_prep.position_check import pool_position_errors, position_errors, still_frame
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.unet import UNet3D
from pipelines.config import DataConfig
from stages.position_check import ROWS, describe, flat_metrics, heldout_clips, position_check
from tests.lvdm.test_continuation import SAMPLING, UNET  # one tiny prediction network for both


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    prediction = UNet3D(in_channels=5, out_channels=4, max_noise_level=250, **UNET).eval()
    unconditional = UNet3D(in_channels=4, out_channels=4, **UNET).eval()
    autoencoder = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8)).eval()
    return prediction, unconditional, autoencoder


@pytest.fixture(scope="module")
def clips():
    synthetic = {"videos": {"train": 1, "test": 2}, "frames": 20}
    return heldout_clips(
        DataConfig(dataset="synthetic", resolution=32, frames=8, synthetic=synthetic), 2, crf=18
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_every_row_on_held_out_clips(models, clips, stride):
    assert len(clips) == 2 and clips[0][1].shape == (20, 32, 32, 3)
    result = position_check(
        *models,
        clips,
        NoiseSchedule.linear(),
        scale=1.0,
        shift=0.0,
        cond_frames=1,
        clip_latents=4,
        latent_stride=2,
        unconditional_latents=4,
        encode_window=8,
        sampling=SAMPLING,
        stride=stride,
    )
    assert result["given_frames"] == 2 and result["latent_stride"] == stride and result["clips"] == 2
    assert set(ROWS) <= set(result)
    truth = result["true_continuation"]
    assert all(row["error"] < 0.71 for row in truth.values() if row["shapes"])
    still = pool_position_errors([position_errors(still_frame(f[:2], 17), m, 2) for m, f in clips])
    assert result["still_frame"] == still
    # At stride 2 the keys decode to frames 0-1, 4-5, 8-9, 12-13, 16-17: +4, +8, +16 all land.
    assert result["prediction"]["+16"]["shapes"] == truth["+16"]["shapes"]
    for row in ("prediction", "prediction_no_perturbation", "autoencoder", "unconditional_model"):
        assert [r["shapes"] for r in result[row].values()] == [r["shapes"] for r in truth.values()]
    assert "position/still_frame/error_8" in flat_metrics(result)
    assert describe(result).startswith("+4 frames: ")
