"""What the latent cache buys: encode throughput, and diffusion-batch cost with and without it.

1. `cache_latents` inner loop (decode the stored mp4 + encode every window), videos/s and
   clip windows/s, at the demo size with the demo's autoencoder architecture.
2. A diffusion training batch of latents read from the cache (`latent_window_loader`)
   versus made on the fly from video shards (`video_clip_loader` + the encoder), side by side.
3. The paper-size latent: numbers per 256x256x16 clip, from a real encoder forward pass.
4. The stage's two engines on a local Ray cluster (`--ray-cpus`, default 2), same shards, same
   run, alternated (tasks, ray_data, tasks, ray_data): `cache_latents.engine: tasks` (one Ray
   task per shard) against `ray_data` (streaming decode tasks -> encoder actor pool), wall
   seconds each including Ray Data's start-up, which every stage run pays.

Weights are random: throughput does not depend on their values.

    python benchmarks/bench_cache_latents.py [--videos 32] [--batches 10] [--skip-paper] [--skip-engines]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from data_prep.chunks import plan_chunks, process_chunk
from data_prep.loader import latent_window_loader, video_clip_loader
from data_prep.sources import DATASETS
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from stages.autoencoder_file import save_autoencoder
from stages.cache_latents import encode_shard

DEMO_AE = AutoencoderConfig(hidden=16, fs=4, ft=2, norm_groups=16)  # as in pipelines/demo.yaml
RESOLUTION, FRAMES, VIDEO_FRAMES = 32, 8, 24


def build(folder: Path, videos: int) -> tuple[list[Path], list[Path], VideoAutoencoder]:
    found = DATASETS["synthetic"](
        None, ["train"], num_videos={"train": videos}, num_frames=VIDEO_FRAMES, resolution=RESOLUTION
    )
    shards = []
    for chunk in plan_chunks(found.videos, 8):
        process_chunk(chunk, folder, RESOLUTION, FRAMES, crf=18)
        shards.append(folder / f"{chunk.name}.tar")
    model = VideoAutoencoder(DEMO_AE).eval()
    save_autoencoder(folder / "ae.pt", model, 1.0, 0.0, 0)
    return shards, [folder / "latents" / s.name for s in shards], model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=32)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--skip-engines", action="store_true")
    parser.add_argument("--ray-cpus", type=int, default=2)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}; demo autoencoder {DEMO_AE.fs=} {DEMO_AE.ft=} hidden 16")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shards, latent_shards, model = build(folder, args.videos)

        started = time.perf_counter()
        for src, dst in zip(shards, latent_shards, strict=True):
            encode_shard("train", src, dst.parent, folder / "ae.pt", FRAMES, 1, 8, torch.device("cpu"))
        seconds = time.perf_counter() - started
        windows = args.videos * (VIDEO_FRAMES // FRAMES)
        print(
            f"cache_latents encode: {args.videos / seconds:.1f} videos/s, {windows / seconds:.1f} "
            f"clip windows/s ({VIDEO_FRAMES}-frame {RESOLUTION}px videos, {FRAMES}-frame windows)"
        )

        latent_frames = FRAMES // DEMO_AE.ft
        cached = _rate(
            lambda: latent_window_loader(
                [str(p) for p in latent_shards],
                frames=latent_frames,
                batch_size=args.batch_size,
                batches_per_epoch=args.batches,
            )
        )
        live = _rate(
            lambda: video_clip_loader(
                [str(p) for p in shards],
                frames=FRAMES,
                stride=1,
                batch_size=args.batch_size,
                batches_per_epoch=args.batches,
            ),
            encode=model,
        )
        print(
            f"diffusion batches of {args.batch_size} latent clips: from the cache {cached:.1f} batches/s, "
            f"decode + encode on the fly {live:.1f} batches/s -> cache is {cached / live:.1f}x faster"
        )

        if not args.skip_engines:
            compare_engines(folder, shards, args.videos, args.ray_cpus)

    if not args.skip_paper:
        paper = VideoAutoencoder(AutoencoderConfig.paper()).eval()
        with torch.no_grad():
            started = time.perf_counter()
            latent = paper.encode(torch.zeros(1, 3, 16, 256, 256)).mode()
            seconds = time.perf_counter() - started
        pixels = 3 * 16 * 256 * 256
        print(
            f"paper autoencoder: 256x256x16 clip -> latent {tuple(latent.shape[1:])} = {latent[0].numel():,} "
            f"numbers vs {pixels:,} pixel values ({pixels / latent[0].numel():.0f}x fewer); "
            f"one CPU encode {seconds:.1f} s"
        )


def compare_engines(folder: Path, shards: list[Path], videos: int, cpus: int) -> None:
    """Both `cache_latents` engines over the same shards, alternated, on one local Ray cluster."""
    import ray

    from pipelines.config import CacheLatentsSection
    from stages.cache_latents import encode_pending

    ray.init(num_cpus=cpus, log_to_driver=False)
    sources = [("train", str(s)) for s in shards]
    seconds: dict[str, list[float]] = {"tasks": [], "ray_data": []}
    outputs = {}
    for attempt in range(2):
        for engine in seconds:
            out = folder / f"{engine}-{attempt}"
            settings = CacheLatentsSection(engine=engine, batch_size=8, precision="fp32")
            started = time.perf_counter()
            failures = encode_pending(settings, sources, out, str(folder / "ae.pt"), FRAMES, 1)
            seconds[engine].append(time.perf_counter() - started)
            assert not failures, failures
            outputs[engine] = sorted((p.name, p.read_bytes()) for p in out.rglob("*") if p.is_file())
    ray.shutdown()
    each = videos // len(shards)
    print(f"cache_latents engines, {len(shards)} shards x {each} videos, Ray with {cpus} CPUs:")
    for engine, runs in seconds.items():
        rates = ", ".join(f"{s:.1f} s ({videos / s:.1f} videos/s)" for s in runs)
        print(f"    {engine:8s} {rates}")
    print(f"    outputs identical bit for bit: {outputs['tasks'] == outputs['ray_data']}")


def _rate(make_loader, encode: VideoAutoencoder | None = None) -> float:
    started = time.perf_counter()
    count = 0
    with torch.no_grad():
        for batch in make_loader():
            if encode is not None:
                encode.encode(batch).mode()
            count += 1
    return count / (time.perf_counter() - started)


if __name__ == "__main__":
    main()
