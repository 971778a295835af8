"""Bouncing shapes: the demo's dataset, generated, with its ground-truth motion kept.

Each video is 1-3 filled circles or squares of distinct colours moving at constant speed in
a box and reflecting elastically off its walls, rendered directly at `resolution` (no
resizing, so no blur to argue about). It needs no download and is learnable by a small
model in minutes, and because each sample's meta stores the true trajectory, later stages
can check generated motion against the physics, not just by eye.

Coordinates are continuous pixels: x to the right, y down, pixel `(row i, col j)` covers
`[j, j+1) x [i, i+1)`, so its centre is `(j + 0.5, i + 0.5)`. Meta of one sample:
```
shapes:     [{"shape": "circle" | "square", "half_size": r, "colour": [r, g, b]}, ...]
positions:  [t][k] = [x, y]  centre of shape k in frame t
velocities: [t][k] = [vx, vy] pixels per frame at frame t
```
`positions[t+1] = positions[t] + velocities[t]`, except where a wall is crossed: then the
overshoot is mirrored back into the box and that component of `velocities[t+1]` flips.
Shapes are drawn in list order, so a later shape occludes an earlier one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data_prep.sources.base import SPLITS, Discovery, SourceVideo, check_splits, finish
from data_prep.sources.shapes import render as render  # drawn a layer down: `load_frames` needs it

PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)
SHAPES = ("circle", "square")
HALF_SIZE_RANGE = (0.08, 0.15)  # fraction of the resolution
SPEED_RANGE = (0.02, 0.05)  # fraction of the resolution per frame


def discover(
    root: Path | None,
    splits: Sequence[str],
    num_videos: int | Mapping[str, int] = 64,
    num_frames: int = 16,
    resolution: int = 64,
    seed: int = 0,
    fps: float = 8.0,
    max_shapes: int = 3,
) -> Discovery:
    """Describe `num_videos` videos per split (an int for every split, or split -> count).

    `root` is ignored: nothing is read. Each video's motion depends only on
    `(seed, split, index)`, so adding videos never changes the existing ones.
    """
    splits = check_splits(splits)
    counts = {s: num_videos for s in splits} if isinstance(num_videos, int) else dict(num_videos)
    if any(counts.get(s, -1) < 0 for s in splits):
        raise ValueError(f"synthetic num_videos needs a count >= 0 for each of {splits}; got {num_videos!r}")
    if num_frames < 1 or resolution < 8 or not 1 <= max_shapes <= len(PALETTE):
        raise ValueError(
            f"synthetic needs num_frames >= 1, resolution >= 8 and 1 <= max_shapes <= {len(PALETTE)}; "
            f"got num_frames={num_frames}, resolution={resolution}, max_shapes={max_shapes}"
        )
    videos = []
    for split in splits:
        for index in range(counts[split]):
            rng = np.random.default_rng([seed, SPLITS.index(split), index])
            meta = {"seed": seed, "index": index, "resolution": resolution, "fps": float(fps)}
            meta |= simulate(rng, num_frames, resolution, max_shapes)
            videos.append(SourceVideo(f"{split}_{index:06d}", split, "", "synthetic", meta))
    return finish(videos, [])


def simulate(rng: np.random.Generator, num_frames: int, resolution: int, max_shapes: int) -> dict:
    """Random shapes and their trajectories with elastic reflections off the box walls."""
    count = int(rng.integers(1, max_shapes + 1))
    colours = rng.choice(len(PALETTE), size=count, replace=False)
    half = rng.uniform(*HALF_SIZE_RANGE, size=count) * resolution
    half = np.maximum(half, 2.0)
    low, high = half[:, None], resolution - half[:, None]  # centre range per shape, (k 1)
    position = rng.uniform(low, high, size=(count, 2))
    angle = rng.uniform(0, 2 * np.pi, size=count)
    speed = rng.uniform(*SPEED_RANGE, size=count) * resolution
    velocity = np.stack([np.cos(angle), np.sin(angle)], axis=1) * speed[:, None]

    positions, velocities = [], []
    for _ in range(num_frames):
        positions.append(position.tolist())
        velocities.append(velocity.tolist())
        position = position + velocity
        # Elastic reflection: mirror the overshoot back into the box and flip that component.
        # Speeds are below the free range of a centre, so one mirror per wall is enough.
        below, above = position < low, position > high
        position = np.where(below, 2 * low - position, np.where(above, 2 * high - position, position))
        velocity = np.where(below | above, -velocity, velocity)
    shapes = [
        {"shape": SHAPES[int(rng.integers(len(SHAPES)))], "half_size": float(h), "colour": list(PALETTE[c])}
        for h, c in zip(half, colours, strict=True)
    ]
    return {"shapes": shapes, "positions": positions, "velocities": velocities}
