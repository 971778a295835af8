"""Captioned bouncing shapes: captions derived from the ground truth, held-out combinations by split."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.sources import synthetic


def _meta(shapes: list[tuple[str, tuple[int, int, int]]], starts, velocities, frames: int = 8) -> dict:
    positions = [
        [[x + t * vx, y + t * vy] for (x, y), (vx, vy) in zip(starts, velocities, strict=True)]
        for t in range(frames)
    ]
    return {
        "resolution": 32,
        "shapes": [{"shape": kind, "half_size": 4.0, "colour": list(colour)} for kind, colour in shapes],
        "positions": positions,
    }


def test_caption_of_a_known_trajectory_names_colour_shape_and_direction() -> None:
    red, blue, orange = synthetic.PALETTE[0], synthetic.PALETTE[3], synthetic.PALETTE[4]
    meta = _meta([("circle", red), ("square", blue)], [(20, 10), (8, 6)], [(-1.5, 0.2), (0.1, 1.2)])
    assert synthetic.caption_of(meta) == "a red circle moving left and a blue square moving down"
    meta = _meta([("square", orange)], [(10, 20)], [(0.3, -1.0)])
    assert synthetic.caption_of(meta) == "an orange square moving up"
    # Net displacement decides: a shape that comes back to where it started moves neither way much.
    assert synthetic.direction_of(2.0, -0.5) == "right"


def test_parse_caption_inverts_caption_of_and_names_a_bad_part() -> None:
    caption = "a yellow circle moving up and an orange square moving right"
    assert synthetic.parse_caption(caption) == [("yellow", "circle", "up"), ("orange", "square", "right")]
    with pytest.raises(ValueError, match="'a teal circle moving up'"):
        synthetic.parse_caption("a teal circle moving up")


def test_captioned_videos_move_straight_inside_the_box_and_split_by_held_out_combination() -> None:
    found = synthetic.discover(
        None,
        ["train", "test"],
        num_videos={"train": 40, "test": 12},
        num_frames=8,
        resolution=32,
        caption_shapes=2,
    )
    for video in found.videos:
        meta = video.meta
        objects = synthetic.parse_caption(meta["caption"])
        assert meta["caption"] == synthetic.caption_of(meta)
        assert {synthetic.is_heldout(*obj) for obj in objects} == {video.split == "test"}
        positions = np.asarray(meta["positions"])  # t k 2
        half = np.array([s["half_size"] for s in meta["shapes"]])[None, :, None]
        assert (positions >= half - 1e-9).all() and (positions <= 32 - half + 1e-9).all()
        steps = np.diff(positions, axis=0)
        np.testing.assert_allclose(steps, np.broadcast_to(steps[:1], steps.shape), atol=1e-9)
        assert ((np.abs(steps[0]) > 0).sum(axis=-1) == 1).all()  # along one axis only


def test_uncaptioned_videos_are_unchanged_by_the_option() -> None:
    plain = synthetic.discover(None, ["train"], num_videos=3, num_frames=8, resolution=32)
    assert all("caption" not in video.meta for video in plain.videos)
    again = synthetic.discover(
        None, ["train"], num_videos=3, num_frames=8, resolution=32, caption_shapes=None
    )
    assert [v.meta for v in plain.videos] == [v.meta for v in again.videos]


def test_eight_held_out_combinations_cover_every_colour_once() -> None:
    held = [
        (c, s, d)
        for c in synthetic.COLOUR_NAMES
        for s in synthetic.SHAPES
        for d in synthetic.DIRECTIONS
        if synthetic.is_heldout(c, s, d)
    ]
    assert len(held) == 8 and sorted(c for c, _, _ in held) == sorted(synthetic.COLOUR_NAMES)
