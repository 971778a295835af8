"""Taichi-HD (Siarohin et al. 2019, First Order Motion Model), in either released format.

```
<root>/train/<youtube_id>#<start>#<end>.mp4          format="mp4"
<root>/train/<youtube_id>#<start>#<end>.mp4/0000000.png   format="png" (a folder per video)
<root>/test/...
```
The first-order-model `load_videos.py` writes png folders that keep the `.mp4` suffix in
the folder name; it is dropped from the key. `#` is not a webdataset-safe key character, so
keys are sanitised (`make_key`) and the YouTube id and frame range go into meta.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_prep import storage
from data_prep.sources.base import (
    DEFAULT_FRAME_FOLDER_FPS,
    DatasetLayoutError,
    Discovery,
    Entry,
    Skipped,
    SourceVideo,
    check_splits,
    finish,
    layout_error,
    list_folder,
    list_frame_images,
    make_key,
    require_root,
)

NAME = "Taichi"
FORMATS = ("mp4", "png")


def discover(
    root: storage.Location | None,
    splits: Sequence[str],
    format: str = "mp4",
    fps: float = DEFAULT_FRAME_FOLDER_FPS,
) -> Discovery:
    """`fps` is used for png folders only; mp4 files carry their own."""
    splits = check_splits(splits)
    if format not in FORMATS:
        raise ValueError(f"Taichi format must be one of {list(FORMATS)}; got {format!r}")
    root = require_root(NAME, root, "a folder holding train/ and test/")
    expected = ".mp4 videos" if format == "mp4" else "one folder of numbered .png frames per video"
    split_dirs = {s: storage.join(root, s) for s in splits}
    for split_dir in split_dirs.values():
        if not storage.is_dir(split_dir):
            raise layout_error(NAME, split_dir, expected)

    videos: list[SourceVideo] = []
    skipped: list[Skipped] = []
    for split, split_dir in split_dirs.items():
        entries = list_folder(split_dir)
        listed = _list_mp4(entries, split) if format == "mp4" else _list_png(entries, split, fps, skipped)
        if not listed and any(_looks_like_other_format(e, format) for e in entries):
            other = "png" if format == "mp4" else "mp4"
            raise DatasetLayoutError(
                f"{NAME}: {split_dir} holds no {expected} but looks like the {other} format; "
                f"set the dataset option format: {other}"
            )
        videos += listed
    return finish(videos, skipped)


def _list_mp4(entries: list[Entry], split: str) -> list[SourceVideo]:
    return [
        SourceVideo(make_key(entry.stem), split, entry.location, "file", _parse_name(entry.stem))
        for entry in entries
        if entry.is_file and entry.suffix.lower() == ".mp4"
    ]


def _list_png(entries: list[Entry], split: str, fps: float, skipped: list[Skipped]) -> list[SourceVideo]:
    videos = []
    for entry in (e for e in entries if e.is_dir):
        name = entry.name.removesuffix(".mp4")
        num_frames = len(list_frame_images(entry.location))
        if num_frames == 0:
            skipped.append(Skipped(entry.location, "empty frame folder: no .png frames"))
            continue
        meta = _parse_name(name) | {"num_frames": num_frames, "fps": fps}
        videos.append(SourceVideo(make_key(name), split, entry.location, "frames", meta))
    return videos


def _looks_like_other_format(entry: Entry, format: str) -> bool:
    # png-format folders keep the `.mp4` suffix, so the suffix alone cannot tell them apart.
    is_mp4 = entry.suffix.lower() == ".mp4"
    return is_mp4 and (entry.is_dir if format == "mp4" else entry.is_file)


def _parse_name(name: str) -> dict:
    """`<youtube_id>#<start>#<end>` -> video_id and frame range; other names are kept whole."""
    parts = name.split("#")
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return {"name": name, "video_id": parts[0], "start": int(parts[1]), "end": int(parts[2])}
    return {"name": name, "video_id": name}
