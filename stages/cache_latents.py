"""Stage `cache_latents`: every stored video through the trained encoder, once.

After this, a diffusion step reads a few KB of fp16 latents instead of decoding and encoding
video (LVDM §3.1: the autoencoder is what makes the diffusion model cheap). Two engines
(`cache_latents.engine`), same files bit for bit: `tasks`, one Ray task per video shard that
decodes and encodes it; `ray_data` (stages/cache_latents_stream.py), a streaming Ray Data
pipeline with decoding in CPU tasks and the encoder in an actor pool (GPUs where the cluster has
them). Either writes each latent shard atomically and then a record of it, so a rerun redoes
only the shards without a record. `cache_t2v_latents` (SD's VAE per frame) shares the
bookkeeping around the encoding: `shard_jobs` before, `wait_encoded` and `finish` after.
Latents are stored raw (posterior means); the data-derived scale and shift travel in the
manifest and in every sample's JSON, so a consumer normalises with `(z + shift) * scale`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import ray
import torch

from data_prep import storage
from data_prep.chunks import RECORDS, is_complete, read_record
from data_prep.index import write_index
from data_prep.shard_writer import read_shard
from data_prep.skip import SkipSample
from lvdm.precision import autocast_dtype
from stages import tracking
from stages.autoencoder_file import load_autoencoder
from stages.cache_latents_stream import encode_streaming
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.latent_shard import EncodedVideo, decode_frames, encode_frames, write_latent_shard
from stages.ray_session import ensure_ray, task_device, wait_all

Job = tuple[str, str]  # (split, video shard name)

LATENT_INDEX_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("latent_frames", pa.int64()),
        ("label", pa.int64()),
        ("caption", pa.string()),
    ]
)


def run(ctx: StageContext) -> dict:
    shard_manifest, ae_manifest = ctx.inputs["shard"], ctx.inputs["train_autoencoder"]
    video_dir = shard_manifest["out_dir"]
    ae_path = storage.join(ae_manifest["out_dir"], ae_manifest["outputs"]["autoencoder"])
    settings = ctx.config.cache_latents
    jobs, pending = shard_jobs(shard_manifest, ctx.out_dir)
    print(f"[cache_latents] {len(jobs)} shards, {len(pending)} to encode ({settings.engine} engine)")

    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks(
        "cache_latents", f"cache_latents.use_gpu={settings.use_gpu}", {"CPU": 1, "GPU": int(settings.use_gpu)}
    )
    started = time.perf_counter()
    sources = [(split, storage.join(video_dir, name)) for split, name in pending]
    failures = encode_pending(
        settings, sources, ctx.out_dir, ae_path, ctx.config.data.frames, ctx.config.data.stride
    )
    scale, shift = ae_manifest["outputs"]["scale"], ae_manifest["outputs"]["shift"]
    return finish(
        ctx, shard_manifest, jobs, pending, failures, started, scale=scale, shift=shift, autoencoder=ae_path
    )


def shard_jobs(shard_manifest: dict, out_dir: storage.Location) -> tuple[list[Job], list[Job]]:
    """`(split, video shard name)` of every shard the shard stage wrote, and of those whose latent
    shard in `out_dir` has no record yet: all that a rerun still encodes."""
    jobs = [(split, name) for split, names in shard_manifest["outputs"]["shards"].items() for name in names]
    return jobs, [job for job in jobs if not is_complete(out_dir, _stem(job[1]))]


def wait_encoded(refs: dict[ray.ObjectRef, str], stage: str) -> list[str]:
    """Wait for every per-shard encoding task (ref -> shard name); "name (why)" of each that failed."""
    return [f"{name} ({_failure_text(err)})" for name, err in wait_all(refs, stage, "shard")]


def finish(
    ctx: StageContext,
    shard_manifest: dict,
    jobs: list[Job],
    pending: list[Job],
    failures: list[str],
    started: float,
    *,
    scale: float | list[float],
    shift: float | list[float],
    autoencoder: str,
) -> dict:
    """After the encoding: fail naming every shard that failed (a rerun redoes only those), else
    write the index of all latent shards and return the stage's outputs, with the normalisation
    (`scale`, `shift`) and the `autoencoder` whose latents they are."""
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(jobs)} video shards failed to encode: {', '.join(failures)}; "
            "rerun to redo only these"
        )

    seconds = time.perf_counter() - started
    # The per-shard records (written by each task after its tar) hold the index rows and skips,
    # so a resumed stage reports the work of earlier attempts without rereading any shard.
    records = [read_record(ctx.out_dir, _stem(name)) for _, name in jobs]
    rows = [row for record in records for row in record["rows"]]
    skipped = [skip for record in records for skip in record["skipped"]]
    encoded = {name for _, name in pending}
    rate = sum(r["shard"] in encoded for r in rows) / seconds if pending else 0.0
    write_index(rows, storage.join(ctx.out_dir, "index.parquet"), LATENT_INDEX_SCHEMA)
    shards = {
        split: sorted(r["shard"] for r in records if r["split"] == split and r["shard"])
        for split in shard_manifest["outputs"]["shards"]
    }
    frames = sum(r["latent_frames"] for r in rows)
    counts = {"latents": len(rows), "latent_frames": frames, "videos_per_s": rate}
    tracking.log_metrics(ctx.tracking, counts, step=0)
    print(f"[{ctx.name}] {counts['latents']} latent sequences, {counts['latent_frames']} latent frames")
    return {
        "shards": shards,
        "index": "index.parquet",
        "scale": scale,
        "shift": shift,
        "counts": counts,
        "skipped": skipped,
        "autoencoder": autoencoder,
    }


def encode_pending(
    settings,
    sources: list[tuple[str, str]],
    out_dir: storage.Location,
    ae_path: str,
    frames: int,
    stride: int,
) -> list[str]:
    """Encode the video shards `sources` ((split, location) each) with `settings.engine`;
    returns "name (why)" of every shard that failed (the others are written)."""
    if not sources:
        return []
    if settings.engine == "ray_data":
        return encode_streaming(
            sources,
            out_dir,
            ae_path,
            frames=frames,
            stride=stride,
            batch_size=settings.batch_size,
            precision=settings.precision,
            use_gpu=settings.use_gpu,
            concurrency=settings.concurrency,
        )
    encode = _encode_shard.options(num_gpus=1 if settings.use_gpu else 0)
    refs = {
        encode.remote(
            split, src, out_dir, ae_path, frames, stride, settings.batch_size, settings.precision
        ): storage.name(src)
        for split, src in sources
    }
    return wait_encoded(refs, "cache_latents")


def _failure_text(err: ray.exceptions.RayError) -> str:
    if isinstance(err, ray.exceptions.RayTaskError):
        cause = str(err.cause) if err.cause else str(err).splitlines()[0]
        return f"{type(err.cause).__name__}: {cause}"
    return f"{type(err).__name__}: {str(err).splitlines()[0]}"


def _stem(shard_name: str) -> str:
    return shard_name.removesuffix(".tar")


@ray.remote(num_cpus=1)
def _encode_shard(
    split: str,
    src: str,
    out_dir: str,
    ae_path: str,
    frames: int,
    stride: int,
    batch_size: int,
    precision: str,
) -> dict:
    device = task_device()
    dtype = autocast_dtype(precision, device)
    with storage.staged_folder(out_dir, last=(RECORDS,)) as folder:
        return encode_shard(split, src, folder, ae_path, frames, stride, batch_size, device, dtype)


def encode_shard(
    split: str,
    src: storage.Location,
    out_dir: Path,
    ae_path: storage.Location,
    frames: int,
    stride: int,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> dict:
    """Encode one video shard into a latent shard of the same name in the local folder
    `out_dir`, then write its record (rows + skips).

    As in the shard stage, the record is written after the tar is whole, and a shard counts as
    done exactly when its record exists.
    """
    model, meta = load_autoencoder(ae_path)
    model = model.to(device)

    def encoded() -> Iterator[EncodedVideo]:
        for key, fields in read_shard(src):
            info = json.loads(fields["json"])
            try:
                video = decode_frames(fields["mp4"], frames, stride)
            except SkipSample as skip:
                yield EncodedVideo(key, info, None, skip.reason)
                continue
            yield EncodedVideo(key, info, encode_frames(model, video, frames, batch_size, device, dtype))

    return write_latent_shard(out_dir, split, storage.name(src), encoded(), meta)


STAGE = Stage(
    name="cache_latents",
    run=run,
    sections=("cache_latents",),
    inputs=("shard", "train_autoencoder"),
    description="encode every stored video into fp16 latent sequences (key.npy + key.json shards)",
)
