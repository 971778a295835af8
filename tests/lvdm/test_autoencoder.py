import pytest
import torch
from torch import nn

from lvdm.autoencoder import AutoencoderConfig, DiagonalGaussian, VideoAutoencoder, latent_normalisation


def tiny(fs: int = 4, ft: int = 2) -> VideoAutoencoder:
    torch.manual_seed(0)
    return VideoAutoencoder(AutoencoderConfig(hidden=8, fs=fs, ft=ft, norm_groups=8)).eval()


def moving_pattern(frames: int, size: int = 16) -> torch.Tensor:
    """A smooth travelling wave plus a little noise, `1 3 t h w` in about [-1, 1]."""
    g = torch.Generator().manual_seed(1)
    t = torch.arange(frames).float().view(-1, 1, 1)
    y = torch.arange(size).float().view(1, -1, 1)
    x = torch.arange(size).float().view(1, 1, -1)
    wave = torch.sin(0.5 * x + 0.3 * t) * torch.cos(0.4 * y - 0.2 * t)
    wave = wave + 0.1 * torch.randn(wave.shape, generator=g)
    return torch.stack([wave, 0.5 * wave, -0.7 * wave]).unsqueeze(0)


@pytest.mark.parametrize("fs", [2, 4, 8])
@pytest.mark.parametrize("ft", [1, 2, 4])
def test_latent_and_reconstruction_shapes_follow_fs_and_ft(fs, ft):
    model = tiny(fs, ft)
    x = torch.zeros(2, 3, 8, 16, 16)
    with torch.no_grad():
        recon, posterior = model(x)
    assert posterior.mean.shape == (2, 4, 8 // ft, 16 // fs, 16 // fs)
    assert posterior.mean.shape[1:] == model.latent_shape(8, 16, 16)
    assert posterior.std.shape == posterior.mean.shape
    assert recon.shape == x.shape
    assert posterior.kl().shape == (2,)


def test_paper_config_has_the_official_strides_and_parameter_counts():
    config = AutoencoderConfig.paper()
    assert config.strides == ((2, 2, 2), (2, 2, 2), (1, 2, 2))
    assert config.level_channels == (64, 128, 256)
    model = VideoAutoencoder(config)
    encoder = sum(p.numel() for p in model.encoder.parameters())
    decoder = sum(p.numel() for p in model.decoder.parameters())
    # Official release (TATS-derived videoae): ~7.5M encoder, ~12.0M decoder weights.
    assert encoder == pytest.approx(7.5e6, rel=0.02)
    assert decoder == pytest.approx(12.0e6, rel=0.02)
    assert model.latent_shape(16, 256, 256) == (4, 4, 32, 32)


@pytest.mark.parametrize(("fs", "ft"), [(4, 2), (8, 4)])
def test_shifting_the_video_by_ft_frames_shifts_the_latent_by_one_frame(fs, ft):
    model = tiny(fs, ft)
    latent_frames, margin = 32, 8
    video = moving_pattern(latent_frames * ft + ft)
    with torch.no_grad():
        z = model.encode(video[:, :, : latent_frames * ft]).mean
        z_shifted = model.encode(video[:, :, ft:]).mean
    inner = slice(margin, latent_frames - 1 - margin)
    expected = z[:, :, margin + 1 : latent_frames - margin]
    error = (z_shifted[:, :, inner] - expected).norm() / expected.norm()
    # GroupNorm statistics are per clip, so the two clips differ slightly everywhere;
    # a latent that did not move with the video would be off by ~100%.
    unshifted_error = (z_shifted[:, :, inner] - z[:, :, inner]).norm() / expected.norm()
    assert error < 0.06
    assert unshifted_error > 0.5


def test_replicate_padding_maps_a_constant_video_to_a_constant_latent():
    # Zero padding would make border latents see black and differ from the centre.
    model = tiny(4, 2)
    with torch.no_grad():
        posterior = model.encode(torch.full((1, 3, 8, 16, 16), 0.3))
    per_channel = posterior.mean.flatten(2)
    assert (per_channel.std(dim=2) < 1e-5).all()
    assert per_channel.abs().max() > 1e-4
    assert all(m.padding == (0, 0, 0) for m in model.modules() if type(m) is nn.Conv3d)


def test_video_not_divisible_by_the_downsampling_is_rejected_with_the_fix():
    model = tiny(4, 2)
    with pytest.raises(ValueError, match="ft=2.*fs=4"):
        model.encode(torch.zeros(1, 3, 7, 16, 16))
    with pytest.raises(ValueError, match=r"\(b 3 t h w\)"):
        model.encode(torch.zeros(1, 3, 16, 16))


def test_config_rejects_a_bad_factor_and_a_bad_multiplier_list():
    with pytest.raises(ValueError, match="fs=3"):
        AutoencoderConfig(fs=3)
    with pytest.raises(ValueError, match="channel_multipliers"):
        AutoencoderConfig(fs=8, ft=4, channel_multipliers=(2, 4))
    with pytest.raises(ValueError, match="norm_groups"):
        AutoencoderConfig(hidden=8)


def test_logvar_is_clamped_to_the_configured_range():
    model = tiny(4, 2)
    head = model.quant_conv.conv  # the last layer before the posterior's moments
    with torch.no_grad():
        head.bias[4:] = 1e6
        posterior = model.encode(torch.zeros(1, 3, 8, 16, 16))
    assert torch.all(posterior.logvar == 20.0)


def test_kl_is_zero_for_the_prior_and_sampling_follows_the_generator():
    prior = DiagonalGaussian(torch.zeros(2, 4, 2, 3, 3), torch.zeros(2, 4, 2, 3, 3))
    assert torch.equal(prior.kl(), torch.zeros(2))
    shifted = DiagonalGaussian(torch.ones(2, 4, 2, 3, 3), torch.zeros(2, 4, 2, 3, 3))
    assert torch.allclose(shifted.kl(), torch.full((2,), 0.5 * 4 * 2 * 3 * 3))
    a = shifted.sample(torch.Generator().manual_seed(3))
    b = shifted.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, shifted.mode())


