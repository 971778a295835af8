"""Long videos from short-clip models (LVDM §3.3): autoregressive and hierarchical generation.

The diffusion models see clips of a few latents; a video of 1,024 frames is 256 latents
(ft = 4). Two strategies build it out of clips, both batched over many videos:

- *autoregressive* (`autoregressive_latents`): one unconditional clip of l latents, then
  repeatedly the prediction model conditioned on the last k latents predicts the next l − k.
- *hierarchical* (`hierarchical_latents`): the same autoregressive loop run on *key*
  latents, `latent_stride` apart in time (the prediction model is trained on windows taken
  every `latent_stride`-th latent), then the interpolation model fills the
  `latent_stride − 1` latents between every pair of neighbouring keys. Errors then
  accumulate over `latents / latent_stride` prediction steps instead of `latents / (l − k)`.

Both condition on z_s, the given latents diffused to a fixed level s (conditional latent
perturbation), with unconditional guidance of weight w; official: DDIM, 50 steps, s = 100,
w = 0.1 (`SamplingSettings`).

Everything is a generator over latent chunks `(n c l h w)`, consumed as it is produced: the
prediction loop keeps only its last k latents, the interpolation keeps the keys of the pairs it
is about to fill, and `long_video_frames` decodes in overlapped windows
(`latent_sequence.decode_stream`), so memory stays flat however long the video.

Defects of the official long-video sampler avoided here: its interpolation loop stops after
the fourth key, dropping every key after it (here every neighbouring pair is filled, and the
keys come out unchanged at positions 0, stride, 2·stride, …); its guidance branch gets no
noise-level embedding (`sample_latents` gives ε_u the same s as ε_c).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

from lvdm.autoencoder import Normalisation, VideoAutoencoder, denormalise
from lvdm.diffusion.masks import frames_mask
from lvdm.diffusion.renormalise import Anchor, anchor_of
from lvdm.diffusion.sampling import model_takes_stride
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.latent_sequence import decode_stream, decoder_context
from lvdm.long_video_steps import (
    Model,
    SamplingSettings,
    check_conditional,
    check_counts,
    fill_between_keys,
    is_conditional,
    model_device,
    sample_clips,
)

Strategy = Literal["autoregressive", "hierarchical"]


def latent_count(frames: int, ft: int) -> int:
    """Latents whose decode covers `frames` frames: ⌈frames / ft⌉ (the surplus is cropped)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    return math.ceil(frames / ft)


def key_count(latents: int, latent_stride: int) -> int:
    """Keys at 0, stride, 2·stride, … covering `latents` latents: ⌈(latents − 1) / stride⌉ + 1."""
    return math.ceil((latents - 1) / latent_stride) + 1


# --- The two strategies, on latents ----------------------------------------------------------


def autoregressive_latents(
    prediction_model: Model,
    schedule: NoiseSchedule,
    *,
    videos: int,
    latents: int,
    latent_shape: tuple[int, int, int],
    clip: int,
    cond_frames: int = 1,
    sampling: SamplingSettings | None = None,
    first_model: Model | None = None,
    max_batch: int = 16,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    stride: int = 1,
) -> Iterator[Tensor]:
    """Yield latent chunks `(n c l h w)`, consecutive in time, `latents` latents in all.

    The first chunk is a clip of `clip` latents sampled unconditionally: from `first_model`
    (an unconditional network) if given, else from the prediction model with an all-False
    mask (its unconditional mode, trained jointly, §3.3). Every later chunk holds the
    `clip − cond_frames` latents the prediction model samples conditioned on the last
    `cond_frames` latents so far, which it is given unchanged (they come out of
    `sample_latents` equal to z_cond, so the video has no seam in latent space). Only those
    last latents are kept between steps.

    The latents are consecutive in the prediction model's own time. A stride-aware network
    (`UNet3D(max_stride=...)`, issue 21) is told `stride`: 1 gives the data's own pace, the
    key stride gives keys (what `hierarchical_latents` asks). A network without a stride
    embedding runs at the one stride it was trained on, whatever `stride` says. The first
    clip comes from `first_model` only at stride 1: the unconditional network knows no other
    pace, so keys start from the prediction model's own unconditional mode at their stride.

    Args:
        prediction_model: conditional network (mask channel) trained on clips of `clip` latents.
        schedule: the schedule the networks were trained with.
        videos: n, sampled together (one `sample_latents` call per step, split into
            `max_batch` videos at most per call).
        latents: latents per video to yield (≥ 1).
        latent_shape: `(c, h, w)` of one latent frame.
        clip: l, latents per sampled clip.
        cond_frames: k, latents each prediction step is conditioned on (1 ≤ k < l).
        sampling: sampler, steps, η, s, w (default `SamplingSettings()`).
        first_model: unconditional network for the first clip; None: the prediction model.
        max_batch: most clips per `sample_latents` call (memory bound).
        generator: source of every random draw (reproducibility).
        device: where to sample; default the prediction model's device.
        stride: latents between consecutive outputs, for a stride-aware prediction model.
    """
    sampling = sampling or SamplingSettings()
    check_counts(videos=videos, latents=latents, max_batch=max_batch)
    if not 1 <= cond_frames < clip:
        raise ValueError(f"cond_frames={cond_frames} must be in [1, clip) = [1, {clip}) to predict anything")
    check_conditional(prediction_model, "prediction_model", sampling)
    device = torch.device(device) if device is not None else model_device(prediction_model)
    if first_model is not None and is_conditional(first_model):
        raise ValueError("first_model has a mask channel: pass the unconditional network, or None")
    shape = (videos, *latent_shape[:1], clip, *latent_shape[1:])
    model_stride = stride if model_takes_stride(prediction_model) else None
    if model_stride is not None and model_stride > 1:
        first_model = None
    return _autoregressive(
        prediction_model,
        first_model,
        schedule,
        shape,
        latents,
        cond_frames,
        sampling,
        generator,
        device,
        max_batch,
        model_stride,
    )


