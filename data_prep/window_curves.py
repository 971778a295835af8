"""Per-window curves of generated bouncing-shapes videos, with 95% bootstrap intervals over videos.

Joins the two exact measurements of a synthetic video, `synthetic_motion` (objects kept,
motion error, size and colour drift) and `appearance` (coverage, shape count and size, colours
on the palette, frame change), window by window, and turns a set of videos into one curve per
metric: the mean over videos of each window and its percentile-bootstrap interval
(`bootstrap.bootstrap_mean_interval`, videos resampled), the figures the paper's long-video
claims (Fig. 6, 7) rest on. The same for real clips gives the reference each curve is read
against.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict

import numpy as np

from data_prep.appearance import STATISTICS, statistics_table, window_appearance
from data_prep.bootstrap import bootstrap_mean_interval
from data_prep.synthetic_motion import MotionReport, motion_metrics

MOTION = ("objects_found", "spurious_objects", "motion_error", "size_drift", "colour_drift")
CURVES = MOTION + STATISTICS
COMPARED = STATISTICS + ("motion_error",)  # what `ratios_to_real` divides by the real clips' value


def video_windows(video: np.ndarray, *, window: int = 16) -> tuple[MotionReport, list[dict]]:
    """The motion report of `video (t h w c)` uint8 and, per window, its motion scores and
    appearance statistics in one dict (`start`, `end`, and every name of `CURVES`)."""
    report = motion_metrics(video, window=window)
    looks = window_appearance(video, window=window)
    return report, [asdict(scores) | stats for scores, stats in zip(report.windows, looks, strict=True)]


def window_intervals(videos: Sequence[Sequence[dict]], *, seed: int = 0) -> dict[str, dict[str, list]]:
    """Per metric of `CURVES`: `start` of each window and the mean, `low`, `high` (95%) and
    `videos` of `bootstrap_mean_interval` over the videos' `video_windows`."""
    longest = max(videos, key=len, default=[])
    starts = [w["start"] for w in longest]
    return {
        name: {"start": starts, **bootstrap_mean_interval(statistics_table(videos, name), seed=seed)}
        for name in CURVES
    }


def real_reference(clips: Iterable[np.ndarray], *, window: int = 16, seed: int = 0) -> dict:
    """What the curves are read against: every metric of `CURVES` on real clips, pooled over
    their windows: `means`, and `intervals` (mean, bootstrap interval over clips, count)."""
    windows = [w for clip in clips for w in video_windows(clip, window=window)[1]]
    if not windows:
        return {"clips": 0, "means": {}, "intervals": {}}
    intervals = window_intervals([[w] for w in windows], seed=seed)
    return {
        "clips": len(windows),
        "means": _means(windows),
        "intervals": {name: {k: v[0] for k, v in curve.items()} for name, curve in intervals.items()},
    }


def ratios_to_real(videos: Sequence[Sequence[dict]], real: dict) -> dict[str, dict[str, float | None]]:
    """Generated / real for each of `COMPARED` (1 = like the data; None where either is
    unmeasured or the real value is 0): over every window, and over the last window alone (where
    a long video that collapses shows it)."""

    def ratios(windows: list[dict]) -> dict[str, float | None]:
        generated = _means(windows)
        return {
            name: generated[name] / real["means"][name]
            if generated.get(name) is not None and real["means"].get(name)
            else None
            for name in COMPARED
        }

    return {
        "all_windows": ratios([w for video in videos for w in video]),
        "last_window": ratios([video[-1] for video in videos if video]),
    }


def _means(windows: Sequence[dict]) -> dict[str, float | None]:
    """Each metric of `CURVES` averaged over the windows that measured it."""
    means = {}
    for name in CURVES:
        values = [w[name] for w in windows if w.get(name) is not None]
        means[name] = float(np.mean(values)) if values else None
    return means
