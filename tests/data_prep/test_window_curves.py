"""Per-window curves with bootstrap bands: real videos read as real, collapsing videos do not."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.sources import synthetic
from data_prep.window_curves import CURVES, ratios_to_real, real_reference, video_windows, window_intervals


def _videos(split: str, count: int, frames: int) -> list[np.ndarray]:
    found = synthetic.discover(None, [split], num_videos=count, num_frames=frames, resolution=32)
    return [synthetic.render(video.meta) for video in found.videos]


@pytest.fixture(scope="module")
def real() -> dict:
    return real_reference(_videos("train", 8, 16), window=16)


def test_real_videos_give_curves_near_the_real_reference_and_noise_far(real):
    videos = _videos("test", 4, 48)
    windows = [video_windows(video, window=16)[1] for video in videos]
    intervals = window_intervals(windows)
    assert set(intervals) == set(CURVES)
    for curve in intervals.values():
        assert curve["start"] == [0, 16, 32] and curve["videos"] == [4, 4, 4]
        for mean, low, high in zip(curve["mean"], curve["low"], curve["high"], strict=True):
            assert mean is None or low <= mean <= high
    assert min(intervals["objects_found"]["mean"]) > 0.9  # occlusion hides a shape now and then
    ratios = ratios_to_real(windows, real)["all_windows"]
    for name in ("coverage", "shape_size", "frame_change", "motion_error"):
        assert 0.5 < ratios[name] < 2.0, (name, ratios)

    # A video that collapses to noise after its first window: the last window is far from real.
    rng = np.random.default_rng(0)
    collapsed = [v.copy() for v in videos]
    for video in collapsed:
        video[16:] = rng.integers(0, 256, video[16:].shape, dtype=np.uint8)
    broken = ratios_to_real([video_windows(v, window=16)[1] for v in collapsed], real)
    assert broken["last_window"]["coverage"] > 5 and broken["last_window"]["frame_change"] > 5
    assert broken["last_window"]["shape_count"] < 0.2
    assert real["clips"] == 8 and real["intervals"]["coverage"]["low"] <= real["means"]["coverage"]
