"""Evaluation clips from a folder of videos or from video shards: the first clip of each video.

FVD compares two *sets of clips*; where they come from should not change the number. Both
sources give the same thing: uint8 `(t h w c)` RGB, the first `frames` frames of each video, one
clip per video, videos in a fixed order (sorted paths; shards in sorted order, samples as
stored). One deterministic clip per video is StyleGAN-V's convention for FVD16 and makes a rerun
give the same figure; random offsets would add sampling noise to a number already noisy at
small N.

A video that cannot be used (corrupt, not a video, shorter than one clip) is skipped and its
reason recorded in `skipped`, as the shard stage does; it never stops the run.
"""

from __future__ import annotations

import glob
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from data_prep import storage
from data_prep.decode import decode_video
from data_prep.shard_writer import read_shard
from data_prep.skip import SkipSample

log = logging.getLogger(__name__)

# Containers decord / PyAV (FFmpeg) read; other files in the folder (metadata, thumbnails) are ignored.
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".gif", ".mpg", ".mpeg", ".flv", ".wmv", ".ogv", ".3gp"}
)


class FirstClips:
    """Iterable over the first `frames`-frame clip of each video in `source`, up to `limit` clips.

    `source` is a folder of videos (searched recursively), a folder of shard `.tar`s, one `.tar`,
    or a glob of `.tar`s (`"shards/train-*.tar"`), or a list of shard locations (what a stage's
    manifest lists: a pipeline reads only those). `skipped` maps a video (path, or
    `shard:key`) to why it gave no clip; it fills while iterating.
    """

    def __init__(self, source: str | Path | list[str], frames: int = 16, limit: int | None = None) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1; got {frames}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit (clips) must be >= 1; got {limit}")
        self.frames, self.limit = frames, limit
        if isinstance(source, list):
            where = f" in {storage.parent(source[0])}" if source else ""
            self.source = f"{len(source)} listed shards{where}"
            self.shards, self.videos = list(source), []
        else:
            self.source = str(source)
            self.shards, self.videos = _resolve(self.source)
        self.skipped: dict[str, str] = {}

    @property
    def total(self) -> int | None:
        """At most this many clips (for a progress bar); None where shards hide the count."""
        if self.videos:
            return min(len(self.videos), self.limit or len(self.videos))
        return self.limit

    def __iter__(self) -> Iterator[np.ndarray]:
        self.skipped.clear()
        count = 0
        for name, decode in self._decoders():
            if count == self.limit:
                return
            try:
                clip = decode()
            except SkipSample as skip:
                self.skipped[name] = skip.reason
                log.warning("skipping %s: %s", name, skip.reason)
                continue
            count += 1
            yield clip

    def _decoders(self) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
        """(name, decode) per video, so nothing past `limit` is decoded."""
        indices = list(range(self.frames))
        for path in self.videos:
            yield str(path), lambda p=path: decode_video(p, indices).frames
        for shard in self.shards:
            for key, fields in read_shard(shard):
                name = f"{shard}:{key}"
                yield name, lambda f=fields, n=name: _shard_clip(f, n, indices)


def _shard_clip(fields: dict[str, bytes], name: str, indices: list[int]) -> np.ndarray:
    if "mp4" not in fields:
        raise SkipSample(f"{name}: no .mp4 member (has {sorted(fields)}); not a video shard")
    meta = json.loads(fields["json"]) if "json" in fields else {}
    if "num_frames" in meta and meta["num_frames"] < len(indices):
        raise SkipSample(f"{name}: {meta['num_frames']} frames, shorter than one clip of {len(indices)}")
    return decode_video(fields["mp4"], indices).frames


def _resolve(source: str) -> tuple[list, list[Path]]:
    """(shards, videos) named by `source`; exactly one of the two lists is non-empty."""
    if storage.is_uri(source):
        return _resolve_uri(source), []
    if glob.has_magic(source):
        shards = sorted(Path(p) for p in glob.glob(source) if p.endswith(".tar"))
        if not shards:
            raise FileNotFoundError(f"{source}: the glob matches no .tar shard")
        return shards, []
    path = Path(source)
    if path.is_file():
        if path.suffix == ".tar":
            return [path], []
        return [], [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{source} does not exist; give a folder of videos or of shard .tar files")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    shards = [p for p in files if p.suffix == ".tar"]
    if videos and shards:
        raise ValueError(
            f"{source} holds both videos ({videos[0].name}, ...) and shards ({shards[0].name}, ...); "
            "point at one kind (a glob such as 'DIR/*.tar' selects the shards)"
        )
    if not videos and not shards:
        raise FileNotFoundError(
            f"{source} holds no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) and no shard .tar files"
        )
    return shards, videos


def _resolve_uri(source: str) -> list[str]:
    """Shards on an object store: one `.tar`, a glob of them, or a folder holding them."""
    if glob.has_magic(source):
        shards = [p for p in storage.glob(source) if p.endswith(".tar")]
    elif source.endswith(".tar"):
        shards = [source] if storage.is_file(source) else []
    else:
        shards = [p for p in storage.walk_files(source) if p.endswith(".tar")]
    if not shards:
        raise FileNotFoundError(
            f"{source}: no shard .tar files there (on an object store give shards: a .tar, a glob "
            "such as s3://bucket/w/stages/shard-KEY/test-*.tar, or their folder)"
        )
    return shards
