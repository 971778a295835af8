"""Synthetic-motion metrics: real bouncing-shapes videos score perfect, broken motion does not.

Real videos come from the source itself (`discover` + `render`, as the shard stage reads them)
at the demo's 32 pixels. "Perfect" is exact for objects found and colour; position is exact up
to rasterisation: a binary-rendered centroid is off by at most 0.5 pixel per axis, so the
second difference that the motion error is can reach 2 pixels per axis, 2·√2 in all, and
averages about 0.5 pixel.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from data_prep.decode import decode_video
from data_prep.encode import write_mp4
from data_prep.sources import synthetic
from data_prep.synthetic_motion import (
    PALETTE,
    average_windows,
    bounce_prediction_error,
    detect_shapes,
    expected_from_meta,
    motion_metrics,
    window_bounds,
)

RESOLUTION, FRAMES = 32, 48
QUANTISATION_BOUND = 2 * math.sqrt(2)  # pixels: (0.5 + 2·0.5 + 0.5) per axis, two axes


@pytest.fixture(scope="module")
def real() -> list[tuple[dict, np.ndarray]]:
    found = synthetic.discover(None, ["test"], num_videos=4, num_frames=FRAMES, resolution=RESOLUTION)
    return [(video.meta, synthetic.render(video.meta)) for video in found.videos]


def _pooled_motion_error(reports) -> float:
    errors = [r.video.motion_error * r.video.motion_samples for r in reports]
    return sum(errors) / sum(r.video.motion_samples for r in reports)


def test_window_bounds_are_whole_non_overlapping_windows():
    assert window_bounds(48, 16) == [(0, 16), (16, 32), (32, 48)]
    assert window_bounds(47, 16) == [(0, 16), (16, 32)]
    assert window_bounds(15, 16) == []
    assert window_bounds(1024, 16)[-1] == (1008, 1024) and len(window_bounds(1024, 16)) == 64
    with pytest.raises(ValueError):
        window_bounds(16, 0)


def test_windows_drop_the_tail_but_the_video_summary_does_not(real):
    meta, frames = real[0]
    blank_tail = frames[:40].copy()
    blank_tail[32:] = synthetic.render(meta)[0, 0, 0]  # background: every shape lost for 8 frames
    report = motion_metrics(blank_tail, expected=expected_from_meta(meta)[:40])
    assert [(w.start, w.end) for w in report.windows] == [(0, 16), (16, 32)]
    assert [w.objects_found for w in report.windows] == [1.0, 1.0]
    assert report.video.objects_found == pytest.approx(32 / 40)

    whole = motion_metrics(frames, expected=expected_from_meta(meta))
    assert sum(w.motion_samples for w in whole.windows) == whole.video.motion_samples
    assert np.mean([w.objects_found for w in whole.windows]) == pytest.approx(whole.video.objects_found)


def test_a_video_blank_from_its_first_window_keeps_no_objects_it_never_had(real):
    meta, frames = real[0]
    blank = np.broadcast_to(synthetic.render(meta)[0, 0, 0], frames[:32].shape).copy()
    report = motion_metrics(blank)  # generated: expected = what its first window shows = nothing
    assert [w.objects_found for w in report.windows] == [None, None]
    assert report.video.objects_found is None


def test_detections_match_the_metadata_up_to_rasterisation(real):
    for meta, frames in real:
        for frame, positions in zip(frames, meta["positions"], strict=True):
            found = {d.colour_index: d for d in detect_shapes(frame)}
            for shape, (x, y) in zip(meta["shapes"], positions, strict=True):
                d = found.get(PALETTE.index(tuple(shape["colour"])))
                if d is None or d.touching:  # hidden or partly occluded: not the whole shape
                    continue
                assert abs(d.x - x) <= 0.5 and abs(d.y - y) <= 0.5
                assert d.half_size == pytest.approx(shape["half_size"], abs=0.5)
                assert d.colour == tuple(float(c) for c in shape["colour"])


def test_the_sources_own_trajectories_have_zero_motion_error():
    """On the true (unrasterised) positions the bounce rule is exact: the walls are right."""
    found = synthetic.discover(None, ["train"], num_videos=16, num_frames=64, resolution=RESOLUTION)
    errors, bounces = [], 0
    for video in found.videos:
        positions, velocities = np.array(video.meta["positions"]), np.array(video.meta["velocities"])
        bounces += int((np.sign(velocities[1:]) != np.sign(velocities[:-1])).sum())
        for k, shape in enumerate(video.meta["shapes"]):
            half = shape["half_size"]
            for t in range(2, len(positions)):
                for axis in (0, 1):
                    a, b, c = positions[t - 2 : t + 1, k, axis]
                    errors.append(bounce_prediction_error(a, b, c, half, RESOLUTION - half))
    assert bounces > 50
    assert max(errors) < 1e-9


def test_real_videos_score_perfect(real):
    for meta, frames in real:
        score = motion_metrics(frames, expected=expected_from_meta(meta)).video
        assert score.objects_found == 1.0 and score.spurious_objects == 0.0
        assert score.colour_drift == 0.0
        assert score.size_drift < 0.1  # area of a 20-pixel circle jitters as it moves
        assert score.motion_samples >= 20  # fewer where shapes touch: those are left out
        assert score.motion_error < 0.75 and score.motion_error_max <= QUANTISATION_BOUND


def test_shuffling_frames_in_time_raises_the_motion_error(real):
    rng = np.random.default_rng(0)
    ordered = [motion_metrics(frames) for _, frames in real]
    shuffled = [motion_metrics(frames[rng.permutation(FRAMES)]) for _, frames in real]
    assert _pooled_motion_error(shuffled) > 10 * _pooled_motion_error(ordered)  # measured: 16x
    assert all(
        s.video.motion_error > 3 * o.video.motion_error for s, o in zip(shuffled, ordered, strict=True)
    )


def test_a_shape_painted_out_lowers_objects_found(real):
    meta, frames = real[0]
    expected = expected_from_meta(meta)
    colour = meta["shapes"][-1]["colour"]  # drawn last: never hidden
    painted = frames.copy()
    hit = (painted[10:20] == colour).all(axis=-1)
    painted[10:20][hit] = 0
    report = motion_metrics(painted, expected=expected)
    lost = sum(1 / len(expected[t]) for t in range(10, 20))
    assert report.windows[0].objects_found == pytest.approx(
        1 - sum(1 / len(expected[t]) for t in range(10, 16)) / 16
    )
    assert report.video.objects_found == pytest.approx(1 - lost / FRAMES)


def test_a_shape_appearing_from_nowhere_is_spurious(real):
    meta, frames = real[0]
    unused = next(c for c in PALETTE if list(c) not in [s["colour"] for s in meta["shapes"]])
    added = frames.copy()
    added[24:, 1:6, 1:6] = unused  # a 5x5 square in a corner from frame 24 on
    report = motion_metrics(added)  # expected from the first window, as for a generated video
    assert [w.spurious_objects for w in report.windows] == [0.0, 0.5, 1.0]


def _clear_shapes_found(corrupted: np.ndarray, clean: np.ndarray) -> bool:
    """Every shape that stands clear of the others in the clean frame is found in the corrupted one."""
    for before, after in zip(clean, corrupted, strict=True):
        clear = {d.colour_index for d in detect_shapes(before) if not d.touching}
        if clear - {d.colour_index for d in detect_shapes(after)}:
            return False
    return True


def test_noise_and_blur_keep_the_shapes(real):
    """Only slivers of partly hidden shapes are lost (measured: none of 2,600 clear shapes)."""
    rng = np.random.default_rng(0)
    for meta, frames in real:
        expected = expected_from_meta(meta)
        noisy = np.clip(frames + rng.normal(0, 20, frames.shape), 0, 255).astype(np.uint8)
        blurred = (
            ndimage.gaussian_filter(frames.astype(np.float32), (0, 0.7, 0.7, 0)).round().astype(np.uint8)
        )
        for corrupted in (noisy, blurred):
            score = motion_metrics(corrupted, expected=expected).video
            assert score.objects_found > 0.9 and score.spurious_objects == 0.0
            assert score.motion_error < 1.0
            assert _clear_shapes_found(corrupted, frames)


def test_h264_round_trip_scores_nearly_perfect(real, tmp_path):
    """Generated videos are read back from mp4, whose yuv420p halves the chroma of 5-pixel shapes."""
    for i, (meta, frames) in enumerate(real):
        decoded = decode_video(write_mp4(tmp_path / f"{i}.mp4", frames)).frames
        assert decoded.shape == frames.shape
        score = motion_metrics(decoded, expected=expected_from_meta(meta)).video
        assert score.objects_found > 0.9 and score.spurious_objects == 0.0
        assert score.colour_drift < 30 and score.motion_error < 1.5
        assert _clear_shapes_found(decoded, frames)


def test_report_is_json_serialisable_and_averages_over_videos(real):
    reports = [motion_metrics(frames) for _, frames in real[:2]]
    assert json.loads(json.dumps(reports[0].as_dict()))["windows"][2]["start"] == 32
    curve = average_windows(reports)
    assert [(row["start"], row["end"]) for row in curve] == [(0, 16), (16, 32), (32, 48)]
    assert curve[1]["objects_found"] == pytest.approx(np.mean([r.windows[1].objects_found for r in reports]))
