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

Captioned videos (`caption_shapes`, for text-to-video, LVDM §5) keep that meta and add
`caption`, derived from it by `caption_of`: "a red circle moving left and a blue square moving
down". So that each word is exactly true, their shapes move straight along one axis at
constant speed and never reach a wall. Some (colour, shape, direction) combinations are held
out (`is_heldout`): the train split never shows one, the test split shows only those, so a
model prompted with the test split's captions meets combinations it never saw together.
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
COLOUR_NAMES = ("red", "green", "yellow", "blue", "orange", "purple", "cyan", "magenta")  # of PALETTE
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}  # x right, y down
# Captioned shapes are larger: at 32 pixels H.264's half-resolution chroma rounds a smaller
# square's corners and squares a smaller circle for the detector (1 in 4 called wrongly at
# half sizes 0.08-0.15, 1 in 60 frames at these).
CAPTION_HALF_SIZE_RANGE = (0.16, 0.22)
CAPTION_TRAVEL_RANGE = (0.25, 0.35)  # fraction of the resolution a captioned shape covers in its video


def discover(
    root: Path | None,
    splits: Sequence[str],
    num_videos: int | Mapping[str, int] = 64,
    num_frames: int = 16,
    resolution: int = 64,
    seed: int = 0,
    fps: float = 8.0,
    max_shapes: int = 3,
    caption_shapes: int | None = None,
) -> Discovery:
    """Describe `num_videos` videos per split (an int for every split, or split -> count).

    `root` is ignored: nothing is read. Each video's motion depends only on
    `(seed, split, index)`, so adding videos never changes the existing ones. With
    `caption_shapes` (1-3 shapes per video) the videos are captioned ones (`simulate_captioned`).
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
            if caption_shapes is None:
                meta |= simulate(rng, num_frames, resolution, max_shapes)
            else:
                heldout = split == "test"
                meta |= simulate_captioned(rng, num_frames, resolution, caption_shapes, heldout=heldout)
                meta["caption"] = caption_of(meta)
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


def simulate_captioned(
    rng: np.random.Generator, num_frames: int, resolution: int, max_shapes: int, *, heldout: bool
) -> dict:
    """1..max_shapes shapes moving straight left, right, up or down, never touching a wall.

    `heldout`: every shape is a held-out (colour, shape, direction) combination (the test
    split), else none is (the train split).
    """
    if not 1 <= max_shapes <= 3:
        raise ValueError(f"synthetic captions: 1 to 3 shapes per video; got {max_shapes}")
    count = int(rng.integers(1, max_shapes + 1))
    colours = rng.choice(len(PALETTE), size=count, replace=False)
    names = list(DIRECTIONS)
    shapes, starts, steps = [], [], []
    for colour in colours:
        kinds = [(s, d) for s in SHAPES for d in names if is_heldout(COLOUR_NAMES[colour], s, d) == heldout]
        shape, direction = kinds[int(rng.integers(len(kinds)))]
        half = max(float(rng.uniform(*CAPTION_HALF_SIZE_RANGE)) * resolution, 2.0)
        travel = float(rng.uniform(*CAPTION_TRAVEL_RANGE)) * resolution
        unit = np.array(DIRECTIONS[direction], dtype=float)
        # Start far enough from the wall ahead that the whole travel stays inside the box.
        low = np.where(unit < 0, half + travel, half)
        high = np.where(unit > 0, resolution - half - travel, resolution - half)
        starts.append(rng.uniform(low, high))
        steps.append(unit * travel / max(num_frames - 1, 1))
        shapes.append({"shape": shape, "half_size": half, "colour": list(PALETTE[colour])})
    times = np.arange(num_frames)[:, None, None]
    positions = np.array(starts)[None] + times * np.array(steps)[None]  # (t k 2)
    velocities = np.broadcast_to(np.array(steps)[None], positions.shape)
    return {"shapes": shapes, "positions": positions.tolist(), "velocities": velocities.tolist()}


def is_heldout(colour: str, shape: str, direction: str) -> bool:
    """The 8 held-out combinations: colour i with the i-th (shape, direction) pair.

    Every colour, shape and direction still appears in training, each colour with 7 of its 8
    (shape, direction) pairs: "red circle moving left" is new, red, circles and leftward
    motion are not.
    """
    pairs = [(s, d) for s in SHAPES for d in DIRECTIONS]
    return pairs[COLOUR_NAMES.index(colour)] == (shape, direction)


def direction_of(dx: float, dy: float) -> str:
    """The DIRECTIONS word of a displacement: its larger axis and that axis's sign."""
    if abs(dx) >= abs(dy):
        return "right" if dx > 0 else "left"
    return "down" if dy > 0 else "up"


def object_caption(colour: str, shape: str, direction: str) -> str:
    """One object's part of a caption, "a red circle moving left": the grammar `parse_caption` reads."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape} moving {direction}"


def caption_of(meta: dict) -> str:
    """The caption of a video's ground truth: each shape's colour, kind and net displacement."""
    first, last = np.asarray(meta["positions"][0]), np.asarray(meta["positions"][-1])
    parts = []
    for shape, start, end in zip(meta["shapes"], first, last, strict=True):
        colour = COLOUR_NAMES[PALETTE.index(tuple(shape["colour"]))]
        parts.append(object_caption(colour, shape["shape"], direction_of(*(end - start))))
    return " and ".join(parts)


def parse_caption(caption: str) -> list[tuple[str, str, str]]:
    """(colour, shape, direction) per object of a `caption_of` caption; ValueError naming the part."""
    objects = []
    for part in caption.strip().split(" and "):
        words = part.split()
        if (
            len(words) != 5
            or words[0] not in ("a", "an")
            or words[1] not in COLOUR_NAMES
            or words[2] not in SHAPES
            or words[3] != "moving"
            or words[4] not in DIRECTIONS
        ):
            raise ValueError(
                f"caption {caption!r}: {part!r} is not 'a <colour> <shape> moving <direction>' with "
                f"colour in {COLOUR_NAMES}, shape in {SHAPES}, direction in {tuple(DIRECTIONS)}"
            )
        objects.append((words[1], words[2], words[4]))
    return objects
