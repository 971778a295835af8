"""Stage `cache_t2v_latents`: every stored video through Stable Diffusion's VAE, frame by frame, once.

The text-to-video model of LVDM §5 diffuses SD's own latents (the release's first stage is
SD's 2D autoencoder applied per frame, not the 3D video autoencoder), so its SD-initialised
spatial layers see what SD was trained on. The shards have `cache_latents`' layout (key.npy
fp16 `(c t h w)` posterior means + key.json with the caption) and its normalisation fields,
here SD's fixed scale 0.18215 and shift 0: a consumer normalises with `(z + shift) * scale`.
One Ray task per video shard; a shard counts as done when its record exists.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray
import torch

from data_prep import storage
from data_prep.chunks import RECORDS, is_complete, read_record, record_path
from data_prep.clip_sampling import frames_to_model_range
from data_prep.decode import decode_video
from data_prep.index import write_index
from data_prep.shard_writer import read_shard, write_shard
from data_prep.skip import SkipSample
from lvdm.frame_autoencoder import SD_SCALE_FACTOR, FrameAutoencoder
from stages import tracking
from stages.cache_latents import LATENT_INDEX_SCHEMA
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray, task_device, wait_all


def run(ctx: StageContext) -> dict:
    shard_manifest, t2v = ctx.inputs["shard"], ctx.config.t2v_latents
    video_dir = shard_manifest["out_dir"]
    jobs = [(split, name) for split, names in shard_manifest["outputs"]["shards"].items() for name in names]
    pending = [job for job in jobs if not is_complete(ctx.out_dir, name_stem(job[1]))]
    sd_folder = str(t2v.stable_diffusion)
    FrameAutoencoder.from_folder(sd_folder)  # a missing VAE fails here, naming the folder, not in a task
    print(f"[cache_t2v_latents] {len(jobs)} shards, {len(pending)} to encode with SD's VAE from {sd_folder}")

    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks("cache_t2v_latents", f"t2v.use_gpu={t2v.use_gpu}", {"CPU": 1, "GPU": int(t2v.use_gpu)})
    encode = _encode_shard.options(num_gpus=1 if t2v.use_gpu else 0)
    refs = {
        encode.remote(
            split,
            storage.join(video_dir, name),
            ctx.out_dir,
            sd_folder,
            ctx.config.data.stride,
            t2v.cache_batch_frames,
        ): name
        for split, name in pending
    }
    started = time.perf_counter()
    errors = wait_all(refs, "cache_t2v_latents", "shard")
    failures = [f"{name} ({type(err).__name__}: {str(err).splitlines()[0]})" for name, err in errors]
    if failures:
        raise RuntimeError(
            f"{len(failures)} of {len(jobs)} video shards failed to encode: {', '.join(failures)}; "
            "rerun to redo only these"
        )
    seconds = time.perf_counter() - started
    records = [read_record(ctx.out_dir, name_stem(name)) for _, name in jobs]
    rows = [row for record in records for row in record["rows"]]
    skipped = [skip for record in records for skip in record["skipped"]]
    write_index(rows, storage.join(ctx.out_dir, "index.parquet"), LATENT_INDEX_SCHEMA)
    shards = {
        split: sorted(r["shard"] for r in records if r["split"] == split and r["shard"])
        for split in shard_manifest["outputs"]["shards"]
    }
    counts = {
        "latents": len(rows),
        "latent_frames": sum(r["latent_frames"] for r in rows),
        "videos_per_s": len(rows) / seconds if pending else 0.0,
    }
    tracking.log_metrics(ctx.tracking, counts, step=0)
    print(f"[cache_t2v_latents] {counts['latents']} latent sequences, {counts['latent_frames']} frames")
    return {
        "shards": shards,
        "index": "index.parquet",
        "scale": SD_SCALE_FACTOR,
        "shift": 0.0,
        "counts": counts,
        "skipped": skipped,
        "autoencoder": sd_folder,
    }


def name_stem(shard_name: str) -> str:
    return shard_name.removesuffix(".tar")


@ray.remote(num_cpus=1)
def _encode_shard(split: str, src: str, out_dir: str, sd_folder: str, stride: int, batch_frames: int) -> dict:
    device = task_device()
    with storage.staged_folder(out_dir, last=(RECORDS,)) as folder:
        return encode_shard(split, src, folder, sd_folder, stride, batch_frames, device)


@torch.no_grad()
def encode_shard(
    split: str,
    src: storage.Location,
    out_dir: Path,
    sd_folder: str,
    stride: int,
    batch_frames: int,
    device: torch.device,
) -> dict:
    """Encode one video shard frame-wise into a latent shard of its name in `out_dir`, then its record."""
    dst = out_dir / storage.name(src)
    model = FrameAutoencoder.from_folder(sd_folder).to(device).eval()
    skipped: list[dict] = []
    rows: list[dict] = []

    def samples():
        for key, fields in read_shard(src):
            info = json.loads(fields["json"])
            caption = info.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                skipped.append({"key": key, "shard": dst.name, "reason": "no caption"})
                continue
            try:
                video = decode_video(fields["mp4"]).frames[::stride]
            except SkipSample as skip:
                skipped.append({"key": key, "shard": dst.name, "reason": skip.reason})
                continue
            pixels = torch.from_numpy(frames_to_model_range(video)).to(device)  # c t h w
            latents = torch.cat(
                [model.encode(part[None]).mean[0] for part in pixels.split(batch_frames, dim=1)], dim=1
            )
            info |= {"latent_frames": int(latents.shape[1]), "scale": SD_SCALE_FACTOR, "shift": 0.0}
            rows.append(
                {
                    "key": key,
                    "split": split,
                    "shard": dst.name,
                    "latent_frames": info["latent_frames"],
                    "label": info.get("label"),
                    "caption": caption,
                }
            )
            yield {"__key__": key, "npy": latents.float().cpu().numpy().astype("float16"), "json": info}

    written = write_shard(dst, samples())
    if written == 0 and dst.exists():
        dst.unlink()
    record = {"chunk": dst.stem, "split": split, "shard": dst.name if written else None}
    record |= {"rows": rows, "skipped": skipped}
    storage.write_json(record_path(out_dir, dst.stem), record)
    return record


STAGE = Stage(
    name="cache_t2v_latents",
    run=run,
    sections=("t2v_latents",),
    inputs=("shard",),
    description="encode every stored video frame-wise with Stable Diffusion's VAE (text-to-video latents)",
)
