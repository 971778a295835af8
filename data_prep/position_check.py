"""Exact prediction check: where are the shapes k frames after the given ones, in pixels?

The latent check (`lvdm.prediction_check`) compares continuations in latent space, where a
blurred average of possible futures can score well without predicting anything. On the
synthetic dataset the metadata holds every shape's true centre in every frame, so a
continuation can be scored in the units that matter: for each shape, the distance from its
detected centroid (`detect_shapes`, matched to the truth by colour: the source draws the
colours of one video without replacement) to its true centre at +4, +8 and +16 frames after
the last given frame.

A shape counts where the source's own clean render shows it whole (detected and touching no
other object): a hidden shape has no position to check and a partly hidden one a biased
centroid. A shape the continuation loses counts in `found` (the fraction detected) and, at a
penalty of half the frame size (a guess anywhere in the frame is off by about that), in
`error_with_lost`; `error` is the mean over detected shapes alone.

Two baselines, from the clip alone: `still_frame` (the last given frame repeated; scores the
true displacement) and `true_continuation` (the source's own render of the following frames:
the constant-velocity-with-bounces oracle, 0 up to rasterisation, ≤ 0.71 pixels — a check on
the detector).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from data_prep.sources import synthetic
from data_prep.synthetic_motion import PALETTE, detect_shapes

OFFSETS = (4, 8, 16)


def position_errors(
    continuation: np.ndarray,
    meta: dict,
    given_frames: int,
    offsets: Sequence[int] = OFFSETS,
    *,
    start: int = 0,
    frame_times: Sequence[int] | None = None,
) -> dict[str, dict[str, float | int | None]]:
    """Per offset k, the position error of every shape at k frames after the last given frame.

    Args:
        continuation: `(t h w c)` uint8 frames that follow the given ones.
        meta: the clip's synthetic metadata (`shapes`, `positions`, `resolution`).
        given_frames: how many frames were given, from frame `start` of the metadata's video.
        offsets: frames after the last given one to check.
        start: the metadata frame of the first given frame.
        frame_times: the metadata frame of each continuation frame; default the frames right
            after the given ones (`start + given_frames + i`). A continuation sampled on
            strided latents passes its own times.

    Returns `{"+k": {"error", "error_with_lost", "found", "shapes", "detected"}}`; an offset with no
    continuation frame at its time, or no checkable shape, has None errors and 0 shapes.
    """
    if continuation.ndim != 4 or continuation.shape[-1] != 3:
        raise ValueError(f"continuation must be (t, h, w, 3) frames; got shape {continuation.shape}")
    last_given = start + given_frames - 1
    times = (
        list(range(last_given + 1, last_given + 1 + len(continuation)))
        if frame_times is None
        else list(frame_times)
    )
    if len(times) != len(continuation):
        raise ValueError(f"frame_times has {len(times)} entries for {len(continuation)} continuation frames")
    size = continuation.shape[1:3]
    if size != (meta["resolution"],) * 2:
        raise ValueError(f"continuation frames are {size}, the metadata's resolution {meta['resolution']}")
    penalty = max(size) / 2
    colours = [PALETTE.index(tuple(shape["colour"])) for shape in meta["shapes"]]
    result = {}
    for offset in offsets:
        t = last_given + offset
        errors: list[float] = []
        lost = 0
        if t in times and t < len(meta["positions"]):
            found = {d.colour_index: d for d in detect_shapes(continuation[times.index(t)])}
            whole = _whole_shapes(meta, t)
            for colour, (x, y) in zip(colours, meta["positions"][t], strict=True):
                if colour not in whole:
                    continue
                if colour in found:
                    errors.append(math.hypot(found[colour].x - x, found[colour].y - y))
                else:
                    lost += 1
        shapes = len(errors) + lost
        result[f"+{offset}"] = {
            "error": float(np.mean(errors)) if errors else None,
            "error_with_lost": (sum(errors) + lost * penalty) / shapes if shapes else None,
            "found": len(errors) / shapes if shapes else None,
            "shapes": shapes,
            "detected": len(errors),
        }
    return result


def pool_position_errors(results: Sequence[dict]) -> dict[str, dict[str, float | int | None]]:
    """`position_errors` of many clips pooled per offset: means over all their shapes."""
    pooled = {}
    for key in results[0] if results else ():
        rows = [r[key] for r in results if r[key]["shapes"]]
        shapes, detected = sum(r["shapes"] for r in rows), sum(r["detected"] for r in rows)
        pooled[key] = {
            "error": sum(r["error"] * r["detected"] for r in rows if r["detected"]) / detected
            if detected
            else None,
            "error_with_lost": sum(r["error_with_lost"] * r["shapes"] for r in rows) / shapes
            if shapes
            else None,
            "found": detected / shapes if shapes else None,
            "shapes": shapes,
            "detected": detected,
        }
    return pooled


def still_frame(given: np.ndarray, length: int) -> np.ndarray:
    """The baseline that predicts no motion: the last of the `given (t h w c)` frames, `length` times."""
    return np.repeat(given[-1:], length, axis=0)


def true_continuation(meta: dict, given_frames: int, length: int, *, start: int = 0) -> np.ndarray:
    """The oracle: the source's render of the `length` frames after the given ones."""
    first = start + given_frames
    return synthetic.render(meta)[first : first + length]


def _whole_shapes(meta: dict, t: int) -> set[int]:
    """Palette indices of the shapes the clean render of frame t shows whole (not touching another)."""
    frame = synthetic.render({**meta, "positions": meta["positions"][t : t + 1]})[0]
    return {d.colour_index for d in detect_shapes(frame) if not d.touching}
