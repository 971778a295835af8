"""Sky Time-lapse (Xiong et al. 2018, "Learning to Generate Time-Lapse Videos...").

Release layout: clips are folders of numbered jpg frames, grouped by source video:
```
<root>/sky_train/<video_id>/<video_id>_<n>/<video_id>_frames_00000046.jpg
<root>/sky_test/<video_id>/<video_id>_<n>/...
```
One sample per clip folder, as in the LVDM and MoCoGAN-HD loaders. The frames carry no
frame rate, so `fps` is an argument and is recorded in each sample's meta.
"""

from __future__ import annotations

from collections.abc import Sequence

from data_prep import storage
from data_prep.sources.base import (
    DEFAULT_FRAME_FOLDER_FPS,
    Discovery,
    Skipped,
    SourceVideo,
    check_splits,
    finish,
    frame_images,
    layout_error,
    list_folder,
    list_tree,
    make_key,
    require_root,
)

NAME = "Sky Time-lapse"
SPLIT_DIRS = {"train": "sky_train", "test": "sky_test"}


def discover(
    root: storage.Location | None, splits: Sequence[str], fps: float = DEFAULT_FRAME_FOLDER_FPS
) -> Discovery:
    splits = check_splits(splits)
    root = require_root(NAME, root, "a folder holding sky_train/ and sky_test/")
    split_dirs = {s: storage.join(root, SPLIT_DIRS[s]) for s in splits}
    for split_dir in split_dirs.values():
        if not storage.is_dir(split_dir):
            raise layout_error(NAME, split_dir, "<video_id>/<video_id>_<n>/ folders of numbered .jpg frames")

    videos: list[SourceVideo] = []
    skipped: list[Skipped] = []
    for split, split_dir in split_dirs.items():
        for video_dir in (e for e in list_folder(split_dir) if e.is_dir):
            tree = list_tree(video_dir.location)  # its clips and their frames, in one listing
            for clip_dir in (e for e in tree[video_dir.location] if e.is_dir):
                num_frames = len(frame_images(tree[clip_dir.location]))
                if num_frames == 0:
                    skipped.append(Skipped(clip_dir.location, "empty clip folder: no .jpg frames"))
                    continue
                meta = {
                    "video_id": video_dir.name,
                    "clip": clip_dir.name,
                    "num_frames": num_frames,
                    "fps": fps,
                }
                videos.append(SourceVideo(make_key(clip_dir.name), split, clip_dir.location, "frames", meta))
    return finish(videos, skipped)
