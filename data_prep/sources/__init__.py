"""Dataset sources: each lists one release's videos as laid out on disk, by name.

`DATASETS[name](root, splits, **options)` returns a `Discovery`; `load_frames(video)` reads
one listed video. The shard stage picks the source from `data.dataset` in the pipeline file.
"""

from collections.abc import Callable

from data_prep.sources import sky_timelapse, synthetic, taichi, ucf101, webvid
from data_prep.sources.base import (
    DatasetLayoutError,
    Discovery,
    Skipped,
    SourceVideo,
    load_frames,
    make_key,
)

DATASETS: dict[str, Callable[..., Discovery]] = {
    "ucf101": ucf101.discover,
    "sky_timelapse": sky_timelapse.discover,
    "taichi": taichi.discover,
    "webvid": webvid.discover,
    "synthetic": synthetic.discover,
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
