"""Stage `cache_t2v_latents`: every stored video through Stable Diffusion's VAE, frame by frame, once.

The text-to-video model of LVDM §5 diffuses SD's own latents (the release's first stage is
SD's 2D autoencoder applied per frame, not the 3D video autoencoder), so its SD-initialised
spatial layers see what SD was trained on. The shards have `cache_latents`' layout (key.npy
fp16 `(c t h w)` posterior means + key.json with the caption) and its normalisation fields,
here SD's fixed scale 0.18215 and shift 0: a consumer normalises with `(z + shift) * scale`.
One Ray task per video shard; a shard counts as done when its record exists. What is not about
the encoder (which shards are left, the latent shard and its record, the index, the outputs) is
`cache_latents`' own code, shared.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import ray
import torch

from data_prep import storage
from data_prep.chunks import RECORDS
from data_prep.clip_sampling import frames_to_model_range
from data_prep.decode import decode_video
from data_prep.shard_writer import read_shard
from data_prep.skip import SkipSample
from lvdm.frame_autoencoder import SD_SCALE_FACTOR, FrameAutoencoder
from stages.cache_latents import finish, shard_jobs, wait_encoded
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.latent_shard import EncodedVideo, write_latent_shard
from stages.ray_session import ensure_ray, task_device


def run(ctx: StageContext) -> dict:
    shard_manifest, t2v = ctx.inputs["shard"], ctx.config.t2v_latents
    video_dir = shard_manifest["out_dir"]
    jobs, pending = shard_jobs(shard_manifest, ctx.out_dir)
    sd_folder = str(t2v.stable_diffusion)
    FrameAutoencoder.from_folder(sd_folder)  # a missing VAE fails here, naming the folder, not in a task
    print(f"[cache_t2v_latents] {len(jobs)} shards, {len(pending)} to encode with SD's VAE from {sd_folder}")

    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks("cache_t2v_latents", f"t2v.use_gpu={t2v.use_gpu}", {"CPU": 1, "GPU": int(t2v.use_gpu)})
    started = time.perf_counter()
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
    failures = wait_encoded(refs, "cache_t2v_latents")
    outputs = {"scale": SD_SCALE_FACTOR, "shift": 0.0, "autoencoder": sd_folder}
    return finish(ctx, shard_manifest, jobs, pending, failures, started, **outputs)


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
    model = FrameAutoencoder.from_folder(sd_folder).to(device).eval()

    def encoded() -> Iterator[EncodedVideo]:
        for key, fields in read_shard(src):
            info = json.loads(fields["json"])
            caption = info.get("caption")
            if not isinstance(caption, str) or not caption.strip():
                yield EncodedVideo(key, info, None, "no caption")
                continue
            try:
                video = decode_video(fields["mp4"]).frames[::stride]
            except SkipSample as skip:
                yield EncodedVideo(key, info, None, skip.reason)
                continue
            pixels = torch.from_numpy(frames_to_model_range(video)).to(device)  # c t h w
            latents = torch.cat(
                [model.encode(part[None]).mean[0] for part in pixels.split(batch_frames, dim=1)], dim=1
            )
            yield EncodedVideo(key, info, latents.float().cpu().numpy().astype("float16"))

    meta = {"scale": SD_SCALE_FACTOR, "shift": 0.0}
    return write_latent_shard(out_dir, split, storage.name(src), encoded(), meta)


STAGE = Stage(
    name="cache_t2v_latents",
    run=run,
    sections=("t2v_latents",),
    inputs=("shard",),
    description="encode every stored video frame-wise with Stable Diffusion's VAE (text-to-video latents)",
)
