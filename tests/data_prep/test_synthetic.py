"""The bouncing-shapes dataset: deterministic, and its stored motion is where the pixels are."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep.sources import DATASETS, load_frames, synthetic


def make(seed=0, num_videos=6, **kwargs):
    options = {"num_frames": 24, "resolution": 48, "seed": seed} | kwargs
    return DATASETS["synthetic"](None, ["train", "test"], num_videos=num_videos, **options)


def test_counts_keys_and_kind_per_split():
    found = make(num_videos={"train": 3, "test": 2})
    assert [v.key for v in found.videos] == [
        "test_000000",
        "test_000001",
        "train_000000",
        "train_000001",
        "train_000002",
    ]
    assert found.skipped == []
    assert {(v.kind, v.path) for v in found.videos} == {("synthetic", "")}


def test_same_seed_gives_identical_videos_and_other_seed_different():
    first = [load_frames(v).frames for v in make(seed=3).videos]
    again = [load_frames(v).frames for v in make(seed=3).videos]
    other = [load_frames(v).frames for v in make(seed=4).videos]
    for a, b, c in zip(first, again, other, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
    assert not np.array_equal(first[0], first[1]), "videos of one seed differ from each other"


def test_adding_videos_leaves_existing_ones_unchanged():
    small = {v.key: v.meta for v in make(num_videos=2).videos}
    large = {v.key: v.meta for v in make(num_videos=5).videos}
    assert all(large[k] == meta for k, meta in small.items())


def test_meta_survives_json_and_renders_the_same_frames():
    video = make().videos[0]
    decoded = load_frames(video)
    assert decoded.frames.shape == (24, 48, 48, 3) and decoded.frames.dtype == np.uint8
    assert decoded.fps == 8.0 and decoded.num_frames == 24
    np.testing.assert_array_equal(synthetic.render(json.loads(json.dumps(video.meta))), decoded.frames)


def test_stored_positions_match_the_colour_centroid_within_one_pixel():
    errors = []
    for video in make(num_videos=8, max_shapes=3).videos:
        frames = load_frames(video).frames
        shapes, positions = video.meta["shapes"], np.array(video.meta["positions"])  # (t k 2)
        for t, frame in enumerate(frames):
            for k, shape in enumerate(shapes):
                if _overlaps_another(shapes, positions[t], k):
                    continue
                mask = np.all(frame == shape["colour"], axis=-1)
                rows, cols = np.nonzero(mask)
                centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])  # pixel centres
                errors.append(np.abs(centroid - positions[t, k]).max())
                assert errors[-1] < 1.0, (video.key, t, k)
    assert len(errors) > 200
    # Hard edges quantise a centre by up to half a pixel, but on average far less; a
    # half-pixel slip in the coordinate convention would put the mean near 0.5.
    assert np.mean(errors) < 0.25


def _overlaps_another(shapes, positions, k) -> bool:
    for j, other in enumerate(shapes):
        reach = shapes[k]["half_size"] + other["half_size"] + 1
        if j != k and np.abs(positions[j] - positions[k]).max() < reach:
            return True
    return False


def test_motion_is_constant_speed_with_elastic_reflections_inside_the_box():
    bounces = 0
    for video in make(num_videos=8, num_frames=64).videos:
        positions, velocities = np.array(video.meta["positions"]), np.array(video.meta["velocities"])
        half = np.array([s["half_size"] for s in video.meta["shapes"]])[None, :, None]  # (1 k 1)
        assert (positions >= half - 1e-9).all() and (positions <= 48 - half + 1e-9).all()
        speeds = np.linalg.norm(velocities, axis=-1)  # (t k)
        np.testing.assert_allclose(speeds, speeds[:1].repeat(len(speeds), 0))
        free = positions[:-1] + velocities[:-1]
        bounced = velocities[1:] != velocities[:-1]  # (t-1 k 2): which components flipped
        np.testing.assert_allclose(positions[1:][~bounced], free[~bounced])
        np.testing.assert_allclose(velocities[1:][bounced], -velocities[:-1][bounced])
        # A bounce mirrors the overshoot: the wall is halfway between free and actual position.
        walls = (positions[1:] + free) / 2
        wall_lo, wall_hi = np.broadcast_to(half, walls.shape), np.broadcast_to(48 - half, walls.shape)
        at_wall = np.isclose(walls, wall_lo) | np.isclose(walls, wall_hi)
        assert at_wall[bounced].all()
        bounces += bounced.sum()
    assert bounces > 8, "64 frames are long enough to see bounces"


def test_bad_arguments_are_refused_with_the_field_name():
    with pytest.raises(ValueError, match="resolution"):
        make(resolution=4)
    with pytest.raises(ValueError, match="num_videos"):
        make(num_videos={"train": 2})
