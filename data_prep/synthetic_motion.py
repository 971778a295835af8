"""Exact motion metrics for the synthetic bouncing-shapes dataset: generated physics against the real one.

FVD embeds clips with an action classifier and barely moves when frames are shuffled in time
("On the Content Bias in Fréchet Video Distance", Ge et al., CVPR 2024). The demo dataset
(`data_prep.sources.synthetic`) was made from a known law of motion, so a generated video can
be checked against that law directly, with no network and no weights. Palette, background and
size range are read from the source, so a change there changes the detector with it.

1. **Detect** (`detect_shapes`, per frame). Each pixel goes to the nearest of the palette
   colours and the background if it lies within `tolerance` of it (RGB Euclidean distance,
   `colour_tolerance`), else to nothing. Per palette colour, the largest 8-connected component
   of at least `min_area` pixels that has a *core* (a pixel whose 4 neighbours share its
   colour) is the object; further such components are *fragments*. The core rule drops the
   seams where two blurred colours blend into a third (red and yellow make orange), which are
   lines without one. An object gives its centroid, area, half size (from the area, circle or
   square told apart by how much of its bounding box it fills), mean colour, and whether it
   *touches* another object (within 2 pixels).
2. **Track.** The source draws the colours of one video without replacement, so a colour is
   an identity: the track of colour c is its object in every frame.
3. **Score**, per non-overlapping window of `window` frames (`window_bounds`: window k is
   frames [k·window, (k+1)·window), a trailing partial window is dropped) and over the whole
   video:
   - `objects_found`: mean over frames of |expected colours detected| / |expected colours|.
     *Expected*: for a generated video (no metadata) the colours detected in at least half
     the frames of its first window, in every frame; for a real video, per frame, the shapes
     of its metadata that are detectable in the source's own clean render
     (`expected_from_meta`: a shape can hide wholly behind a later one).
   - `spurious_objects`: mean over frames of detected objects that were not expected, plus
     fragments: shapes that appear from nowhere or split.
   - `size_drift`: mean over detections of |area / reference − 1|, the reference being the
     track's median area over the first window (over the video if the first window has none).
   - `colour_drift`: mean over detections of the RGB distance between the object's mean colour
     and its palette colour (0-441; it cannot exceed `tolerance`: beyond, the object is lost).
   - `motion_error`: departure from constant velocity with elastic bounces. From a track's
     centroids at t−2 and t−1, predict t the way the source moves shapes: a centre stays in
     [half size, frame size − half size] on each axis, a crossing is mirrored back and flips
     that velocity component. The velocity between t−2 and t−1 is not observed directly (a
     bounce may lie between them), so each axis takes the hypothesis (no bounce, bounce off
     the low wall, bounce off the high wall) that predicts t best: the error is the distance to
     the nearest physically possible position. Mean and max in pixels, and `motion_error_rel`
     as a fraction of the frame size. A prediction belongs to the window of the frame it
     predicts.

Detections that touch another object are counted as found and for colour, but left out of
size and motion: one of the two is partly occluded, so its centroid and area are not the
shape's. The half size that places the walls is the track's median over the video.

On real videos (rendered by the source: binary, no anti-aliasing) every object is found and
the colour is exact; position and area are exact up to rasterisation. A centroid moves in
steps as a boundary crosses pixel centres, ±0.5 pixel per axis at worst, so the motion error
(a second difference of centroids) has a floor of about 0.5 pixel (max 1.4) at 32 and 64
pixels, and the area of the smallest shapes jitters by a few percent. Shuffling the frames
in time raises the motion error 15-40 fold (tests/data_prep/test_synthetic_motion.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from data_prep.sources import synthetic

PALETTE: tuple[tuple[int, int, int], ...] = tuple(tuple(c) for c in synthetic.PALETTE)
BACKGROUND: tuple[int, int, int] = tuple(getattr(synthetic, "BACKGROUND", (0, 0, 0)))
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_SQUARE_FILL = (1 + math.pi / 4) / 2  # between a square's bounding-box fill (1) and a circle's (π/4)
_TOUCH_PX = 2  # blurred edges leave a seam of unassigned pixels between two touching objects


@dataclass(frozen=True)
class Detection:
    """One shape found in one frame; coordinates as in the source: pixel (i, j) is [j, j+1) x [i, i+1)."""

    colour_index: int  # into the palette: the track's identity
    x: float  # centroid
    y: float
    area: int  # pixels
    half_size: float  # radius of a circle, half the side of a square
    colour: tuple[float, float, float]  # mean RGB of its pixels
    touching: bool  # within a couple of pixels of another object: maybe occluded
    fragments: int  # further components of its colour that would pass as objects
    shape: str  # "circle" or "square": how much of its bounding box it fills


@dataclass(frozen=True)
class MotionScores:
    """Scores over frames [start, end); None where nothing could be measured (JSON: null)."""

    start: int
    end: int
    objects_found: float | None  # None: nothing expected (no object in the first window)
    spurious_objects: float
    size_drift: float | None
    colour_drift: float | None
    motion_error: float | None  # pixels
    motion_error_max: float | None
    motion_error_rel: float | None  # fraction of the frame size
    motion_samples: int


@dataclass(frozen=True)
class MotionReport:
    """The whole video's scores and one per window, for a stage to log and plot over frame index."""

    frames: int
    window: int
    height: int
    width: int
    expected_objects: float  # mean over frames
    video: MotionScores
    windows: list[MotionScores]

    def as_dict(self) -> dict:
        return asdict(self)


