"""Latent normalisation: one scale/shift for all channels (the release) or one per channel (issue 21)."""

from __future__ import annotations

import pytest
import torch

from lvdm.autoencoder import denormalise, latent_normalisation, normalise


def channel_latents() -> torch.Tensor:
    """`b c t h w` latents whose channels have means -0.6, 1.3, -0.6, 0 and stds 0.6, 0.8, 0.5, 0.6,
    as the demo autoencoder's have."""
    torch.manual_seed(0)
    means = torch.tensor([-0.6, 1.3, -0.6, 0.0])[:, None, None, None]
    stds = torch.tensor([0.6, 0.8, 0.5, 0.6])[:, None, None, None]
    return torch.randn(64, 4, 4, 8, 8) * stds + means


def test_per_channel_normalisation_gives_every_channel_zero_mean_and_unit_std():
    latents = channel_latents()
    scale, shift = latent_normalisation(latents, per_channel=True)
    assert len(scale) == len(shift) == 4
    normalised = normalise(latents, scale, shift).transpose(0, 1).flatten(1)
    assert torch.allclose(normalised.mean(dim=1), torch.zeros(4), atol=1e-4)
    assert torch.allclose(normalised.std(dim=1), torch.ones(4), atol=1e-4)


def test_one_scalar_pair_leaves_the_channel_offsets_that_per_channel_removes():
    latents = channel_latents()
    scale, shift = latent_normalisation(latents)
    assert isinstance(scale, float) and isinstance(shift, float)
    means = normalise(latents, scale, shift).transpose(0, 1).flatten(1).mean(dim=1)
    assert means.abs().max() > 1.0  # channel 1 keeps an offset of more than one std


@pytest.mark.parametrize("per_channel", [False, True])
def test_denormalise_inverts_normalise(per_channel):
    latents = channel_latents()
    scale, shift = latent_normalisation(latents, per_channel=per_channel)
    assert torch.allclose(denormalise(normalise(latents, scale, shift), scale, shift), latents, atol=1e-5)
    clip = latents[0]  # `c t h w` broadcasts the same way
    assert torch.allclose(denormalise(normalise(clip, scale, shift), scale, shift), clip, atol=1e-5)


def test_per_channel_values_for_latents_of_another_width_are_refused():
    scale, shift = latent_normalisation(channel_latents(), per_channel=True)
    with pytest.raises(ValueError, match="3 channels"):
        normalise(torch.zeros(1, 3, 2, 4, 4), scale, shift)
