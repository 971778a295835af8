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
from pathlib import Path

from data_prep.sources.base import (
    DEFAULT_FRAME_FOLDER_FPS,
    Discovery,
    Skipped,
    SourceVideo,
    check_splits,
    finish,
    layout_error,
    list_frame_images,
    make_key,
    require_root,
)

NAME = "Sky Time-lapse"
SPLIT_DIRS = {"train": "sky_train", "test": "sky_test"}


def discover(root: Path | None, splits: Sequence[str], fps: float = DEFAULT_FRAME_FOLDER_FPS) -> Discovery:
    splits = check_splits(splits)
    root = require_root(NAME, root, "a folder holding sky_train/ and sky_test/")
    split_dirs = {s: root / SPLIT_DIRS[s] for s in splits}
    for split_dir in split_dirs.values():
        if not split_dir.is_dir():
            raise layout_error(NAME, split_dir, "<video_id>/<video_id>_<n>/ folders of numbered .jpg frames")

    videos: list[SourceVideo] = []
    skipped: list[Skipped] = []
    for split, split_dir in split_dirs.items():
        for video_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for clip_dir in sorted(p for p in video_dir.iterdir() if p.is_dir()):
                num_frames = len(list_frame_images(clip_dir))
                if num_frames == 0:
                    skipped.append(Skipped(str(clip_dir), "empty clip folder: no .jpg frames"))
                    continue
                meta = {
                    "video_id": video_dir.name,
                    "clip": clip_dir.name,
                    "num_frames": num_frames,
                    "fps": fps,
                }
                videos.append(SourceVideo(make_key(clip_dir.name), split, str(clip_dir), "frames", meta))
    return finish(videos, skipped)
