"""Stage `cache_latents`: every stored video through the trained encoder, once.

After this, a diffusion step reads a few KB of fp16 latents instead of decoding and encoding
video (LVDM §3.1: the autoencoder is what makes the diffusion model cheap). One Ray task per
video shard; each writes its latent shard atomically, so a rerun redoes only missing shards.
Latents are stored raw (posterior means); the data-derived scale and shift travel in the
manifest and in every sample's JSON, so a consumer normalises with `(z + shift) * scale`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import ray
import torch
from tqdm import tqdm

from data_prep.clip_sampling import frames_to_model_range
from data_prep.decode import decode_video
from data_prep.index import write_index
from data_prep.shard_writer import read_shard, write_shard
from data_prep.skip import SkipSample
from lvdm.latent_sequence import encode_sequence
from stages import tracking
from stages.autoencoder_file import load_autoencoder
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray

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
    video_dir = Path(shard_manifest["out_dir"])
    ae_path = Path(ae_manifest["out_dir"]) / ae_manifest["outputs"]["autoencoder"]
    settings = ctx.config.cache_latents
    jobs = [
        (split, video_dir / name, ctx.out_dir / name)
        for split, names in shard_manifest["outputs"]["shards"].items()
        for name in names
    ]
    pending = [job for job in jobs if not job[2].exists()]
    print(f"[cache_latents] {len(jobs)} shards, {len(pending)} to encode")

    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    encode = _encode_shard.options(num_gpus=1 if settings.use_gpu else 0)
    refs = [
        encode.remote(
            str(src),
            str(dst),
            str(ae_path),
            ctx.config.data.frames,
            ctx.config.data.stride,
            settings.batch_size,
        )
        for _, src, dst in pending
    ]
    skipped: list[dict] = []
    started = time.perf_counter()
    with tqdm(total=len(refs), desc="cache_latents", unit="shard") as bar:
        remaining = list(refs)
        while remaining:
            done, remaining = ray.wait(remaining, num_returns=1)
            skipped += ray.get(done[0])
            bar.update(1)

    seconds = time.perf_counter() - started
    rows = [row for split, _, dst in jobs if dst.exists() for row in _rows(dst, split)]
    encoded = {dst.name for _, _, dst in pending}
    rate = sum(r["shard"] in encoded for r in rows) / seconds if pending else 0.0
    write_index(rows, ctx.out_dir / "index.parquet", LATENT_INDEX_SCHEMA)
    shards = {
        split: sorted(dst.name for s, _, dst in jobs if s == split and dst.exists())
        for split in shard_manifest["outputs"]["shards"]
    }
    meta = ae_manifest["outputs"]
    frames = sum(r["latent_frames"] for r in rows)
    counts = {"latents": len(rows), "latent_frames": frames, "videos_per_s": rate}
    tracking.log_metrics(ctx.tracking, counts, step=0)
    print(f"[cache_latents] {counts['latents']} latent sequences, {counts['latent_frames']} latent frames")
    return {
        "shards": shards,
        "index": "index.parquet",
        "scale": meta["scale"],
        "shift": meta["shift"],
        "counts": counts,
        "skipped": skipped,
        "autoencoder": str(ae_path),
    }


@ray.remote(num_cpus=1)
def _encode_shard(src: str, dst: str, ae_path: str, frames: int, stride: int, batch_size: int) -> list[dict]:
    torch.set_num_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    device = torch.device("cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu")
    return encode_shard(Path(src), Path(dst), Path(ae_path), frames, stride, batch_size, device)


def encode_shard(
    src: Path, dst: Path, ae_path: Path, frames: int, stride: int, batch_size: int, device: torch.device
) -> list[dict]:
    """Encode one video shard into one latent shard; returns the samples it had to skip."""
    model, meta = load_autoencoder(ae_path)
    model = model.to(device)
    skipped: list[dict] = []

    def samples():
        for key, fields in read_shard(src):
            info = json.loads(fields["json"])
            try:
                video = decode_video(fields["mp4"]).frames[::stride]
                if len(video) < frames:
                    raise SkipSample(f"{len(video)} frames at stride {stride}: less than one clip ({frames})")
                pixels = torch.from_numpy(frames_to_model_range(video)).to(device)
                latents = encode_sequence(model, pixels, window=frames, batch_size=batch_size)
            except SkipSample as skip:
                skipped.append({"key": key, "shard": src.name, "reason": skip.reason})
                continue
            info |= {"latent_frames": int(latents.shape[1]), "scale": meta["scale"], "shift": meta["shift"]}
            yield {"__key__": key, "npy": latents.cpu().numpy().astype("float16"), "json": info}

    write_shard(dst, samples())
    return skipped


def _rows(shard: Path, split: str) -> list[dict]:
    rows = []
    for key, fields in read_shard(shard):
        info = json.loads(fields["json"])
        rows.append(
            {
                "key": key,
                "split": split,
                "shard": shard.name,
                "latent_frames": info["latent_frames"],
                "label": info.get("label"),
                "caption": info.get("caption"),
            }
        )
    return rows


STAGE = Stage(
    name="cache_latents",
    run=run,
    sections=("cache_latents",),
    inputs=("shard", "train_autoencoder"),
    description="encode every stored video into fp16 latent sequences (key.npy + key.json shards)",
)
