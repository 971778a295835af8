"""`cache_latents` as a streaming Ray Data pipeline (`cache_latents.engine: ray_data`).

    video shards ──read + decode (CPU tasks)──▶ one row per video: uint8 frames
                 ──encode (actor pool holding the autoencoder; a GPU each with use_gpu)──▶ fp16 latents
                 ──driver──▶ each latent shard + its record, the moment its last video arrives

As in Anyscale's Stable Diffusion pre-processing template, decoding runs on CPUs while the
encoders (on GPUs where the cluster has them) never wait for a video, and Ray Data's streaming
executor bounds what is in flight (its object-store budget backpressures the decode tasks), so
decoding never runs ahead of memory. A shard's rows carry its index and a final row its video
count; the driver holds only encoded latents (a few KB per clip) until a shard is whole, then
writes it through `latent_shard.write_latent_shard`, the same function and the same per-video
computation as the `tasks` engine: the files are identical bit for bit (tests/stages/
test_cache_latents.py). A shard whose tar cannot be read is reported like a failed task
(named, nothing written, the others finish); a rerun redoes only shards without a record.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import ray
import ray.data
from tqdm import tqdm

from data_prep import storage
from data_prep.chunks import RECORDS
from data_prep.shard_writer import read_shard
from data_prep.skip import SkipSample
from lvdm.precision import autocast_dtype
from stages.autoencoder_file import load_autoencoder
from stages.latent_shard import EncodedVideo, decode_frames, encode_frames, write_latent_shard
from stages.ray_session import task_device


class DecodeShard:
    """Ray Data flat_map: a video shard -> one row per video (frames or skip reason), then an end
    row with the count; a shard that cannot be read -> one `failed` row naming why."""

    def __init__(self, frames: int, stride: int) -> None:
        self.frames, self.stride = frames, stride

    def __call__(self, job: dict) -> Iterator[dict]:
        base = {"split": job["split"], "shard": storage.name(job["src"]), "skip": "", "failed": ""}
        count = 0
        try:
            for count, (key, fields) in enumerate(read_shard(job["src"]), start=1):
                row = base | {"index": count - 1, "key": key, "info": fields["json"].decode()}
                try:
                    video = decode_frames(fields["mp4"], self.frames, self.stride)
                except SkipSample as skip:
                    yield row | {"skip": skip.reason, "data": b"", "shape": [0]}
                    continue
                yield row | {"data": video.tobytes(), "shape": list(video.shape)}
        except Exception as err:  # noqa: BLE001 - any unreadable shard is reported by name, as a task failure is
            yield (
                base
                | {"index": -1, "key": "", "info": "", "data": b"", "shape": [0]}
                | {"failed": f"{type(err).__name__}: {err}"}
            )
            return
        yield base | {"index": -1, "key": "", "info": "", "data": b"", "shape": [count]}


class EncodeVideos:
    """Ray Data actor: loads the autoencoder once, encodes each video row's frames to fp16 latents."""

    def __init__(self, ae_path: str, frames: int, batch_size: int, precision: str) -> None:
        self.device = task_device()  # threads = the CPUs Ray granted; the GPU if it granted one
        self.dtype = autocast_dtype(precision, self.device)
        model, _ = load_autoencoder(ae_path)
        self.model = model.to(self.device)
        self.frames, self.batch_size = frames, batch_size

    def __call__(self, row: dict) -> dict:
        if row["index"] < 0 or row["skip"]:
            return row
        video = np.frombuffer(row["data"], dtype=np.uint8).reshape(row["shape"])
        latents = encode_frames(self.model, video, self.frames, self.batch_size, self.device, self.dtype)
        return row | {"data": latents.tobytes(), "shape": list(latents.shape)}


@dataclass
class _Shard:
    split: str
    videos: dict[int, EncodedVideo] = field(default_factory=dict)
    total: int | None = None
    done: bool = False

    def whole(self) -> bool:
        return self.total is not None and len(self.videos) == self.total


