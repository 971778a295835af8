"""Turning discovered videos into shards, one chunk (= one shard) at a time.

A chunk is the unit of work and of resumption: its tar is written to a temporary name and
renamed when whole, then a small record of its rows and skipped files is written the same
way. A chunk is complete exactly when that record exists, so a rerun after a crash redoes
only the chunks without one, and every sample lands in the index exactly once.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import storage
from data_prep.decode import DecodeBudget
from data_prep.encode import encode_mp4
from data_prep.frames import resize_center_crop
from data_prep.shard_writer import write_shard
from data_prep.skip import SkipSample
from data_prep.sources import SourceVideo, load_frames

RECORDS = "chunks"


class InjectedFault(RuntimeError):
    """Raised on purpose (LVDM_FAULT_INJECT) to test that a failed chunk is redone cleanly."""


@dataclass(frozen=True)
class Chunk:
    name: str  # "<split>-<NNNNNN>": the shard file stem
    split: str
    videos: tuple[SourceVideo, ...]


def plan_chunks(videos: Sequence[SourceVideo], videos_per_shard: int) -> list[Chunk]:
    """Deterministic chunks per split: same videos and size -> same shard names and contents."""
    chunks: list[Chunk] = []
    for split in sorted({v.split for v in videos}):
        members = sorted((v for v in videos if v.split == split), key=lambda v: v.key)
        for index, start in enumerate(range(0, len(members), videos_per_shard)):
            batch = tuple(members[start : start + videos_per_shard])
            chunks.append(Chunk(name=f"{split}-{index:06d}", split=split, videos=batch))
    return chunks


def record_path(out_dir: storage.Location, chunk_name: str) -> str:
    return storage.join(out_dir, RECORDS, f"{chunk_name}.json")


def is_complete(out_dir: storage.Location, chunk_name: str) -> bool:
    return storage.is_file(record_path(out_dir, chunk_name))


def read_record(out_dir: storage.Location, chunk_name: str) -> dict:
    return storage.read_json(record_path(out_dir, chunk_name))


def prepare_sample(
    video: SourceVideo, resolution: int, min_frames: int, crf: int, budget: DecodeBudget | None = None
) -> tuple[bytes, dict]:
    """Decode (within `budget`), check length, resize + centre crop, re-encode. Raises SkipSample."""
    budget = budget or DecodeBudget()
    # Every frame is held resized to resolution x resolution: count it at least that big.
    budget = DecodeBudget(budget.pixels, budget.file_bytes, max(budget.min_frame_pixels, resolution**2))
    decoded = load_frames(video, budget=budget)
    if decoded.num_frames < min_frames:
        raise SkipSample(
            f"{video.path or video.key}: {decoded.num_frames} frames, shorter than one clip "
            f"({min_frames} frames = (data.frames - 1) * data.stride + 1)"
        )
    frames = resize_center_crop(decoded.frames, resolution)
    fps = decoded.fps if decoded.fps > 0 else 25.0
    meta = {
        **video.meta,
        "key": video.key,
        "split": video.split,
        "source_path": video.path,
        "fps": fps,
        "num_frames": int(frames.shape[0]),
        "height": int(frames.shape[1]),
        "width": int(frames.shape[2]),
    }
    return encode_mp4(np.ascontiguousarray(frames), fps=fps, crf=crf), meta


def process_chunk(
    chunk: Chunk,
    out_dir: Path,
    resolution: int,
    min_frames: int,
    crf: int,
    fail_after: int | None = None,
    budget: DecodeBudget | None = None,
) -> dict:
    """Write one shard + its record into a local folder; returns the record.

    `fail_after` injects a crash. For a workdir on an object store the caller passes a
    `storage.staged_folder(…, last=(RECORDS,))`, which publishes the record after the shard.
    """
    rows: list[dict] = []
    skipped: list[dict] = []
    shard_path = out_dir / f"{chunk.name}.tar"

    def samples():
        for video in chunk.videos:
            if fail_after is not None and len(rows) >= fail_after:
                raise InjectedFault(f"injected failure in chunk {chunk.name} after {len(rows)} samples")
            try:
                mp4, meta = prepare_sample(video, resolution, min_frames, crf, budget)
            except SkipSample as skip:
                skipped.append({"path": video.path or video.key, "key": video.key, "reason": skip.reason})
                continue
            rows.append(_index_row(meta, f"{chunk.name}.tar"))
            yield {"__key__": video.key, "mp4": mp4, "json": json.dumps(meta).encode()}

    written = write_shard(shard_path, samples())
    if written == 0 and shard_path.exists():
        shard_path.unlink()  # a shard with no samples would only trip up the loader
    record = {"chunk": chunk.name, "split": chunk.split, "shard": shard_path.name if written else None}
    record |= {"rows": rows, "skipped": skipped}
    storage.write_json(record_path(out_dir, chunk.name), record)
    return record


def _index_row(meta: dict, shard: str) -> dict:
    return {
        "key": meta["key"],
        "split": meta["split"],
        "shard": shard,
        "num_frames": meta["num_frames"],
        "fps": meta["fps"],
        "label": meta.get("label"),
        "class_name": meta.get("class_name"),
        "caption": meta.get("caption"),
        "source_path": meta["source_path"],
    }
