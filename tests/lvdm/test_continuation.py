"""Continuations of given latents: the given come back unchanged, the stride reaches the network,
and strided keys decode one at a time as still clips."""

from __future__ import annotations

import torch

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.continuation import continue_latents, decode_still
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.long_video import SamplingSettings
from lvdm.unet import UNet3D

UNET = dict(
    model_channels=8,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(2,),
    num_heads=2,
    norm_groups=4,
)
SAMPLING = SamplingSettings(steps=2, noise_level=50, guidance_weight=0.1)


def test_continuation_keeps_the_given_latents_and_tells_the_network_its_stride():
    torch.manual_seed(0)
    model = UNet3D(in_channels=5, out_channels=4, max_noise_level=250, max_stride=4, **UNET).eval()
    with torch.no_grad():  # zero-initialised output layers would hide any input: perturb every weight
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    given = torch.randn(2, 4, 1, 8, 8)

    def run(stride: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        return continue_latents(
            model,
            given,
            NoiseSchedule.linear(),
            clip=3,
            latents=6,
            sampling=SAMPLING,
            generator=generator,
            stride=stride,
        )

    one, two = run(1), run(2)
    assert one.shape == (2, 4, 6, 8, 8) and torch.equal(one[:, :, :1], given)
    assert not torch.allclose(one[:, :, 1:], two[:, :, 1:])
    assert torch.equal(run(1), one)  # seeded


def test_decode_still_decodes_each_latent_as_a_still_clip():
    autoencoder = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8)).eval()
    latents = torch.randn(2, 4, 3, 4, 4)
    with torch.no_grad():
        frames = decode_still(autoencoder, latents, clip_latents=2)
        second = autoencoder.decode(latents[:1, :, 1:2].repeat(1, 1, 2, 1, 1))[:, :, :2]
    assert frames.shape == (2, 3, 6, 16, 16)
    torch.testing.assert_close(frames[:1, :, 2:4], second)
