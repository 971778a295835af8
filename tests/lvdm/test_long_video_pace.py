"""Long videos advance at the data's pace (issue 21): autoregressive at stride 1, keys at the key stride.

The networks here are constructed, not trained: their denoised latent is a known function of
what they are given, so the video each strategy should produce is known exactly. Every latent
of a clip holds one number, its time in latents since the video began; a network that is
told the window's stride continues the given latents at that pace, one that knows no stride
continues at the stride it was trained on (the release's prediction model: keys only).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from einops import rearrange
from torch import nn

from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion.strides import window_span
from lvdm.long_video import SamplingSettings, autoregressive_latents, hierarchical_latents

SCHEDULE = NoiseSchedule.linear(timesteps=100)
EXACT = SamplingSettings(
    sampler="ddim", steps=10, eta=0.0, noise_level=0, guidance_weight=0.0, ddim_last_step="x0"
)


class ClockNetwork(nn.Module):
    """ε that makes DDIM land on a clip counting time: given latents are read off the mask
    channel, the others continue from the last given one (or meet the next one) at `stride`
    latents per frame; with nothing given, the clip starts at 0."""

    def __init__(self, channels: int, max_stride: int, trained_stride: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(
            in_channels=channels + 1, out_channels=channels, max_noise_level=0, max_stride=max_stride
        )
        self.trained_stride = trained_stride

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, *, stride: torch.Tensor | None = None
    ) -> torch.Tensor:
        latents, mask = x[:, :-1], x[:, -1, :, 0, 0] > 0.5  # b c l h w, b l
        pace = torch.as_tensor(stride if stride is not None else self.trained_stride).float().expand(len(x))
        target = torch.stack([self._clock(latents[i, 0, :, 0, 0], mask[i], pace[i]) for i in range(len(x))])
        x0 = rearrange(target, "b l -> b 1 l 1 1").expand_as(latents)
        a = SCHEDULE.alphas_cumprod[t].float()[:, None, None, None, None]
        return (latents - a.sqrt() * x0) / (1 - a).sqrt()

    @staticmethod
    def _clock(values: torch.Tensor, given: torch.Tensor, pace: torch.Tensor) -> torch.Tensor:
        frames = torch.arange(len(values), dtype=torch.float32)
        index = given.nonzero().flatten()
        if len(index) == 0:
            return frames * pace
        if len(index) == 2 and index[-1] == len(values) - 1:  # interpolation: a line between the keys
            first, last = values[index[0]], values[index[-1]]
            return first + (last - first) * frames / (len(values) - 1)
        last = index[-1]
        return values[last] + (frames - last) * pace


def times(chunks) -> list[float]:
    video = torch.cat(list(chunks), dim=2)
    return [round(v, 3) for v in video[0, 0, :, 0, 0].tolist()]


def long_video(strategy: str, prediction: nn.Module, latents: int = 13) -> list[float]:
    common = dict(videos=1, latents=latents, latent_shape=(1, 2, 2), clip=4, cond_frames=1, sampling=EXACT)
    if strategy == "autoregressive":
        return times(autoregressive_latents(prediction, SCHEDULE, **common))
    interpolation = ClockNetwork(1, max_stride=0, trained_stride=1)
    return times(hierarchical_latents(prediction, interpolation, SCHEDULE, latent_stride=3, **common))


@pytest.mark.parametrize("strategy", ["autoregressive", "hierarchical"])
def test_a_stride_aware_prediction_model_advances_one_latent_per_latent_in_both_strategies(strategy):
    prediction = ClockNetwork(1, max_stride=3, trained_stride=3)
    assert long_video(strategy, prediction) == [float(i) for i in range(13)]


def test_a_model_trained_on_keys_alone_runs_an_autoregressive_video_at_the_key_pace():
    keys_only = ClockNetwork(1, max_stride=0, trained_stride=3)  # the release's prediction model
    assert long_video("autoregressive", keys_only) == [3.0 * i for i in range(13)]
    assert long_video("hierarchical", keys_only) == [float(i) for i in range(13)]


def test_window_span_of_the_key_stride_fits_the_training_span():
    # The training loader hands a stride-aware model spans of window_span(frames, key stride).
    assert window_span(4, 3) == 10
