"""Text alignment of bouncing-shapes videos, exactly: do they show what their caption says?

A caption of the synthetic source ("a red circle moving left and a blue square moving down",
`synthetic.caption_of`) names, per object, a colour, a shape and a direction. A video is read
with the synthetic-motion detector (`synthetic_motion.detect_shapes`, the one every exact
metric here uses: palette colour -> one object per colour, its centroid and whether it fills
its bounding box like a square or a circle), and per named object:

- colour: an object of the named colour is detected in at least half of the frames;
- shape: and most of those detections have the named shape;
- direction: and its centroids, fitted by a straight line over time, travel at least
  `MIN_TRAVEL` of the frame size, mostly along the named direction (`synthetic.direction_of`).

A video counts for colour (shape, direction) when every object it names does. Chance, for
one-object captions and a model that ignores the text: colour 1/8, shape 1/2, direction 1/4.
The source's own clips with their true captions score 1 (the detector is exact on them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from data_prep.sources.synthetic import COLOUR_NAMES, direction_of, parse_caption
from data_prep.synthetic_motion import detect_shapes

MIN_TRAVEL = 0.1  # of the frame size over the clip: less is "not moving" (captioned shapes cover 0.3-0.45)
ASPECTS = ("colour", "shape", "direction")
CHANCE = {"colour": 1 / len(COLOUR_NAMES), "shape": 1 / 2, "direction": 1 / 4}
GOALS = {"colour": 0.9, "shape": 0.8, "direction": 0.7}  # issue 18's goals for held-out prompts


def score_video(frames: np.ndarray, caption: str) -> dict:
    """Per aspect, whether `frames (t h w c)` uint8 shows every object of `caption` with it."""
    objects = parse_caption(caption)
    detections = [detect_shapes(frame) for frame in frames]
    named = {COLOUR_NAMES.index(colour) for colour, _, _ in objects}
    rows = []
    for colour, shape, direction in objects:
        index = COLOUR_NAMES.index(colour)
        track = [(t, d) for t, found in enumerate(detections) for d in found if d.colour_index == index]
        seen = 2 * len(track) >= len(frames)
        shaped = seen and 2 * sum(d.shape == shape for _, d in track) > len(track)
        moved = None
        if seen and len(track) >= 2:
            times = np.array([t for t, _ in track], dtype=float)
            span = len(frames) - 1
            dx = np.polyfit(times, [d.x for _, d in track], 1)[0] * span
            dy = np.polyfit(times, [d.y for _, d in track], 1)[0] * span
            far = math.hypot(dx, dy) >= MIN_TRAVEL * max(frames.shape[1:3])
            moved = direction_of(dx, dy) if far else "still"
        rows.append(
            {
                "colour": colour,
                "shape": shape,
                "direction": direction,
                "found": bool(seen),
                "shape_ok": bool(shaped),
                "moved": moved,
            }
        )
    extra = np.mean([sum(d.colour_index not in named for d in found) for found in detections])
    return {
        "colour": all(r["found"] for r in rows),
        "shape": all(r["shape_ok"] for r in rows),
        "direction": all(r["found"] and r["moved"] == r["direction"] for r in rows),
        "objects": rows,
        "extra_objects": float(extra),
    }


def alignment(videos: Iterable[tuple[np.ndarray, str]]) -> dict:
    """Fractions of `(frames, caption)` videos right on each aspect and on all three, and the count."""
    scores = [score_video(frames, caption) for frames, caption in videos]
    if not scores:
        raise ValueError("text alignment of no videos: give at least one (frames, caption)")
    result = {aspect: float(np.mean([s[aspect] for s in scores])) for aspect in ASPECTS}
    result["all"] = float(np.mean([all(s[a] for a in ASPECTS) for s in scores]))
    result["extra_objects"] = float(np.mean([s["extra_objects"] for s in scores]))
    result["videos"] = len(scores)
    return result
