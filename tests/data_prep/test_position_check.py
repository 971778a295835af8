"""The exact prediction check on clips whose answer is known: the true continuation scores
~0 pixels (rasterisation only), a still frame the true displacement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from data_prep.position_check import (
    pool_position_errors,
    position_errors,
    still_frame,
    true_continuation,
)
from data_prep.sources import synthetic
from data_prep.synthetic_motion import detect_shapes

RESOLUTION, FRAMES, GIVEN = 32, 20, 2


@pytest.fixture(scope="module")
def clips() -> list[tuple[dict, np.ndarray]]:
    found = synthetic.discover(None, ["test"], num_videos=6, num_frames=FRAMES, resolution=RESOLUTION)
    return [(video.meta, synthetic.render(video.meta)) for video in found.videos]


def _displacement(meta: dict, offset: int, colour: int) -> float:
    """True distance a shape moved from the last given frame to `offset` frames later."""
    k = [synthetic.PALETTE.index(tuple(s["colour"])) for s in meta["shapes"]].index(colour)
    (x0, y0), (x1, y1) = meta["positions"][GIVEN - 1][k], meta["positions"][GIVEN - 1 + offset][k]
    return math.hypot(x1 - x0, y1 - y0)


def test_the_true_continuation_scores_zero_up_to_rasterisation(clips):
    results = [
        position_errors(true_continuation(meta, GIVEN, FRAMES - GIVEN), meta, GIVEN) for meta, _ in clips
    ]
    pooled = pool_position_errors(results)
    assert set(pooled) == {"+4", "+8", "+16"}
    for row in pooled.values():
        assert row["shapes"] > 0 and row["found"] == 1.0
        assert row["error"] < 0.4 and row["error"] == row["error_with_lost"]
    for result in results:
        for row in result.values():
            assert row["error"] is None or row["error"] <= 0.5 * math.sqrt(2)


def test_a_still_frame_scores_the_true_displacement(clips):
    for meta, frames in clips:
        result = position_errors(still_frame(frames[:GIVEN], FRAMES - GIVEN), meta, GIVEN)
        for offset in (4, 8, 16):
            row = result[f"+{offset}"]
            if not row["shapes"]:
                continue
            # Every checkable shape is whole at the offset; at the last given frame it may be
            # occluded, so compare with the shapes the still frame shows whole.
            still = {d.colour_index for d in detect_shapes(frames[GIVEN - 1]) if not d.touching}
            expected = [_displacement(meta, offset, c) for c in still]
            if row["detected"] == len(expected) == row["shapes"]:
                assert row["error"] == pytest.approx(np.mean(expected), abs=0.75)
    pooled = pool_position_errors(
        [position_errors(still_frame(f[:GIVEN], FRAMES - GIVEN), m, GIVEN) for m, f in clips]
    )
    assert pooled["+4"]["error"] < pooled["+8"]["error"]  # shapes move ~1 pixel a frame
    assert pooled["+8"]["error"] > 3.0


def test_lost_shapes_and_strided_times():
    meta = (
        synthetic.discover(None, ["test"], num_videos=1, num_frames=FRAMES, resolution=RESOLUTION)
        .videos[0]
        .meta
    )
    blank = np.zeros((FRAMES - GIVEN, RESOLUTION, RESOLUTION, 3), np.uint8)
    row = position_errors(blank, meta, GIVEN)["+4"]
    assert row["found"] == 0.0 and row["error"] is None and row["error_with_lost"] == RESOLUTION / 2
    # Frames of a continuation on strided latents: only some times exist.
    frames = synthetic.render(meta)
    times = [5, 9]
    result = position_errors(frames[times], meta, GIVEN, frame_times=times)
    assert result["+4"]["error"] < 0.71 and result["+8"]["error"] < 0.71
    assert result["+16"] == {
        "error": None,
        "error_with_lost": None,
        "found": None,
        "shapes": 0,
        "detected": 0,
    }
    with pytest.raises(ValueError, match="frame_times"):
        position_errors(frames[times], meta, GIVEN, frame_times=[5])