def _autoregressive(
    prediction_model: Model,
    first_model: Model | None,
    schedule: NoiseSchedule,
    shape: tuple[int, int, int, int, int],
    latents: int,
    cond_frames: int,
    sampling: SamplingSettings,
    generator: torch.Generator | None,
    device: torch.device,
    max_batch: int,
    stride: int | None,
) -> Iterator[Tensor]:
    videos, _, clip, _, _ = shape
    if first_model is not None:
        video = sample_clips(first_model, shape, schedule, sampling, generator, device, max_batch)
    else:
        unconditional = torch.zeros(videos, clip, dtype=torch.bool)
        video = sample_clips(
            prediction_model,
            shape,
            schedule,
            sampling,
            generator,
            device,
            max_batch,
            unconditional,
            stride=stride,
        )
    yield video[:, :, :latents]
    anchor = anchor_of(video) if sampling.renormalise else None
    produced = clip
    given = frames_mask(videos, clip, range(cond_frames))
    while produced < latents:
        z_cond = torch.zeros(shape, device=device, dtype=video.dtype)
        z_cond[:, :, :cond_frames] = video[:, :, -cond_frames:]
        video = sample_clips(
            prediction_model,
            shape,
            schedule,
            sampling,
            generator,
            device,
            max_batch,
            given,
            z_cond,
            stride=stride,
            anchor=anchor,
        )
        new = video[:, :, cond_frames:]
        yield new[:, :, : latents - produced]
        produced += new.shape[2]


def interpolate_between_keys(
    interpolation_model: Model,
    keys: Iterable[Tensor],
    schedule: NoiseSchedule,
    *,
    latent_stride: int,
    sampling: SamplingSettings | None = None,
    max_batch: int = 16,
    generator: torch.Generator | None = None,
) -> Iterator[Tensor]:
    """Fill `latent_stride − 1` latents between every pair of neighbouring keys.

    `keys` are chunks `(n c m h w)` of key latents, consecutive in key time; the output is
    chunks `(n c l h w)` of the full latent sequence, key i at position i·latent_stride
    exactly as given, (K − 1)·latent_stride + 1 latents for K keys. Each fill is one
    interpolation clip of `latent_stride + 1` latents with its first and last given (the
    official `interp` model: 5 latents between keys 4 apart). The fills of several
    neighbouring pairs of all n videos go through `sample_latents` together, up to
    `max_batch` clips per call, as soon as their keys have arrived; only the keys of the
    pairs being filled are held (the official loop's early stop after the fourth key is the
    defect this replaces).
    """
    sampling = sampling or SamplingSettings()
    if latent_stride < 2:
        raise ValueError(f"latent_stride={latent_stride}: keys must be at least 2 latents apart to fill")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    check_conditional(interpolation_model, "interpolation_model", sampling)
    return _interpolate(interpolation_model, keys, schedule, latent_stride, sampling, generator, max_batch)


