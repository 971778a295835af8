"""What every dataset source hands to the shard stage, and how one sample's frames are read.

A source's `discover()` only lists: it walks the release's own layout (split files, CSVs,
folders) and returns `SourceVideo` records, plain frozen data so they pickle cheaply into
Ray tasks. Nothing is decoded at discovery time, so listing a 2.5M-row WebVid CSV stays a
matter of seconds. Bad input found while listing (a split-file line whose video is missing,
a malformed CSV row, an empty frame folder) is *counted* in `Discovery.skipped`; only a
layout that cannot be read at all (missing root, split file or CSV) raises
`DatasetLayoutError`, before any work starts. Bad input found while decoding raises
`SkipSample` from `load_frames`, which the shard loop counts.

`data.root` may be a local folder or an object-store URI (`s3://bucket/ucf101`, anything
`pyarrow.fs` reads): every source lists and reads through the few helpers here (`list_folder`,
`list_tree`, `read_text`, `open_text`, `FolderIndex`), which go through
`data_prep.storage`, so one listing logic serves both. A `SourceVideo.path` is that kind of
location, a plain string, and `load_frames` resolves it with `data_prep.storage` in whatever
task it runs, on whichever node.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TextIO, TypeVar
from urllib.parse import urlparse

import numpy as np
from PIL import Image, UnidentifiedImageError
from pyarrow import fs as pafs

from data_prep import storage
from data_prep.decode import DecodeBudget, DecodedVideo, decode_video
from data_prep.skip import SkipSample
from data_prep.sources.shapes import render

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_FRAME_FOLDER_FPS = 25.0  # Sky Time-lapse and Taichi frame folders carry no fps
# Frames of one folder fetched at once from an object store: each is a request of a few ms
# that does no work here, and a Taichi png video has hundreds of them.
REMOTE_READ_THREADS = 16

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
    path: str  # location of the video file or frame folder (absolute path or URI); "" for synthetic
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


def layout_error(dataset: str, path: storage.Location, expected: str) -> DatasetLayoutError:
    """An error that names the missing path, what belongs there, and the config key to fix."""
    return DatasetLayoutError(
        f"{dataset}: {path} not found; expected {expected}. "
        f"Point `data.root` at the folder that holds the {dataset} release."
    )


def require_root(dataset: str, root: storage.Location | None, expected: str) -> str:
    """The dataset root as a location: a local path made absolute, or a URI as given."""
    if root is None:
        raise DatasetLayoutError(f"{dataset}: no dataset root given; set `data.root` to {expected}.")
    if storage.is_uri(root):
        return _require_uri_root(dataset, storage.absolute(root), expected)
    path = storage.local(root).expanduser().resolve()
    if not path.is_dir():
        raise layout_error(dataset, path, expected)
    return str(path)


def _require_uri_root(dataset: str, root: str, expected: str) -> str:
    parsed = urlparse(root)
    reach = (
        f"the store is reached at AWS_ENDPOINT_URL={os.environ['AWS_ENDPOINT_URL']}"
        if parsed.scheme == "s3" and os.environ.get("AWS_ENDPOINT_URL")
        else "the store is reached with the endpoint and credentials in the environment "
        "(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... as pyarrow reads them)"
    )
    try:
        if storage.is_dir(root):
            return root
        bucket = f"{parsed.scheme}://{parsed.netloc}"
        bucket_missing = bool(parsed.netloc) and not storage.is_dir(bucket)
    except (OSError, ValueError) as err:  # unreachable endpoint, refused credentials, bad URI
        raise DatasetLayoutError(
            f"{dataset}: cannot read {root} ({type(err).__name__}: {err}); {reach}. Check that endpoint "
            f"and the credentials, or point `data.root` at the folder or bucket prefix that holds the "
            f"{dataset} release."
        ) from err
    what = f"bucket {bucket} does not exist" if bucket_missing else "nothing is stored under that prefix"
    raise DatasetLayoutError(
        f"{dataset}: {root} not found ({what}; {reach}); expected {expected}. Point `data.root` at the "
        f"bucket prefix that holds the {dataset} release (upload it first, e.g. `aws s3 sync` of the "
        "unpacked folder), or at a local folder."
    )


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


@dataclass(frozen=True)
class Entry:
    """One name in a listed folder: a file or a folder (symbolic links followed)."""

    name: str
    location: str
    is_dir: bool

    @property
    def is_file(self) -> bool:
        return not self.is_dir

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem


def _entry(folder: str, relative: str, info: pafs.FileInfo) -> Entry | None:
    if info.type not in (pafs.FileType.File, pafs.FileType.Directory):
        return None  # a dangling link and the like: neither a video nor a folder of frames
    return Entry(info.base_name, storage.join(folder, relative), info.type == pafs.FileType.Directory)


def list_folder(folder: storage.Location) -> list[Entry]:
    """What is directly inside a folder, sorted by name; [] when it is missing or not a folder.

    One listing (one request on an object store), with the kinds included: a stat per entry
    is what makes listing slow on network storage.
    """
    filesystem, path = storage.resolve(folder)
    try:
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except NotADirectoryError:
        return []
    listed = (_entry(str(folder), info.base_name, info) for info in infos)
    return sorted((e for e in listed if e is not None), key=lambda e: e.name)


def list_tree(folder: storage.Location) -> dict[str, list[Entry]]:
    """Every folder below `folder` (itself included) -> its entries, from one recursive listing.

    On an object store a recursive listing is a few paged requests where a listing per
    folder is one request each; keep `folder` small enough to hold in memory at once.
    """
    filesystem, path = storage.resolve(folder)
    infos = filesystem.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    base = storage.join(folder)  # the spelling `storage.join` gives every entry below
    tree: dict[str, list[Entry]] = {base: []}
    for info in infos:
        relative = info.path[len(path) :].lstrip("/")
        entry = _entry(base, relative, info)
        if entry is None:
            continue
        within, _, _ = relative.rpartition("/")
        tree.setdefault(storage.join(base, within) if within else base, []).append(entry)
        if entry.is_dir:
            tree.setdefault(entry.location, [])
    return {where: sorted(entries, key=lambda e: e.name) for where, entries in tree.items()}


def read_text(location: storage.Location) -> str:
    """A whole UTF-8 text file (split lists, class index), local or on a store."""
    return storage.read_bytes(location).decode("utf-8")


@contextmanager
def open_text(location: storage.Location) -> Iterator[TextIO]:
    """A UTF-8 text file streamed with newlines untranslated, as `csv` wants it."""
    with storage.open_stream(location) as stream:
        with io.TextIOWrapper(stream, encoding="utf-8", newline="") as text:
            yield text


class FolderIndex:
    """Which files exist below `root`, one listing per sub-folder instead of a stat per name.

    Split files and CSVs name up to millions of videos; on network storage and object stores
    a stat per name is what makes listing slow, and one folder holds at most a few thousand.
    """

    def __init__(self, root: storage.Location) -> None:
        self.root = str(root)
        self.listed: dict[str, frozenset[str]] = {}

    def has(self, folder: str, file_name: str) -> bool:
        """Whether `root/folder/file_name` is a file (`folder` is relative, `/`-separated)."""
        if folder not in self.listed:
            entries = list_folder(storage.join(self.root, folder))
            self.listed[folder] = frozenset(e.name for e in entries if e.is_file)
        return file_name in self.listed[folder]


def frame_images(entries: Iterable[Entry]) -> list[Entry]:
    """The image files among a frame folder's entries, in frame order.

    Sorted by the last number in the file name, not lexically: Sky Time-lapse names frames
    `<id>_frames_00000046.jpg` (zero-padded), but re-extracted folders often are not
    (`frame_9.png` < `frame_10.png`).
    """
    images = [e for e in entries if e.is_file and e.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(images, key=_frame_order)


def list_frame_images(folder: storage.Location) -> list[Entry]:
    """Image files of a frame folder in frame order (see `frame_images`)."""
    return frame_images(list_folder(folder))


def _frame_order(entry: Entry) -> tuple[int, str]:
    match = _LAST_NUMBER.search(entry.stem)
    return (int(match.group(1)) if match else -1, entry.name)


def load_frames(
    video: SourceVideo, indices: Sequence[int] | None = None, budget: DecodeBudget | None = None
) -> DecodedVideo:
    """Decode `video` (all frames, or only `indices`) to `(t h w c)` uint8 RGB.

    Raises `SkipSample` for anything unreadable, naming the file, and for a video over `budget`
    (default `DecodeBudget()`), checked before it is decoded.
    """
    budget = budget or DecodeBudget()
    if video.kind == "synthetic":
        frames = render(video.meta)
        return _select(frames, indices, float(video.meta["fps"]), video.key)
    location = video.path
    if not storage.exists(location):
        raise SkipSample(f"{location}: listed at discovery but no longer exists")
    if video.kind == "file":
        # A stored video is fetched whole (a few MB) by decode_video and decoded from memory.
        decoded = decode_video(location, indices, budget=budget)
        if indices is None:
            # A clip of a longer video (data_prep/sources/captioned_table.py): keep its span.
            return trim_to_span(decoded, video.meta, location)
        return decoded
    if video.kind == "frames":
        fps = float(video.meta.get("fps", DEFAULT_FRAME_FOLDER_FPS))
        return _read_frame_folder(location, indices, fps, budget)
    raise ValueError(
        f"{video.key}: unknown SourceVideo.kind {video.kind!r}; expected file, frames or synthetic"
    )


def _read_frame_folder(
    folder: str, indices: Sequence[int] | None, fps: float, budget: DecodeBudget
) -> DecodedVideo:
    images = list_frame_images(folder)
    if not images:
        raise SkipSample(f"{folder}: frame folder has no {'/'.join(IMAGE_SUFFIXES)} images")
    wanted = range(len(images)) if indices is None else indices
    bad = [i for i in wanted if not 0 <= i < len(images)]
    if bad:
        raise SkipSample(f"{folder}: frame indices {bad[:3]} outside a video of {len(images)} frames")
    # Each frame gets its share of the budget, checked from its header before its pixels are read.
    count = len(wanted)
    read = functools.partial(_read_image, budget=budget, frames=count)
    frames = _map(read, [images[i].location for i in wanted], remote=storage.is_uri(folder))
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise SkipSample(f"{folder}: frames differ in size {sorted(shapes)}")
    return DecodedVideo(frames=np.stack(frames), fps=fps, num_frames=len(images))


_T = TypeVar("_T")


def _map(function: Callable[[str], _T], locations: list[str], remote: bool) -> list[_T]:
    """`function` over `locations` in order; from a store, several requests in flight at once."""
    if not remote or len(locations) < 2:
        return [function(location) for location in locations]
    with ThreadPoolExecutor(max_workers=min(REMOTE_READ_THREADS, len(locations))) as pool:
        return list(pool.map(function, locations))  # the first failure (in order) is raised


def _read_image(location: str, budget: DecodeBudget | None = None, frames: int = 1) -> np.ndarray:
    """One frame as `(h w c)` uint8 RGB; within `budget` shared by the `frames` frames read."""
    budget = budget or DecodeBudget()
    try:
        with storage.open_stream(location) as stream:
            data = stream.read(budget.file_bytes + 1)  # never more than the budget, whatever is stored
        budget.check_file(len(data), location)
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size  # from the header: nothing is decompressed yet
            budget.check_pixels(width, height, frames, f"{location} (one of the frames)")
            return np.asarray(image.convert("RGB"))
    # PIL raises UnidentifiedImageError for non-images and OSError ("image file is
    # truncated") only when the pixels are read, hence the conversion inside the try.
    # A frame that vanished (FileNotFoundError) is an OSError too. DecompressionBombError (a
    # header claiming over twice PIL's MAX_IMAGE_PIXELS, e.g. a 22 KB PNG) is none of these.
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise SkipSample(f"{location}: broken image ({type(err).__name__}: {err})") from err


def _select(frames: np.ndarray, indices: Sequence[int] | None, fps: float, name: str) -> DecodedVideo:
    if indices is None:
        return DecodedVideo(frames=frames, fps=fps, num_frames=len(frames))
    bad = [i for i in indices if not 0 <= i < len(frames)]
    if bad:
        raise SkipSample(f"{name}: frame indices {bad[:3]} outside a video of {len(frames)} frames")
    return DecodedVideo(frames=frames[list(indices)], fps=fps, num_frames=len(frames))


def trim_to_span(decoded: DecodedVideo, meta: Mapping, name: str) -> DecodedVideo:
    """The frames of `decoded` inside `meta["span_s"]` = [start, end) seconds (all without a span).

    A source that lists clips of longer videos (data_prep/sources/captioned_table.py) puts the
    span in the meta; `load_frames` keeps only its frames.
    """
    if "span_s" not in meta:
        return decoded
    start, end = meta["span_s"]
    first = math.ceil(start * decoded.fps)
    stop = min(math.ceil(end * decoded.fps), len(decoded.frames))
    if first >= stop:
        raise SkipSample(
            f"{name}: span {start}-{end} s holds no frame of a {len(decoded.frames)}-frame video "
            f"at {decoded.fps} fps"
        )
    return DecodedVideo(np.ascontiguousarray(decoded.frames[first:stop]), decoded.fps, stop - first)
