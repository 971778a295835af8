"""The text-alignment metric on real synthetic clips (through H.264, as stored): true captions score
1, wrong captions score near chance or below, a still shape has no direction."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.decode import decode_video
from data_prep.encode import encode_mp4
from data_prep.sources import synthetic
from data_prep.text_alignment import alignment, score_video


@pytest.fixture(scope="module")
def clips() -> list[tuple[np.ndarray, str]]:
    found = synthetic.discover(
        None,
        ["train", "test"],
        num_videos={"train": 8, "test": 8},
        num_frames=8,
        resolution=32,
        caption_shapes=1,
    )
    return [
        (decode_video(encode_mp4(synthetic.render(v.meta), fps=8)).frames, v.meta["caption"])
        for v in found.videos
    ]


def test_real_clips_with_their_true_captions_score_one(clips) -> None:
    result = alignment(clips)
    assert (result["colour"], result["shape"], result["direction"], result["all"]) == (1.0, 1.0, 1.0, 1.0)
    assert result["videos"] == 16 and result["extra_objects"] == 0.0


def test_real_clips_with_wrong_captions_score_low(clips) -> None:
    def wrong(caption: str) -> str:
        ((colour, shape, direction),) = synthetic.parse_caption(caption)
        colours, directions = synthetic.COLOUR_NAMES, list(synthetic.DIRECTIONS)
        other = {"circle": "square", "square": "circle"}[shape]
        turned = directions[(directions.index(direction) + 2) % 4]  # left -> up, up -> left, ...
        return f"a {colours[(colours.index(colour) + 1) % 8]} {other} moving {turned}"

    result = alignment([(frames, wrong(caption)) for frames, caption in clips])
    assert result["colour"] == 0.0 and result["shape"] == 0.0 and result["direction"] == 0.0
    # The right colour but the other shape and a turned direction: colour alone holds.
    ((colour, shape, direction),) = synthetic.parse_caption(clips[0][1])
    other = {"circle": "square", "square": "circle"}[shape]
    scored = score_video(clips[0][0], f"a {colour} {other} moving {direction}")
    assert (scored["colour"], scored["shape"], scored["direction"]) == (True, False, True)


def test_a_shape_that_stays_put_has_no_direction(clips) -> None:
    frames, caption = clips[0]
    still = np.repeat(frames[:1], len(frames), axis=0)
    scored = score_video(still, caption)
    assert scored["colour"] and scored["shape"] and not scored["direction"]
    assert scored["objects"][0]["moved"] == "still"
