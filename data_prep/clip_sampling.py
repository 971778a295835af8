"""Which frames make a training clip, and how decoded frames become model input.

The official LVDM video loaders compute strided frame indices and then read *consecutive*
frames from the start index, so a configured stride (Taichi: 4) never applies. Here the
indices below are the ones decoded, and the loader tests check the stride in the pixels.
"""

from __future__ import annotations

import numpy as np
from einops import rearrange

from data_prep.skip import SkipSample


def clip_span(frames: int, stride: int) -> int:
    """Source frames covered by a clip of `frames` frames taken every `stride` frames."""
    if frames < 1 or stride < 1:
        raise ValueError(f"a clip needs frames >= 1 and stride >= 1; got frames={frames}, stride={stride}")
    return (frames - 1) * stride + 1


def strided_clip_indices(num_frames: int, frames: int, stride: int, rng: np.random.Generator) -> list[int]:
    """A random clip: start uniform in [0, num_frames - span], then every `stride`-th frame."""
    span = clip_span(frames, stride)
    if num_frames < span:
        raise SkipSample(
            f"{num_frames} frames is shorter than one clip ({frames} frames at stride {stride} need {span})"
        )
    start = int(rng.integers(0, num_frames - span + 1))
    return [start + stride * k for k in range(frames)]


def random_window_start(length: int, frames: int, rng: np.random.Generator) -> int:
    """Start of a random window of `frames` consecutive latent frames in a sequence of `length`."""
    if length < frames:
        raise SkipSample(f"{length} latent frames is shorter than one window of {frames}")
    return int(rng.integers(0, length - frames + 1))


def frames_to_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 `(t h w c)` RGB frames -> float32 `(c t h w)` in [-1, 1], the autoencoder's input range.

    numpy, not torch: per-sample work runs single-threaded in the loader, and torch's
    intra-op threads on tensors this small cost more than the arithmetic (20x on 2 busy cores).
    """
    video = np.ascontiguousarray(rearrange(frames, "t h w c -> c t h w"), dtype=np.float32)
    video /= 127.5
    video -= 1.0
    return video
