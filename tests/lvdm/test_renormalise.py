"""The restoring force of `sampling.renormalise` (lvdm/diffusion/renormalise.py): sampled latents
at the data's mean 0 / std 1 per channel, given latents untouched, long videos that cannot fade."""

import dataclasses

import pytest
import torch

from lvdm.diffusion import NoiseSchedule
from lvdm.diffusion.renormalise import anchor_of, renormalise_sampled
from lvdm.long_video import SamplingSettings, autoregressive_latents, hierarchical_latents
from lvdm.unet import UNet3D
from tests.lvdm.test_long_video import LATENT, TINY, total

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def faded(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Latents off the data's statistics: per-channel offsets and a std of 0.05."""
    generator = torch.Generator().manual_seed(seed)
    offset = torch.tensor([0.3, -0.2, 0.5, 0.0]).view(1, 4, 1, 1, 1)
    return offset + 0.05 * torch.randn(shape, generator=generator)


def test_sampled_latents_get_mean_0_std_1_per_channel_pooled_over_videos() -> None:
    latents = faded((3, 4, 5, 6, 6))
    restored = renormalise_sampled(latents)
    per_channel = restored.transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(per_channel.mean(dim=1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(per_channel.std(dim=1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    # Pooled, not per video: a video fainter than the others stays fainter.
    latents[0] = latents[0].mean(dim=(1, 2, 3), keepdim=True) + 0.5 * (
        latents[0] - latents[0].mean(dim=(1, 2, 3), keepdim=True)
    )
    restored = renormalise_sampled(latents)
    video_std = restored.std(dim=(2, 3, 4)).mean(dim=1)
    assert video_std[0] < 0.6 * video_std[1]


def test_given_latents_stay_exactly_as_they_were() -> None:
    latents = faded((2, 4, 4, 3, 3))
    given = torch.tensor([[True, False, False, True]] * 2)
    restored = renormalise_sampled(latents, given)
    assert torch.equal(restored[:, :, [0, 3]], latents[:, :, [0, 3]])
    free = restored[:, :, 1:3].transpose(0, 1).reshape(4, -1)
    torch.testing.assert_close(free.std(dim=1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    assert torch.equal(renormalise_sampled(latents, torch.ones(2, 4, dtype=torch.bool)), latents)


def test_later_chunks_are_held_at_their_own_videos_anchor() -> None:
    contrast = torch.tensor([1.0, 3.0, 0.2]).view(3, 1, 1, 1, 1)
    first = renormalise_sampled(faded((3, 4, 4, 3, 3), seed=1) * contrast)
    anchor = anchor_of(first)
    later = faded((3, 4, 4, 3, 3), seed=2)
    given = torch.tensor([[True, False, False, False]] * 3)
    restored = renormalise_sampled(later, given, anchor)
    free = restored[:, :, 1:]
    torch.testing.assert_close(free.mean(dim=(2, 3, 4)), anchor.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(free.std(dim=(2, 3, 4), unbiased=False), anchor.std, atol=1e-4, rtol=1e-4)
    assert torch.equal(restored[:, :, 0], later[:, :, 0])
    # Fills of n videos come as (p n) rows, pair-major: rows 1 and 4 are video 1's.
    assert torch.equal(anchor.repeated(2).std[[1, 4]], anchor.std[1:2].expand(2, 4))
    with pytest.raises(ValueError, match=r"anchor is for \(3, 4\) \(n c\), latents have \(2, 4\)"):
        renormalise_sampled(later[:2], given[:2], anchor)


def test_a_mask_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"given mask has shape \(2, 3\), expected \(2, 4\)"):
        renormalise_sampled(faded((2, 4, 4, 3, 3)), torch.zeros(2, 3, dtype=torch.bool))


class Fading(torch.nn.Module):
    """A conditional ε-network whose x̂_0 is its first given latent at 10% of its contrast (a
    fixed pattern of std ~1 in its unconditional mode): the damping that faded the reference
    run's long videos, made exact."""

    config = UNet3D(in_channels=5, temporal_length=4, **TINY).config

    def __init__(self, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.schedule = schedule
        self.pattern = torch.randn((4, 1) + LATENT[1:], generator=torch.Generator().manual_seed(3))

    def forward(self, x, t, noise_level=None):
        x_t, mask = x[:, :4], x[:, 4:5]
        if bool(mask.any()):
            x0 = 0.1 * (x_t[:, :, :1] * mask[:, :, :1]).expand_as(x_t)
        else:
            x0 = self.pattern.expand_as(x_t)
        a = self.schedule.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1, 1)
        s = (1 - self.schedule.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1, 1)
        return (x_t - a * x0) / s


def _rollout(sampling: SamplingSettings) -> dict:
    """The long-video loops' arguments both tests roll out with: 4 videos of 25 latents, clips of 4."""
    return dict(
        videos=4,
        latents=25,
        latent_shape=LATENT,
        clip=4,
        sampling=sampling,
        generator=torch.Generator().manual_seed(0),
    )


@pytest.mark.parametrize("strategy", ["autoregressive", "hierarchical"])
def test_a_fading_network_fades_without_it_and_holds_with_it(strategy: str) -> None:
    schedule = NoiseSchedule.linear()
    network = Fading(schedule)
    base = SamplingSettings(steps=4, eta=0.0, noise_level=0, guidance_weight=0.0, ddim_last_step="x0")
    stds = {}
    for renormalise in (False, True):
        sampling = dataclasses.replace(base, renormalise=renormalise)
        options = _rollout(sampling)
        if strategy == "autoregressive":
            chunks = autoregressive_latents(network, schedule, **options)
        else:
            chunks = hierarchical_latents(network, network, schedule, latent_stride=2, **options)
        video = total(chunks)
        stds[renormalise] = video[:, :, -4:].std().item()
    assert stds[False] < 0.01
    assert stds[True] == pytest.approx(1.0, abs=0.15)


@pytest.mark.parametrize("first_clip, held_at", [("pooled", 1.0), ("as_sampled", 0.4)])
def test_the_first_clip_is_pooled_or_kept_as_drawn_and_later_chunks_hold_at_it(first_clip, held_at) -> None:
    schedule = NoiseSchedule.linear()
    network = Fading(schedule)
    network.pattern = 0.4 * network.pattern / network.pattern.std()  # a faint first clip
    sampling = SamplingSettings(
        steps=4,
        eta=0.0,
        noise_level=0,
        guidance_weight=0.0,
        ddim_last_step="x0",
        renormalise=True,
        renormalise_first_clip=first_clip,
    )
    options = _rollout(sampling)
    video = total(autoregressive_latents(network, schedule, **options))
    if first_clip == "as_sampled":  # exactly what the network drew: its x̂_0 is the pattern
        torch.testing.assert_close(video[:, :, :4].float(), network.pattern.expand(4, -1, 4, -1, -1))
    assert video[:, :, :4].std().item() == pytest.approx(held_at, rel=0.05)
    assert video[:, :, -4:].std().item() == pytest.approx(held_at, rel=0.1)


def test_the_reference_run_turns_it_on_and_the_sampler_settings_carry_it() -> None:
    from pathlib import Path

    from pipelines.config import load_pipeline

    config = load_pipeline(Path(__file__).parents[2] / "pipelines" / "bouncing_shapes.yaml")
    assert SamplingSettings(**config.sampling.model_dump()).renormalise is True
    assert SamplingSettings().renormalise is False  # the paper's sampler by default
