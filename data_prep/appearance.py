"""Appearance statistics of bouncing-shapes videos: does a generated video look like the data?

The motion metrics (`data_prep.synthetic_motion`) follow objects; they say nothing about a
video that is two-fifths coloured blobs or flickers from frame to frame, which is how the small
models' samples failed (issue 21: 40% of pixels non-black against the data's 8%, frame change
17 against 4). These five statistics are cheap, exact and need no weights, and each reads the
palette, background and detector of the synthetic source, so they move with it:

- `coverage`: fraction of pixels that are not background (farther than the detector's
  `colour_tolerance` from the background colour);
- `shape_count`: objects `detect_shapes` finds per frame;
- `shape_size`: mean half size in pixels of those objects (circle radius, half a square's side);
- `on_palette`: of the non-background pixels, the fraction within the tolerance of a palette
  colour (the rest are blends, blur or noise);
- `frame_change`: mean absolute difference of consecutive frames over pixels and channels
  (0-255).

All are per window of `window` frames (`window_bounds`: non-overlapping, a trailing partial
window dropped), so a long video gives a curve over frame index; `frame_change` uses the pairs
inside a window. `appearance_ratios` divides a generated set's statistics by the real set's:
1 is "looks like the data".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_prep.synthetic_motion import (
    BACKGROUND,
    PALETTE,
    colour_tolerance,
    detect_shapes,
    window_bounds,
)

STATISTICS = ("coverage", "shape_count", "shape_size", "on_palette", "frame_change")


def appearance(
    frames: np.ndarray,
    *,
    palette: Sequence[Sequence[int]] = PALETTE,
    background: Sequence[int] = BACKGROUND,
    tolerance: float | None = None,
    min_area: float | None = None,
) -> dict[str, float | None]:
    """The five statistics of one clip `(t h w c)` uint8, pooled over its frames.

    None where a statistic has nothing to measure: `shape_size` without a detected object,
    `on_palette` without a non-background pixel, `frame_change` for a single frame.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"appearance expects a (t, h, w, 3) uint8 clip; got {frames.dtype} {frames.shape}")
    tolerance = colour_tolerance(palette, background) if tolerance is None else tolerance
    pixels = frames.astype(np.float32)
    shape_pixels = np.linalg.norm(pixels - np.asarray(background, np.float32), axis=-1) > tolerance
    to_palette = np.linalg.norm(pixels[..., None, :] - np.asarray(palette, np.float32), axis=-1).min(-1)
    shapes = int(shape_pixels.sum())
    detections = [
        detect_shapes(frame, palette=palette, background=background, tolerance=tolerance, min_area=min_area)
        for frame in frames
    ]
    sizes = [d.half_size for found in detections for d in found]
    change = np.abs(np.diff(frames.astype(np.int16), axis=0)) if len(frames) > 1 else None
    return {
        "coverage": float(shape_pixels.mean()),
        "shape_count": float(np.mean([len(found) for found in detections])),
        "shape_size": float(np.mean(sizes)) if sizes else None,
        "on_palette": float((to_palette[shape_pixels] <= tolerance).mean()) if shapes else None,
        "frame_change": float(change.mean()) if change is not None else None,
    }


def window_appearance(video: np.ndarray, *, window: int = 16, **options) -> list[dict[str, float | None]]:
    """`appearance` of every non-overlapping `window`-frame window of `video (t h w c)`, with its
    `start` and `end` frame; options as `appearance`."""
    return [
        {"start": start, "end": end, **appearance(video[start:end], **options)}
        for start, end in window_bounds(len(video), window)
    ]


def statistics_table(windows: Sequence[Sequence[dict]], statistic: str) -> np.ndarray:
    """`(videos windows)` float array of one statistic over several videos' `window_appearance`
    (or `MotionScores` dicts), NaN where unmeasured or where a video has fewer windows."""
    count = max((len(w) for w in windows), default=0)
    table = np.full((len(windows), count), np.nan)
    for i, video in enumerate(windows):
        for k, scores in enumerate(video):
            if scores.get(statistic) is not None:
                table[i, k] = scores[statistic]
    return table


def mean_appearance(clips: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Each statistic averaged over clips (or windows) that measured it."""
    means: dict[str, float | None] = {}
    for name in STATISTICS:
        values = [clip[name] for clip in clips if clip.get(name) is not None]
        means[name] = float(np.mean(values)) if values else None
    return means


def appearance_ratios(
    generated: dict[str, float | None], real: dict[str, float | None]
) -> dict[str, float | None]:
    """generated / real per statistic (1 = like the data); None where either is missing or the
    real value is 0."""
    return {
        name: generated[name] / real[name] if generated.get(name) is not None and real.get(name) else None
        for name in STATISTICS
    }
