"""Appearance statistics: real bouncing-shapes clips match real ones, shuffled and noise clips do not.

Real clips come from the synthetic source at the demo's 32 pixels: two disjoint sets (train and
test split) for real-vs-real, and the same clips through H.264 for the codec. Shuffling frames in
time keeps every per-frame statistic and must show in the frame change alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.appearance import (
    STATISTICS,
    appearance,
    appearance_ratios,
    mean_appearance,
    statistics_table,
    window_appearance,
)
from data_prep.decode import decode_video
from data_prep.encode import encode_mp4
from data_prep.sources import synthetic

RESOLUTION, FRAMES = 32, 16


def _clips(split: str, count: int) -> list[np.ndarray]:
    found = synthetic.discover(None, [split], num_videos=count, num_frames=FRAMES, resolution=RESOLUTION)
    return [synthetic.render(video.meta) for video in found.videos]


def _pooled(clips: list[np.ndarray]) -> dict:
    return mean_appearance([w for clip in clips for w in window_appearance(clip, window=16)])


@pytest.fixture(scope="module")
def real() -> dict:
    return _pooled(_clips("train", 8))


@pytest.fixture(scope="module")
def test_clips() -> list[np.ndarray]:
    return _clips("test", 8)


@pytest.fixture(scope="module")
def real_ratios(real, test_clips) -> dict:
    return appearance_ratios(_pooled(test_clips), real)


def test_exact_values_on_one_square():
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    frames[0, 4:12, 4:12] = synthetic.PALETTE[0]  # 8x8 square: half size 4
    frames[1, 5:13, 4:12] = synthetic.PALETTE[0]  # moved down one row: 16 pixels change
    stats = appearance(frames)
    assert stats["coverage"] == pytest.approx(64 / 1024)
    assert stats["shape_count"] == 1.0 and stats["shape_size"] == pytest.approx(4.0)
    assert stats["on_palette"] == 1.0
    assert stats["frame_change"] == pytest.approx(16 * sum(synthetic.PALETTE[0]) / (1024 * 3))
    blank = appearance(np.zeros((1, 32, 32, 3), np.uint8))
    assert blank == {
        "coverage": 0.0,
        "shape_count": 0.0,
        "shape_size": None,
        "on_palette": None,
        "frame_change": None,
    }


def test_real_clips_match_real_clips(real_ratios):
    ratios = real_ratios
    assert ratios["on_palette"] == 1.0
    for name in STATISTICS:  # two sets of 8 videos with 1-3 shapes each: sampling spread
        assert 0.7 < ratios[name] < 1.4, (name, ratios)


def test_the_codec_blurs_edges_so_real_references_must_be_decoded_too(test_clips):
    # H.264 halves chroma resolution: at 32 pixels a shape's rim turns to blends that are
    # neither background nor palette, and the detector's area shrinks by the rim. Coverage and
    # count hold; evaluate compares generated mp4s with decoded real shards, codec on both sides.
    coded = [decode_video(encode_mp4(clip)).frames for clip in test_clips[:4]]
    ratios = appearance_ratios(_pooled(coded), _pooled(test_clips[:4]))
    assert ratios["coverage"] == pytest.approx(1.0, abs=0.1)
    assert ratios["shape_count"] == pytest.approx(1.0, abs=0.1)
    assert 1.0 < ratios["frame_change"] < 1.35  # the codec's own flicker
    assert 0.75 < ratios["shape_size"] < 1.0 and 0.6 < ratios["on_palette"] < 0.9


def test_shuffled_clips_are_far_in_frame_change_only(real, test_clips, real_ratios):
    rng = np.random.default_rng(0)
    shuffled = appearance_ratios(_pooled([c[rng.permutation(len(c))] for c in test_clips]), real)
    unshuffled = real_ratios
    assert shuffled["frame_change"] > 2.5 * unshuffled["frame_change"]
    for name in ("coverage", "shape_count", "shape_size", "on_palette"):
        assert shuffled[name] == pytest.approx(unshuffled[name], rel=0.02)


def test_noise_clips_are_far_in_every_statistic(real, test_clips):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, c.shape, dtype=np.uint8) for c in test_clips[:4]]
    ratios = appearance_ratios(_pooled(noise), real)
    assert ratios["coverage"] > 5 and ratios["frame_change"] > 5
    assert ratios["shape_count"] < 0.2 and ratios["on_palette"] < 0.5


def test_windows_and_table():
    clip = np.concatenate(_clips("test", 3))[:40]
    windows = window_appearance(clip, window=16)
    assert [(w["start"], w["end"]) for w in windows] == [(0, 16), (16, 32)]
    table = statistics_table([windows, windows[:1]], "coverage")
    assert table.shape == (2, 2) and np.isnan(table[1, 1]) and table[0, 1] == windows[1]["coverage"]
