"""What every dataset source hands to the shard stage, and how one sample's frames are read.

A source's `discover()` only lists: it walks the release's own layout (split files, CSVs,
folders) and returns `SourceVideo` records, plain frozen data so they pickle cheaply into
Ray tasks. Nothing is decoded at discovery time, so listing a 2.5M-row WebVid CSV stays a
matter of seconds. Bad input found while listing (a split-file line whose video is missing,
a malformed CSV row, an empty frame folder) is *counted* in `Discovery.skipped`; only a
layout that cannot be read at all (missing root, split file or CSV) raises
`DatasetLayoutError`, before any work starts. Bad input found while decoding raises
`SkipSample` from `load_frames`, which the shard loop counts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_prep.decode import DecodedVideo, decode_video
from data_prep.skip import SkipSample

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_FRAME_FOLDER_FPS = 25.0  # Sky Time-lapse and Taichi frame folders carry no fps

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")


@dataclass(frozen=True)
class SourceVideo:
    """One raw video of a dataset, as plain data (it is pickled into Ray tasks).

    `key` is unique within the dataset and only uses `[A-Za-z0-9_-]`: webdataset splits a
    tar member name at its first dot into key and extension, so a dot in a key would
    silently split one sample in two.
    """

    key: str
    split: str  # "train" | "test"
    path: str  # absolute path of the video file or frame folder; "" for synthetic
    kind: str  # "file" | "frames" | "synthetic"
    meta: dict = field(hash=False)  # JSON-able: label, class_name, caption, video_id, ...


@dataclass(frozen=True)
class Skipped:
    """Input left out at discovery time; `path` may carry `:line` for a split-file or CSV row."""

    path: str
    reason: str


@dataclass
class Discovery:
    videos: list[SourceVideo]
    skipped: list[Skipped]


class DatasetLayoutError(ValueError):
    """The dataset root does not look like the release it should be; nothing was started."""


def layout_error(dataset: str, path: Path, expected: str) -> DatasetLayoutError:
    """An error that names the missing path, what belongs there, and the config key to fix."""
    return DatasetLayoutError(
        f"{dataset}: {path} not found; expected {expected}. "
        f"Point `data.root` at the folder that holds the {dataset} release."
    )


def require_root(dataset: str, root: Path | None, expected: str) -> Path:
    if root is None:
        raise DatasetLayoutError(f"{dataset}: no dataset root given; set `data.root` to {expected}.")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise layout_error(dataset, root, expected)
    return root


def check_splits(splits: Sequence[str]) -> list[str]:
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"unknown splits {list(unknown) or list(splits)}; choose from {list(SPLITS)}")
    return list(dict.fromkeys(splits))


def make_key(name: str) -> str:
    """A webdataset-safe key for `name`, stable across runs and machines.

    Names that are already safe are kept as they are (UCF's `v_ApplyEyeMakeup_g08_c01`).
    Others are sanitised and get a short hash of the original name, so two names that
    sanitise alike (`a#1`, `a.1`) still get different keys.
    """
    safe = _UNSAFE.sub("_", name).strip("_") or "video"
    if safe == name:
        return name
    digest = hashlib.blake2s(name.encode("utf-8"), digest_size=4).hexdigest()
    return f"{safe}-{digest}"


def finish(videos: Iterable[SourceVideo], skipped: list[Skipped]) -> Discovery:
    """Sort by (split, key) and count a repeated key as skipped rather than let it overwrite."""
    unique: dict[str, SourceVideo] = {}
    for video in sorted(videos, key=lambda v: (v.split, v.key, v.path)):
        first = unique.get(video.key)
        if first is not None:
            skipped.append(Skipped(video.path, f"duplicate key {video.key!r} (also {first.path})"))
            continue
        unique[video.key] = video
    ordered = sorted(unique.values(), key=lambda v: (v.split, v.key))
    return Discovery(videos=ordered, skipped=skipped)


def list_frame_images(folder: Path) -> list[Path]:
    """Image files of a frame folder in frame order.

    Sorted by the last number in the file name, not lexically: Sky Time-lapse names frames
    `<id>_frames_00000046.jpg` (zero-padded), but re-extracted folders often are not
    (`frame_9.png` < `frame_10.png`).
    """
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(images, key=_frame_order)


def _frame_order(path: Path) -> tuple[int, str]:
    match = _LAST_NUMBER.search(path.stem)
    return (int(match.group(1)) if match else -1, path.name)


def load_frames(video: SourceVideo, indices: Sequence[int] | None = None) -> DecodedVideo:
    """Decode `video` (all frames, or only `indices`) to `(t h w c)` uint8 RGB.

    Raises `SkipSample` for anything unreadable, naming the file.
    """
    if video.kind == "synthetic":
        from data_prep.sources.synthetic import render  # synthetic imports this module

        frames = render(video.meta)
        return _select(frames, indices, float(video.meta["fps"]), video.key)
    path = Path(video.path)
    if not path.exists():
        raise SkipSample(f"{path}: listed at discovery but no longer exists")
    if video.kind == "file":
        return decode_video(path, indices)
    if video.kind == "frames":
        return _read_frame_folder(path, indices, float(video.meta.get("fps", DEFAULT_FRAME_FOLDER_FPS)))
    raise ValueError(
        f"{video.key}: unknown SourceVideo.kind {video.kind!r}; expected file, frames or synthetic"
    )


def _read_frame_folder(folder: Path, indices: Sequence[int] | None, fps: float) -> DecodedVideo:
    images = list_frame_images(folder)
    if not images:
        raise SkipSample(f"{folder}: frame folder has no {'/'.join(IMAGE_SUFFIXES)} images")
    wanted = range(len(images)) if indices is None else indices
    bad = [i for i in wanted if not 0 <= i < len(images)]
    if bad:
        raise SkipSample(f"{folder}: frame indices {bad[:3]} outside a video of {len(images)} frames")
    frames = [_read_image(images[i]) for i in wanted]
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise SkipSample(f"{folder}: frames differ in size {sorted(shapes)}")
    return DecodedVideo(frames=np.stack(frames), fps=fps, num_frames=len(images))


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    # PIL raises UnidentifiedImageError for non-images and OSError ("image file is
    # truncated") only when the pixels are read, hence the conversion inside the try.
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SkipSample(f"{path}: broken image ({type(err).__name__}: {err})") from err


def _select(frames: np.ndarray, indices: Sequence[int] | None, fps: float, name: str) -> DecodedVideo:
    if indices is None:
        return DecodedVideo(frames=frames, fps=fps, num_frames=len(frames))
    bad = [i for i in indices if not 0 <= i < len(frames)]
    if bad:
        raise SkipSample(f"{name}: frame indices {bad[:3]} outside a video of {len(frames)} frames")
    return DecodedVideo(frames=frames[list(indices)], fps=fps, num_frames=len(frames))
