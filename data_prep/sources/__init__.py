"""Dataset sources: each lists one release's videos as laid out on disk, by name.

`DATASETS[name](root, splits, **options)` returns a `Discovery`; `load_frames(video)` reads
one listed video. The shard stage picks the source from `data.dataset` in the pipeline file.

Each source's own `discover()` only lists, and an empty folder lists as nothing. The registry
entries (what the shard stage calls) also refuse a requested split that lists no video at all:
a wrong `data.root` or an empty download must stop the run before any work, not finish a
`shard` stage that wrote nothing.
"""

import functools
import inspect
from collections.abc import Callable

from data_prep.sources import captioned_table, sky_timelapse, synthetic, taichi, ucf101, webvid
from data_prep.sources.base import (
    DatasetLayoutError,
    Discovery,
    Skipped,
    SourceVideo,
    load_frames,
    make_key,
)

# What a split needs to hold, in the words of each release's layout (for the error).
_EXPECTED = {
    "ucf101": "UCF-101/<Class>/*.avi videos named by ucfTrainTestlist/{train,test}list0N.txt",
    "sky_timelapse": "sky_train/ or sky_test/ <video_id>/<video_id>_<n>/ folders of numbered .jpg frames",
    "taichi": "train/ and test/ of .mp4 videos (or, with data.taichi_format: png, of .png frame folders)",
    "webvid": "videos/<page_dir>/<videoid>.mp4 files for the rows of the split's data.webvid_csv file",
    "synthetic": "a count above 0 for the split in data.synthetic.videos",
    "captioned_table": "rows of path, caption[, start, end] in the split's data.captions_table naming videos",
}


def _requiring_videos(name: str, discover: Callable[..., Discovery]) -> Callable[..., Discovery]:
    title = getattr(inspect.getmodule(discover), "NAME", name)  # "UCF-101", "Taichi", ...

    @functools.wraps(discover)
    def checked(root, splits, **options) -> Discovery:
        found = discover(root, splits, **options)
        listed = {video.split for video in found.videos}
        for split in dict.fromkeys(splits):
            if split in listed:
                continue
            where = f" under {root}" if root is not None else ""
            seen = (
                f" ({len(found.skipped)} entries skipped, e.g. {found.skipped[0].path}: "
                f"{found.skipped[0].reason})"
                if found.skipped
                else ""
            )
            others = [s for s in dict.fromkeys(splits) if s != split]
            drop = f", or leave the split out: --set data.splits=[{', '.join(others)}]" if others else ""
            fix = (
                f"Set --set data.synthetic.videos.{split}=N with N above 0"
                if name == "synthetic"
                else "Point `data.root` at the folder that holds the whole release"
            )
            raise DatasetLayoutError(
                f"{title}: no video for split {split!r}{where}{seen}; expected {_EXPECTED[name]}. "
                f"{fix}{drop}."
            )
        return found

    return checked


DATASETS: dict[str, Callable[..., Discovery]] = {
    name: _requiring_videos(name, discover)
    for name, discover in {
        "ucf101": ucf101.discover,
        "sky_timelapse": sky_timelapse.discover,
        "taichi": taichi.discover,
        "webvid": webvid.discover,
        "synthetic": synthetic.discover,
        "captioned_table": captioned_table.discover,
    }.items()
}

__all__ = [
    "DATASETS",
    "DatasetLayoutError",
    "Discovery",
    "Skipped",
    "SourceVideo",
    "load_frames",
    "make_key",
]