def colour_tolerance(
    palette: Sequence[Sequence[int]] = PALETTE, background: Sequence[int] = BACKGROUND
) -> float:
    """0.6 of the smallest distance between two of the colours (palette and background).

    At half, no pixel would be near two colours; a little more keeps small shapes whose colour
    H.264's half-resolution chroma has washed towards the background (measured at 32 pixels:
    objects found 0.98 -> 0.99, nothing spurious), and the nearest colour still decides.
    """
    colours = np.array([*palette, background], dtype=np.float64)
    distances = np.linalg.norm(colours[:, None] - colours[None], axis=-1)
    return float(0.6 * distances[np.triu_indices(len(colours), k=1)].min())


def default_min_area(size: int) -> float:
    """A quarter of the smallest shape the source draws at this frame size, and at least 3 pixels.

    Small enough to keep a blurred or half-hidden shape, large enough to drop the specks that
    noise and the blend of two colours (red over yellow is near orange) leave.
    """
    smallest = synthetic.HALF_SIZE_RANGE[0] * size
    return max(3.0, 0.25 * math.pi * smallest**2)


def window_bounds(num_frames: int, window: int = 16) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) windows from frame 0; a trailing partial window is dropped."""
    if window < 1:
        raise ValueError(f"window must be at least 1 frame; got {window}")
    return [(start, start + window) for start in range(0, num_frames - window + 1, window)]


def detect_shapes(
    frame: np.ndarray,
    *,
    palette: Sequence[Sequence[int]] = PALETTE,
    background: Sequence[int] = BACKGROUND,
    tolerance: float | None = None,
    min_area: float | None = None,
) -> list[Detection]:
    """The palette-coloured objects of one `(h w c)` uint8 frame, at most one per colour."""
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"detect_shapes expects a (h, w, 3) frame; got shape {frame.shape}")
    tolerance = colour_tolerance(palette, background) if tolerance is None else tolerance
    min_area = default_min_area(max(frame.shape[:2])) if min_area is None else min_area
    colours = np.array([*palette, background], dtype=np.float32)
    pixels = frame.astype(np.float32)
    distance = np.linalg.norm(pixels[:, :, None, :] - colours, axis=-1)  # (h w colour)
    nearest = distance.argmin(axis=-1)
    nearest[np.take_along_axis(distance, nearest[..., None], axis=-1)[..., 0] > tolerance] = -1

    found: list[tuple[int, np.ndarray, int]] = []  # colour index, mask, fragments
    present = np.bincount(nearest.ravel() + 1, minlength=len(palette) + 2)[1 : len(palette) + 1]
    for index in np.flatnonzero(present >= min_area):
        components, count = ndimage.label(nearest == index, structure=_EIGHT_CONNECTED)
        areas = np.bincount(components.ravel())[1:]
        # A shape has a core, a pixel whose 4 neighbours share its colour; the seam where two
        # blurred colours blend (red and yellow make orange) is a line without one.
        cores = np.bincount(components[ndimage.binary_erosion(components > 0)], minlength=count + 1)[1:]
        large = np.flatnonzero((areas >= min_area) & (cores > 0))
        if len(large):
            largest = large[areas[large].argmax()]
            found.append((int(index), components == largest + 1, len(large) - 1))

    owner = np.full(frame.shape[:2], -1)  # which object a pixel belongs to
    for index, mask, _ in found:
        owner[mask] = index
    detections = []
    for index, mask, fragments in found:
        near = owner[ndimage.binary_dilation(mask, _EIGHT_CONNECTED, iterations=_TOUCH_PX)]
        rows, cols = np.nonzero(mask)
        area = len(rows)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        # Area to half size: a square of half size r covers 4r² pixels, a circle πr².
        square = area / box > _SQUARE_FILL
        half = math.sqrt(area) / 2 if square else math.sqrt(area / math.pi)
        mean = pixels[mask].mean(axis=0)
        detections.append(
            Detection(
                colour_index=index,
                x=float(cols.mean() + 0.5),
                y=float(rows.mean() + 0.5),
                area=area,
                half_size=half,
                colour=(float(mean[0]), float(mean[1]), float(mean[2])),
                touching=bool(((near >= 0) & (near != index)).any()),
                fragments=fragments,
                shape="square" if square else "circle",
            )
        )
    return detections


def expected_from_meta(
    meta: dict, *, tolerance: float | None = None, min_area: float | None = None
) -> list[set[int]]:
    """Per frame, the palette indices of the shapes a real video's metadata makes detectable.

    A shape can hide wholly or all but a sliver behind a later one, so the count of shapes in
    the metadata overstates what any detector can find. The frames are rendered with the
    source's own `render` (its drawing order, exact occlusion, no noise) and a shape of the
    metadata is expected where `detect_shapes` finds it there.
    """
    listed = {PALETTE.index(tuple(shape["colour"])) for shape in meta["shapes"]}
    return [
        listed & {d.colour_index for d in detect_shapes(frame, tolerance=tolerance, min_area=min_area)}
        for frame in synthetic.render(meta)
    ]


def motion_metrics(
    video: np.ndarray,
    *,
    window: int = 16,
    expected: Sequence[Collection[int]] | None = None,
    palette: Sequence[Sequence[int]] = PALETTE,
    background: Sequence[int] = BACKGROUND,
    tolerance: float | None = None,
    min_area: float | None = None,
) -> MotionReport:
    """Score a `(t h w c)` uint8 video against the synthetic physics, per window and overall.

    `expected`: per frame, the palette indices that should be visible (`expected_from_meta`
    for a real video); None, for a generated one, takes the colours found in at least half the
    frames of the first window.
    """
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"motion_metrics expects a (t, h, w, 3) video; got shape {video.shape}")
    frames, height, width = video.shape[:3]
    options = dict(palette=palette, background=background, tolerance=tolerance, min_area=min_area)
    detections = [{d.colour_index: d for d in detect_shapes(frame, **options)} for frame in video]
    bounds = window_bounds(frames, window)
    first_window = range(*bounds[0]) if bounds else range(frames)
    if expected is None:
        # A majority over the first window, not frame 0 alone: one washed-out or occluded first
        # frame would otherwise make an object spurious for the whole video.
        counts = Counter(c for t in first_window for c in detections[t])
        expected = [{c for c, n in counts.items() if 2 * n >= len(first_window)}] * frames
    elif len(expected) != frames:
        raise ValueError(f"expected has {len(expected)} frames, the video {frames}")

    per_frame = _per_frame_scores(detections, expected, palette, first_window, (height, width))

    def scores(start: int, end: int) -> MotionScores:
        return _summarise(per_frame, start, end, max(height, width))

    return MotionReport(
        frames=frames,
        window=window,
        height=height,
        width=width,
        expected_objects=float(np.mean([len(e) for e in expected])) if frames else 0.0,
        video=scores(0, frames),
        windows=[scores(start, end) for start, end in bounds],
    )


def average_windows(reports: Sequence[MotionReport]) -> list[dict[str, float | None]]:
    """Per window, each score averaged over videos (those that measured it): one curve per set."""
    count = min((len(r.windows) for r in reports), default=0)
    curves = []
    for k in range(count):
        windows = [asdict(r.windows[k]) for r in reports]
        row: dict[str, float | None] = {"start": windows[0]["start"], "end": windows[0]["end"]}
        for key in windows[0]:
            if key in ("start", "end"):
                continue
            values = [w[key] for w in windows if w[key] is not None]
            if key == "motion_error_max":
                row[key] = float(max(values)) if values else None
            else:
                row[key] = float(np.mean(values)) if values else None
        curves.append(row)
    return curves


@dataclass
class _FrameScores:
    """Everything measured, by frame, before it is pooled over a window."""

    found: list[float | None]  # None: no object expected in that frame
    spurious: list[int]
    size: list[list[float]]  # one value per measured detection
    colour: list[list[float]]
    motion: list[list[float]]  # one error per track whose position at this frame was predicted


def _per_frame_scores(
    detections: list[dict[int, Detection]],
    expected: Sequence[Collection[int]],
    palette: Sequence[Sequence[int]],
    reference_frames: range,
    frame_size: tuple[int, int],
) -> _FrameScores:
    frames = len(detections)
    scores = _FrameScores([], [], *([[] for _ in range(frames)] for _ in range(3)))
    for found, wanted in zip(detections, expected, strict=True):
        wanted = set(wanted)
        # Nothing expected (a generated video with no object in its first window): undefined, not
        # "all kept" — a blank video must not score as one that keeps its objects.
        scores.found.append(len(wanted & set(found)) / len(wanted) if wanted else None)
        scores.spurious.append(len(set(found) - wanted) + sum(d.fragments for d in found.values()))

    for index in sorted({c for frame in detections for c in frame}):
        track = [frame.get(index) for frame in detections]
        whole = [d if d is not None and not d.touching else None for d in track]
        target = np.array(palette[index], dtype=np.float64)
        for t, d in enumerate(track):
            if d is not None:
                scores.colour[t].append(float(np.linalg.norm(np.array(d.colour) - target)))
        seen = [d for d in whole if d is not None]
        if not seen:
            continue
        in_reference = [whole[t] for t in reference_frames if whole[t] is not None]
        reference = float(np.median([d.area for d in in_reference or seen]))
        for t, d in enumerate(whole):
            if d is not None:
                scores.size[t].append(abs(d.area / reference - 1))
        half = float(np.median([d.half_size for d in seen]))
        for t in range(2, frames):
            a, b, c = whole[t - 2], whole[t - 1], whole[t]
            if a is None or b is None or c is None:
                continue
            error_x = bounce_prediction_error(a.x, b.x, c.x, half, frame_size[1] - half)
            error_y = bounce_prediction_error(a.y, b.y, c.y, half, frame_size[0] - half)
            scores.motion[t].append(math.hypot(error_x, error_y))
    return scores


def bounce_prediction_error(before: float, now: float, after: float, low: float, high: float) -> float:
    """Distance on one axis from `after` to the nearest position the source's physics allows.

    The source moves a centre by its velocity and mirrors a crossing of `low` or `high` back
    into the box, flipping the velocity. Seen only at two frames, the velocity is one of three:
    no bounce (now − before), or a bounce off either wall in between (then `now` is the mirror
    of `before + v`, so v = 2·wall − now − before, flipped afterwards). Each is carried one
    step further, with its own reflection, and the closest prediction counts.
    """
    errors = []
    for velocity in (now - before, -(2 * low - now - before), -(2 * high - now - before)):
        predicted = now + velocity
        if predicted < low:
            predicted = 2 * low - predicted
        elif predicted > high:
            predicted = 2 * high - predicted
        errors.append(abs(after - predicted))
    return min(errors)


def _summarise(scores: _FrameScores, start: int, end: int, size: int) -> MotionScores:
    def pooled(per_frame: list[list[float]]) -> list[float]:
        return [value for values in per_frame[start:end] for value in values]

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    motion = pooled(scores.motion)
    return MotionScores(
        start=start,
        end=end,
        objects_found=mean([f for f in scores.found[start:end] if f is not None]),
        spurious_objects=float(np.mean(scores.spurious[start:end])) if end > start else 0.0,
        size_drift=mean(pooled(scores.size)),
        colour_drift=mean(pooled(scores.colour)),
        motion_error=mean(motion),
        motion_error_max=float(max(motion)) if motion else None,
        motion_error_rel=float(np.mean(motion) / size) if motion else None,
        motion_samples=len(motion),
    )
