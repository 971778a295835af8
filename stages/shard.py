"""Stage `shard`: raw dataset -> WebDataset tars per split + index.parquet.

Discovery runs on the driver (cheap, and a missing root or split file must fail before any
work); decoding and re-encoding fan out as one Ray task per chunk. A failed chunk does not
stop the others: their shards are kept, the stage fails naming the chunk, and the rerun
redoes only the chunks that have no record.
"""

from __future__ import annotations

import os
import time

import ray

from data_prep import storage
from data_prep.chunks import RECORDS, Chunk, is_complete, plan_chunks, process_chunk, read_record, record_path
from data_prep.decode import DecodeBudget
from data_prep.index import write_index
from data_prep.sources import DATASETS, Discovery
from stages import tracking
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray, wait_all

FAULT_ENV = "LVDM_FAULT_INJECT"  # "<chunk name>[:<samples before failing>]", for failure tests


def discover(data) -> Discovery:
    """Config -> the plain arguments of each dataset's own discover()."""
    options = {
        "ucf101": {"split_number": data.ucf101_split},
        "sky_timelapse": {"fps": data.frame_folder_fps},
        "taichi": {"format": data.taichi_format, "fps": data.frame_folder_fps},
        "webvid": {"csv_files": dict(data.webvid_csv)},
        "captioned_table": {"tables": dict(data.captions_table)},
        "synthetic": {
            "num_videos": dict(data.synthetic.videos),
            "num_frames": data.synthetic.frames,
            "resolution": data.resolution,
            "seed": data.synthetic.seed,
            "fps": data.synthetic.fps,
            "caption_shapes": data.synthetic.caption_shapes,
        },
    }[data.dataset]
    return DATASETS[data.dataset](data.root, list(data.splits), **options)


def run(ctx: StageContext) -> dict:
    data, shard = ctx.config.data, ctx.config.shard
    found = discover(data)
    chunks = plan_chunks(found.videos, shard.videos_per_shard)
    pending = [c for c in chunks if not is_complete(ctx.out_dir, c.name)]
    print(f"[shard] {len(found.videos)} videos in {len(chunks)} chunks; {len(pending)} to do")

    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    started = time.perf_counter()
    failures = _run_chunks(pending, ctx.out_dir, data, shard.crf, _fault_injection())
    seconds = time.perf_counter() - started
    if failures:
        names = ", ".join(f"{name} ({err})" for name, err in failures)
        raise RuntimeError(
            f"{len(failures)} of {len(chunks)} chunks failed: {names}; rerun to redo only these"
        )

    records = [read_record(ctx.out_dir, c.name) for c in chunks]
    rows = [row for r in records for row in r["rows"]]
    skipped = [{"path": s.path, "reason": s.reason} for s in found.skipped]
    skipped += [{"path": s["path"], "reason": s["reason"]} for r in records for s in r["skipped"]]
    write_index(rows, storage.join(ctx.out_dir, "index.parquet"))

    shards = {
        split: sorted(r["shard"] for r in records if r["split"] == split and r["shard"])
        for split in data.splits
    }
    counts = {
        "found": len(found.videos) + len(found.skipped),
        "written": len(rows),
        "skipped": len(skipped),
        **{f"written_{split}": sum(r["split"] == split for r in rows) for split in data.splits},
    }
    empty = [split for split in data.splits if counts[f"written_{split}"] == 0]
    if empty:
        for chunk in chunks:  # so a rerun reads them again once the videos are fixed
            if chunk.split in empty:
                storage.delete(record_path(ctx.out_dir, chunk.name))
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
        raise RuntimeError(
            f"split(s) {empty}: every video was skipped ({counts['skipped']} in all), so there is "
            f"nothing to train or evaluate on. First reasons: {reasons or 'none found'}. Fix or "
            "replace those videos under data.root and rerun (that split's videos are read again), "
            "or drop the split (--set data.splits=[...])"
        )
    rate = sum(len(c.videos) for c in pending) / seconds if pending else 0.0
    metrics = {**{f"videos_{k}": v for k, v in counts.items()}, "videos_per_s": rate}
    tracking.log_metrics(ctx.tracking, metrics, step=0)
    print(f"[shard] written {counts['written']}, skipped {counts['skipped']} (reasons in manifest.json)")
    return {
        "counts": counts,
        "shards": shards,
        "index": "index.parquet",
        "skipped": skipped,
        "videos_per_s": rate,  # this run's chunk phase, over the chunks it processed
    }


@ray.remote(num_cpus=1)
def _chunk_task(
    chunk: Chunk, out_dir: str, resolution: int, min_frames: int, crf: int, fail_after, budget: DecodeBudget
):
    import torch

    torch.set_num_threads(1)  # one task per core; resize must not oversubscribe
    with storage.staged_folder(out_dir, last=(RECORDS,)) as folder:
        record = process_chunk(chunk, folder, resolution, min_frames, crf, fail_after, budget)
    return len(record["rows"]), len(record["skipped"])


def _run_chunks(chunks: list[Chunk], out_dir: str, data, crf: int, fault: tuple[str, int] | None):
    futures = {}
    budget = DecodeBudget(pixels=data.max_decode_pixels, file_bytes=data.max_file_mib << 20)
    for chunk in chunks:
        fail_after = fault[1] if fault and fault[0] == chunk.name else None
        ref = _chunk_task.remote(chunk, out_dir, data.resolution, data.min_frames, crf, fail_after, budget)
        futures[ref] = chunk.name
    sizes = {c.name: len(c.videos) for c in chunks}
    return [(name, _failure_text(err)) for name, err in wait_all(futures, "shard", "video", sizes)]


def _failure_text(err: ray.exceptions.RayError) -> str:
    if isinstance(err, ray.exceptions.RayTaskError):
        return str(err.cause) if err.cause else str(err).splitlines()[0]
    return f"{type(err).__name__}: {str(err).splitlines()[0]}"


def _fault_injection() -> tuple[str, int] | None:
    value = os.environ.get(FAULT_ENV)
    if not value:
        return None
    name, _, after = value.partition(":")
    return name, int(after or 1)


STAGE = Stage(
    name="shard",
    run=run,
    sections=("data", "shard"),
    description="raw videos -> WebDataset shards (.mp4 + .json) per split + index.parquet",
)
