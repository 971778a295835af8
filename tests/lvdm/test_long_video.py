from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.diffusion import NoiseSchedule
from lvdm.long_video import (
    LongVideoModels,
    LongVideoPlan,
    SamplingSettings,
    autoregressive_latents,
    hierarchical_latents,
    interpolate_between_keys,
    long_video_frames,
)
from lvdm.unet import UNet3D

TINY = dict(
    out_channels=4,
    model_channels=8,
    channel_mult=[1, 2],
    num_res_blocks=1,
    attention_resolutions=[2],
    num_heads=2,
    norm_groups=4,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LATENT = (4, 2, 2)  # (c h w)
CLEAN = SamplingSettings(steps=2, noise_level=0, guidance_weight=0.0)
OFFICIAL = SamplingSettings(steps=2, noise_level=100, guidance_weight=0.1)


@pytest.fixture(scope="module")
def schedule() -> NoiseSchedule:
    return NoiseSchedule.linear()


@pytest.fixture(scope="module")
def prediction() -> UNet3D:
    torch.manual_seed(0)
    return UNet3D(in_channels=5, max_noise_level=250, temporal_length=4, **TINY).eval()


@pytest.fixture(scope="module")
def interpolation() -> UNet3D:
    torch.manual_seed(1)
    return UNet3D(in_channels=5, max_noise_level=250, temporal_length=5, **TINY).eval()


class Recorder(nn.Module):
    """The wrapped network, keeping the input of its first step in every sampling call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config
        self.inputs: list[torch.Tensor] = []
        self._last_t: int | None = None

    def forward(self, x, t, **kwargs):
        if self._last_t is None or int(t[0]) > self._last_t:  # timesteps restart high: a new call
            self.inputs.append(x.clone())
        self._last_t = int(t[0])
        return self.model(x, t, **kwargs)


class ZeroNoise(nn.Module):
    """A conditional ε-network predicting 0: free, for bookkeeping tests of long lengths."""

    config = SimpleNamespace(in_channels=5, out_channels=4, max_noise_level=250)

    def forward(self, x, t, noise_level=None):
        return torch.zeros_like(x[:, :4])


def total(chunks) -> torch.Tensor:
    return torch.cat(list(chunks), dim=2)


@pytest.mark.parametrize("latents", [1, 4, 5, 11])
def test_autoregressive_yields_exactly_the_requested_latents(prediction, schedule, latents):
    chunks = list(
        autoregressive_latents(
            prediction, schedule, videos=2, latents=latents, latent_shape=LATENT, clip=4, sampling=OFFICIAL
        )
    )
    assert total(chunks).shape == (2, *LATENT[:1], latents, *LATENT[1:])
    assert max(c.shape[2] for c in chunks) <= 4


@pytest.mark.parametrize("latents", [1, 5, 14])
def test_hierarchical_yields_exactly_the_requested_latents(prediction, interpolation, schedule, latents):
    video = total(
        hierarchical_latents(
            prediction,
            interpolation,
            schedule,
            videos=2,
            latents=latents,
            latent_shape=LATENT,
            clip=4,
            latent_stride=4,
            sampling=OFFICIAL,
        )
    )
    assert video.shape == (2, 4, latents, 2, 2)


@pytest.mark.parametrize("strategy", ["autoregressive", "hierarchical"])
@pytest.mark.parametrize("frames", [7, 24, 37])
def test_long_video_frames_are_exactly_the_requested_count(
    prediction, interpolation, schedule, strategy, frames
):
    torch.manual_seed(2)
    autoencoder = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8)).eval()
    models = LongVideoModels(prediction, autoencoder, schedule, 1.0, 0.0, interpolation=interpolation)
    plan = LongVideoPlan(strategy=strategy, frames=frames, clip=4, latent_stride=4, sampling=OFFICIAL)
    chunks = list(long_video_frames(models, plan, videos=2, size=(8, 8), context=6))
    video = torch.cat(chunks, dim=1)
    assert video.shape == (2, frames, 8, 8, 3) and video.dtype == torch.uint8
    assert max(c.shape[1] for c in chunks) <= plan.decode_window * 2


@pytest.mark.parametrize("cond_frames", [1, 2])
def test_autoregressive_steps_condition_on_the_last_latents_unchanged(prediction, schedule, cond_frames):
    recorder = Recorder(prediction)
    video = total(
        autoregressive_latents(
            recorder,
            schedule,
            videos=2,
            latents=10,
            latent_shape=LATENT,
            clip=4,
            cond_frames=cond_frames,
            sampling=CLEAN,
            generator=torch.Generator().manual_seed(0),
        )
    )
    first, *steps = recorder.inputs
    assert not first[:, 4].any()  # the first clip: unconditional mode, all-False mask
    new = 4 - cond_frames
    assert len(steps) == -(-(10 - 4) // new)
    for i, x in enumerate(steps):
        end = 4 + i * new  # latents before this step
        assert x[:, 4, :cond_frames].eq(1).all() and not x[:, 4, cond_frames:].any()
        assert torch.equal(x[:, :4, :cond_frames], video[:, :, end - cond_frames : end])


def test_hierarchical_keeps_every_key_exactly_at_its_position(prediction, interpolation, schedule):
    # The official loop stopped after the fourth key; here 7 keys, 6 pairs, several calls.
    recorder = Recorder(interpolation)
    stride = 3
    video = total(
        hierarchical_latents(
            prediction,
            recorder,
            schedule,
            videos=2,
            latents=6 * stride + 1,
            latent_shape=LATENT,
            clip=4,
            latent_stride=stride,
            sampling=CLEAN,
            max_batch=4,
            generator=torch.Generator().manual_seed(0),
        )
    )
    assert video.shape[2] == 19
    # The keys each interpolation call was given, per video, in time order.
    starts, last = [], None
    for x in recorder.inputs:
        pairs = x.shape[0] // 2
        clips = x.view(pairs, 2, *x.shape[1:]).transpose(0, 1)  # "(p n) c t h w -> n p c t h w"
        assert clips[:, :, 4, [0, -1]].eq(1).all() and not clips[:, :, 4, 1:-1].any()
        starts.append(clips[:, :, :4, 0])
        last = clips[:, -1, :4, -1]
    keys = torch.cat([torch.cat(starts, dim=1), last[:, None]], dim=1)  # (n k c h w)
    assert keys.shape[1] == 7 and len(recorder.inputs) == 3  # 2 pairs of both videos per call
    assert torch.equal(video[:, :, ::stride], keys.permute(0, 2, 1, 3, 4))


class CaptionChecker(nn.Module):
    """A text-conditioned ε-network predicting 0 that checks each row's caption against its keys.

    Video i's keys are all i and its caption's tokens are all i, so a row whose given latents and
    caption disagree was paired with another video's caption.
    """

    config = SimpleNamespace(in_channels=5, out_channels=4, max_noise_level=250)

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x, t, context, noise_level=None):
        video_of_keys = x[:, 0, 0].mean(dim=(1, 2))  # the first given key, one value per row
        assert torch.equal(video_of_keys, context[:, 0, 0]), (video_of_keys, context[:, 0, 0])
        self.rows += x.shape[0]
        return torch.zeros_like(x[:, :4])


@pytest.mark.parametrize("max_batch", [3, 6, 9])
def test_text_guided_fills_keep_each_videos_caption(schedule, max_batch):
    from lvdm.diffusion.text_guidance import text_guided

    videos, keys_per_video = 3, 6
    ids = torch.arange(videos, dtype=torch.float32)
    keys = ids.view(videos, 1, 1, 1, 1).expand(videos, 4, keys_per_video, 2, 2)
    captions = ids.view(videos, 1, 1).expand(videos, 2, 8)
    checker = CaptionChecker()
    guided = text_guided(checker, captions, torch.full((2, 8), -1.0), guidance_scale=1.0)
    video = total(
        interpolate_between_keys(
            guided, [keys.clone()], schedule, latent_stride=2, sampling=CLEAN, max_batch=max_batch
        )
    )
    assert torch.equal(video[:, :, ::2], keys)
    assert checker.rows == videos * (keys_per_video - 1) * CLEAN.steps  # every fill was checked


@pytest.mark.parametrize("sampling", [CLEAN, OFFICIAL])
def test_interpolation_returns_given_keys_unchanged_at_every_stride(interpolation, schedule, sampling):
    keys = torch.randn(2, 4, 8, 2, 2, generator=torch.Generator().manual_seed(3))
    chunks = [keys[:, :, :3], keys[:, :, 3:4], keys[:, :, 4:]]
    video = total(
        interpolate_between_keys(
            interpolation, chunks, schedule, latent_stride=3, sampling=sampling, max_batch=6
        )
    )
    assert video.shape[2] == 7 * 3 + 1
    assert torch.equal(video[:, :, ::3], keys)


@pytest.mark.parametrize("strategy", ["autoregressive", "hierarchical"])
def test_latents_held_do_not_grow_with_length(schedule, strategy):
    def chunk_sizes(latents: int) -> list[int]:
        common = dict(videos=3, latents=latents, latent_shape=LATENT, clip=4, sampling=OFFICIAL, max_batch=6)
        if strategy == "autoregressive":
            chunks = autoregressive_latents(ZeroNoise(), schedule, **common)
        else:
            chunks = hierarchical_latents(ZeroNoise(), ZeroNoise(), schedule, latent_stride=4, **common)
        sizes = [c.shape[2] for c in chunks]
        assert sum(sizes) == latents
        return sizes

    short, long = chunk_sizes(20), chunk_sizes(512)  # 40 and 1,024 frames at ft = 2
    assert max(long) == max(short) <= 8
    assert len(long) > 10 * len(short) / 2


def test_keys_are_pulled_only_as_far_as_the_fills_need(schedule):
    pulled = 0

    def keys():
        nonlocal pulled
        for _ in range(40):
            pulled += 2
            yield torch.zeros(3, 4, 2, 2, 2)

    produced = 0
    for chunk in interpolate_between_keys(ZeroNoise(), keys(), schedule, latent_stride=4, max_batch=6):
        produced += chunk.shape[2]
        assert pulled - produced // 4 <= 2 + 2 + 1  # a group of pairs, one chunk, the shared key
    assert produced == 79 * 4 + 1


def test_conditional_networks_and_noise_levels_are_checked(prediction, schedule):
    unconditional = UNet3D(in_channels=4, **TINY).eval()
    with pytest.raises(ValueError, match="no mask channel"):
        next(
            autoregressive_latents(unconditional, schedule, videos=1, latents=4, latent_shape=LATENT, clip=4)
        )
    with pytest.raises(ValueError, match="0..250"):
        next(
            autoregressive_latents(
                prediction,
                schedule,
                videos=1,
                latents=4,
                latent_shape=LATENT,
                clip=4,
                sampling=SamplingSettings(noise_level=300),
            )
        )


class StepCounter(ZeroNoise):
    """Counts the network calls of each sampling call (timesteps restart high: a new call)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self._last_t: int | None = None

    def forward(self, x, t, noise_level=None):
        if self._last_t is None or int(t[0]) > self._last_t:
            self.calls.append(0)
        self._last_t = int(t[0])
        self.calls[-1] += 1
        return super().forward(x, t, noise_level)


def test_the_first_clip_can_have_its_own_sampler_and_steps(schedule):
    network = StepCounter()
    sampling = SamplingSettings(steps=2, noise_level=0, guidance_weight=0.0,
                                first_clip_sampler="ddim", first_clip_steps=5)  # fmt: skip
    total(autoregressive_latents(network, schedule, videos=1, latents=10, latent_shape=LATENT, clip=4,
                                 sampling=sampling))  # fmt: skip
    # The first clip has nothing given: 5 steps; then ceil((10 - 4) / 3) = 2 conditioned clips of 2.
    assert network.calls == [5, 2, 2]