def test_latent_normalisation_gives_zero_mean_unit_variance_and_inverts():
    z = 3.0 + 0.5 * torch.randn(4, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    scale, shift = latent_normalisation(z)
    assert scale == pytest.approx(2.0, rel=0.05)
    assert shift == pytest.approx(-3.0, abs=0.05)
    z_norm = (z + shift) * scale
    assert z_norm.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert z_norm.std().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.allclose(z_norm / scale - shift, z, atol=1e-5)
    with pytest.raises(ValueError, match="degenerate"):
        latent_normalisation(torch.ones(10))


def test_nearest_upsampling_decodes_a_constant_latent_without_a_checkerboard():
    torch.manual_seed(0)
    config = dict(hidden=8, fs=4, ft=2, norm_groups=2)
    z = torch.full((1, 4, 2, 4, 4), 0.5)
    with torch.no_grad():
        nearest = VideoAutoencoder(AutoencoderConfig(upsample="nearest", **config)).decode(z)
        transposed = VideoAutoencoder(AutoencoderConfig(**config)).decode(z)
    # Every output phase of a stride-2 transposed conv has its own taps: a 2x2 pattern.
    spatial_spread = lambda video: video.flatten(2).std(dim=2).max().item()  # noqa: E731
    assert spatial_spread(nearest) < 1e-5
    assert spatial_spread(transposed) > 1e-3
    assert (transposed[..., ::2, ::2] - transposed[..., 1::2, 1::2]).abs().mean() > 1e-3


def test_upsample_choice_is_checked_and_the_paper_keeps_transposed_convs():
    with pytest.raises(ValueError, match="upsample='bilinear'"):
        AutoencoderConfig(upsample="bilinear")
    assert AutoencoderConfig.paper().upsample == "transposed"
    nearest = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8, upsample="nearest"))
    assert not any(isinstance(m, nn.ConvTranspose3d) for m in nearest.modules())