def encode_streaming(
    sources: list[tuple[str, str]],
    out_dir: storage.Location,
    ae_path: str,
    *,
    frames: int,
    stride: int,
    batch_size: int,
    precision: str,
    use_gpu: bool,
    concurrency: int,
) -> list[str]:
    """Encode the video shards `sources` ((split, location) each) into `out_dir`; returns
    "name (why)" of every shard that failed, after all the others are written."""
    _check_room(use_gpu, concurrency)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = False  # shards are reassembled by index
    context.enable_progress_bars = False  # one bar below, per shard, as the tasks engine shows
    meta = load_autoencoder(ae_path)[1]
    jobs = [{"split": split, "src": str(src)} for split, src in sources]
    dataset = streaming_dataset(
        jobs,
        ae_path,
        frames=frames,
        stride=stride,
        batch_size=batch_size,
        precision=precision,
        use_gpu=use_gpu,
        concurrency=concurrency,
    )
    shards: dict[str, _Shard] = {}
    failures: list[str] = []
    with tqdm(total=len(jobs), desc="cache_latents", unit="shard") as bar:
        for row in dataset.iter_rows():
            shard = shards.setdefault(row["shard"], _Shard(row["split"]))
            if shard.done:
                continue  # a failed shard's videos still in flight
            if row["failed"]:
                failures.append(f"{row['shard']} ({row['failed']})")
            elif row["index"] < 0:
                shard.total = int(row["shape"][0])
            else:
                shard.videos[row["index"]] = _video(row)
            if shard.whole():
                with storage.staged_folder(out_dir, last=(RECORDS,)) as folder:
                    ordered = (shard.videos[i] for i in range(len(shard.videos)))
                    write_latent_shard(folder, shard.split, row["shard"], ordered, meta)
            if shard.whole() or row["failed"]:
                shard.done, shard.videos = True, {}
                bar.update(1)
    return failures


# CPUs each decode task asks for: half, not one, because Ray Data fuses a map into the next one
# when their resource requests are equal and has no switch against it (ray-project/ray#54433 gives
# different requests as the way to keep two operators apart). At one CPU each, on a CPU-only
# cluster, the decoding would run inside the `concurrency` encoder actors, in series with the
# encoding, and the cluster's other CPUs would idle. The price: two decode tasks may share a CPU.
DECODE_TASK_CPUS = 0.5


def streaming_dataset(
    jobs: list[dict],
    ae_path: str,
    *,
    frames: int,
    stride: int,
    batch_size: int,
    precision: str,
    use_gpu: bool,
    concurrency: int,
) -> ray.data.Dataset:
    """The pipeline over `jobs` ({"split", "src"} per video shard): decode tasks, then the encoder
    actor pool; rows as `DecodeShard` makes them, with encoded latents in place of the frames."""
    return (
        ray.data.from_items(jobs, override_num_blocks=len(jobs))
        .flat_map(DecodeShard(frames, stride), num_cpus=DECODE_TASK_CPUS)
        .map(
            EncodeVideos,
            fn_constructor_kwargs={
                "ae_path": ae_path,
                "frames": frames,
                "batch_size": batch_size,
                "precision": precision,
            },
            compute=ray.data.ActorPoolStrategy(size=concurrency),
            num_cpus=1,
            num_gpus=1 if use_gpu else 0,
        )
    )


def _video(row: dict) -> EncodedVideo:
    info = json.loads(row["info"])
    if row["skip"]:
        return EncodedVideo(row["key"], info, None, row["skip"])
    latents = np.frombuffer(row["data"], dtype=np.float16).reshape(row["shape"])
    return EncodedVideo(row["key"], info, latents)


def _check_room(use_gpu: bool, concurrency: int) -> None:
    """On a CPU-only cluster the encoder actors hold CPUs for the whole run: leave one for the
    decode tasks, or the pipeline waits forever."""
    cpus = ray.cluster_resources().get("CPU", 0)
    if not use_gpu and concurrency > cpus - DECODE_TASK_CPUS:
        raise ValueError(
            f"cache_latents.concurrency={concurrency} CPU encoder actors leave none of the cluster's "
            f"{cpus:g} CPUs for decoding: set --set cache_latents.concurrency={max(1, int(cpus) - 1)} "
            "(or cache_latents.engine=tasks)"
        )