def _interpolate(
    model: Model,
    keys: Iterable[Tensor],
    schedule: NoiseSchedule,
    latent_stride: int,
    sampling: SamplingSettings,
    generator: torch.Generator | None,
    max_batch: int,
) -> Iterator[Tensor]:
    pending: Tensor | None = None  # keys not yet filled after, the last one of the previous fill first
    anchor: Anchor | None = None  # sampling.renormalise: each video's first keys' statistics
    for chunk in keys:
        if sampling.renormalise and anchor is None:
            anchor = anchor_of(chunk)
        pending = chunk if pending is None else torch.cat([pending, chunk], dim=2)
        pairs = max(1, max_batch // pending.shape[0])
        while pending.shape[2] - 1 >= pairs:
            group = pending[:, :, : pairs + 1]
            yield fill_between_keys(
                model, group, schedule, latent_stride, sampling, generator, max_batch, anchor
            )
            pending = pending[:, :, pairs:]
    if pending is None:
        raise ValueError("interpolate_between_keys got no keys")
    if pending.shape[2] > 1:
        yield fill_between_keys(
            model, pending, schedule, latent_stride, sampling, generator, max_batch, anchor
        )
    yield pending[:, :, -1:]


def hierarchical_latents(
    prediction_model: Model,
    interpolation_model: Model,
    schedule: NoiseSchedule,
    *,
    videos: int,
    latents: int,
    latent_shape: tuple[int, int, int],
    clip: int,
    latent_stride: int,
    cond_frames: int = 1,
    sampling: SamplingSettings | None = None,
    first_model: Model | None = None,
    max_batch: int = 16,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Tensor]:
    """Yield latent chunks `(n c l h w)`, `latents` in all: keys by prediction, fills by interpolation.

    Keys: `autoregressive_latents` over key time (the prediction model's clips are keys
    `latent_stride` apart), ⌈(latents − 1) / latent_stride⌉ + 1 of them; `first_model`, if
    given, must have been trained on the same strided windows. Fills:
    `interpolate_between_keys`, pipelined with the key loop, so memory is bounded by a clip
    and a `max_batch` of fills whatever the length. The arguments are
    `autoregressive_latents`' plus `latent_stride` (train_pred.latent_stride, and
    train_interp.frames − 1).
    """
    check_counts(videos=videos, latents=latents, max_batch=max_batch)
    device = torch.device(device) if device is not None else model_device(prediction_model)
    keys = autoregressive_latents(
        prediction_model,
        schedule,
        videos=videos,
        latents=key_count(latents, latent_stride),
        latent_shape=latent_shape,
        clip=clip,
        cond_frames=cond_frames,
        sampling=sampling,
        first_model=first_model,
        max_batch=max_batch,
        generator=generator,
        device=device,
        stride=latent_stride,
    )
    filled = interpolate_between_keys(
        interpolation_model,
        keys,
        schedule,
        latent_stride=latent_stride,
        sampling=sampling,
        max_batch=max_batch,
        generator=generator,
    )
    return take_latents(filled, latents)


def take_latents(chunks: Iterable[Tensor], latents: int) -> Iterator[Tensor]:
    """The first `latents` latents of a chunk stream `(n c l h w)`; stops pulling once there."""
    produced = 0
    for chunk in chunks:
        if produced >= latents:
            return
        part = chunk[:, :, : latents - produced]
        produced += part.shape[2]
        yield part
    if produced < latents:
        raise ValueError(f"the latent stream ended after {produced} of {latents} latents")


# --- From models to frames --------------------------------------------------------------------


@dataclass
class LongVideoModels:
    """The trained networks a long video needs, and the latent normalisation they share.

    Diffusion runs on `(z + shift) * scale`; frames decode from `z / scale − shift`.
    `interpolation` is needed by the hierarchical strategy only; `unconditional` (optional)
    samples the first clip instead of the prediction model's unconditional mode. Networks in
    eval mode with their EMA weights, on one device (the autoencoder may sit elsewhere).
    """

    prediction: Model
    autoencoder: VideoAutoencoder
    schedule: NoiseSchedule
    scale: Normalisation
    shift: Normalisation
    interpolation: Model | None = None
    unconditional: Model | None = None


@dataclass(frozen=True)
class LongVideoPlan:
    """What to generate: strategy, length in frames, clip layout, sampling, memory bounds.

    `clip`, `cond_frames`, `latent_stride` are the prediction model's training windows
    (train_pred.frames, .cond_frames, .latent_stride; the interpolation model's clip is
    latent_stride + 1). `decode_window` latents are decoded per window with the decoder's
    measured context on either side (`decoder_context`); `decode_batch` videos per decode.
    """

    strategy: Strategy = "hierarchical"
    frames: int = 1024
    clip: int = 4
    cond_frames: int = 1
    latent_stride: int = 4
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    max_batch: int = 16
    decode_window: int = 8
    decode_batch: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in ("autoregressive", "hierarchical"):
            raise ValueError(f"strategy must be 'autoregressive' or 'hierarchical', got {self.strategy!r}")
        if self.frames < 1:
            raise ValueError(f"frames must be >= 1, got {self.frames}")


def long_video_latents(
    models: LongVideoModels,
    plan: LongVideoPlan,
    *,
    videos: int,
    latent_shape: tuple[int, int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Iterator[Tensor]:
    """Normalised latent chunks `(n c l h w)` of `plan.strategy`, ⌈frames / ft⌉ latents in all."""
    latents = latent_count(plan.frames, models.autoencoder.config.ft)
    common = {
        "videos": videos,
        "latents": latents,
        "latent_shape": latent_shape,
        "clip": plan.clip,
        "cond_frames": plan.cond_frames,
        "sampling": plan.sampling,
        "first_model": models.unconditional,
        "max_batch": plan.max_batch,
        "generator": generator,
        "device": device,
    }
    if plan.strategy == "autoregressive":
        return autoregressive_latents(models.prediction, models.schedule, **common)
    if models.interpolation is None:
        raise ValueError(
            "the hierarchical strategy needs the interpolation model (LongVideoModels.interpolation)"
        )
    return hierarchical_latents(
        models.prediction,
        models.interpolation,
        models.schedule,
        latent_stride=plan.latent_stride,
        **common,
    )


def long_video_frames(
    models: LongVideoModels,
    plan: LongVideoPlan,
    *,
    videos: int,
    size: tuple[int, int],
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    context: int | None = None,
    progress: bool = False,
    on_latents: Callable[[Tensor], None] | None = None,
) -> Iterator[Tensor]:
    """Generate `videos` long videos as uint8 RGB frame chunks `(n t h w c)` on the CPU,
    `plan.frames` frames per video in all, ready for an mp4 writer
    (`data_prep.encode.write_mp4_streams`).

    Latents are generated chunk by chunk, denormalised, decoded in overlapped windows
    (`decode_stream`, `context` latents each side; None measures the decoder's reach) and
    handed on, so nothing grows with `plan.frames`. `size` is `(height, width)` in pixels,
    divisible by the autoencoder's fs. `on_latents` sees every normalised latent chunk
    `(n c l h w)` before it is decoded (e.g. `latent_stats.WindowedLatentStats.add`).
    """
    autoencoder = models.autoencoder
    fs = autoencoder.config.fs
    height, width = size
    if height % fs or width % fs:
        raise ValueError(f"size {height}x{width} must divide by the autoencoder's fs={fs}")
    latent_shape = (autoencoder.config.latent_channels, height // fs, width // fs)
    latents = long_video_latents(
        models, plan, videos=videos, latent_shape=latent_shape, generator=generator, device=device
    )
    if on_latents is not None:
        latents = _tapped(latents, on_latents)
    ae_device = model_device(autoencoder)
    denormalised = (denormalise(chunk.to(ae_device), models.scale, models.shift) for chunk in latents)
    context = decoder_context(autoencoder) if context is None else context
    decoded = decode_stream(
        autoencoder, denormalised, window=plan.decode_window, context=context, batch_size=plan.decode_batch
    )
    return _cropped_frames(decoded, plan, progress)


def _tapped(chunks: Iterable[Tensor], see: Callable[[Tensor], None]) -> Iterator[Tensor]:
    for chunk in chunks:
        see(chunk)
        yield chunk


def _cropped_frames(decoded: Iterable[Tensor], plan: LongVideoPlan, progress: bool) -> Iterator[Tensor]:
    """uint8 frames of the decoded chunks, cut at `plan.frames`: ⌈frames / ft⌉ latents decode
    to up to ft − 1 frames more."""
    written = 0
    with tqdm(total=plan.frames, desc=f"{plan.strategy} frames", unit="frame", disable=not progress) as bar:
        for video in decoded:
            video = video[:, :, : plan.frames - written]
            written += video.shape[2]
            bar.update(video.shape[2])
            yield to_uint8_frames(video)


def to_uint8_frames(video: Tensor) -> Tensor:
    """`(b c t h w)` in [-1, 1] -> uint8 `(b t h w c)` on the CPU, rounded, clipped."""
    frames = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(frames, "b c t h w -> b t h w c").cpu()
