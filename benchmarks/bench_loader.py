"""Loader throughput: clips/s from WebDataset shards versus decoding the raw video files.

Builds a temporary set of synthetic mp4 videos on disk, writes them into shards, then
times `video_clip_loader` over the shards against the direct route (`decode_video` per
file + the same strided clip sampling + the same [-1, 1] conversion), and prints both side
by side with their ratio. A script, not a test:

    python benchmarks/bench_loader.py [--videos 64 --size 64 --length 32 --frames 16 --stride 2
                                       --num-workers 0 --repeats 3]

Both routes decode only the clip's frames, so on local disk they are decode-bound and close;
shards pay off where opening many small files is slow (network storage, object stores).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout

from data_prep.clip_sampling import frames_to_model_range, strided_clip_indices  # noqa: E402
from data_prep.decode import available_backends, decode_video  # noqa: E402
from data_prep.encode import write_mp4  # noqa: E402
from data_prep.loader import video_clip_loader  # noqa: E402
from data_prep.shard_writer import write_shard  # noqa: E402


def make_videos(folder: Path, count: int, size: int, length: int, seed: int) -> list[Path]:
    """Moving noise textures: enough detail that H.264 has real work, unlike flat colour."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        texture = rng.integers(0, 256, (size * 2, size * 2, 3), dtype=np.uint8)
        frames = np.stack([np.roll(texture, (t, 2 * t), axis=(0, 1))[:size, :size] for t in range(length)])
        paths.append(write_mp4(folder / f"video_{index:04d}.mp4", frames, fps=8.0))
    return paths


def make_shards(paths: list[Path], folder: Path, per_shard: int, length: int, size: int) -> list[Path]:
    shards = []
    for start in range(0, len(paths), per_shard):
        samples = [
            {
                "__key__": path.stem,
                "mp4": path.read_bytes(),
                "json": {"key": path.stem, "split": "train", "source_path": str(path), "fps": 8.0,
                         "num_frames": length, "height": size, "width": size},
            }
            for path in paths[start : start + per_shard]
        ]  # fmt: skip
        shards.append(folder / f"train-{len(shards):06d}.tar")
        write_shard(shards[-1], samples)
    return shards


def time_shard_loader(shards: list[Path], args: argparse.Namespace) -> float:
    loader = video_clip_loader(
        shards,
        frames=args.frames,
        stride=args.stride,
        batch_size=args.batch_size,
        batches_per_epoch=args.batches,
        num_workers=args.num_workers,
    )
    start = time.perf_counter()
    clips = sum(batch.shape[0] for batch in loader)
    return clips / (time.perf_counter() - start)


class RawFileClips(IterableDataset):
    """The route without shards: pick a file, decode the strided clip from it, batch."""

    def __init__(self, paths: list[Path], args: argparse.Namespace) -> None:
        self.paths, self.args = paths, args

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rng = np.random.default_rng([0, worker])
        for _ in range(worker, self.args.batches, workers):
            batch = []
            for path in rng.choice(self.paths, size=self.args.batch_size):
                indices = strided_clip_indices(self.args.length, self.args.frames, self.args.stride, rng)
                batch.append(frames_to_model_range(decode_video(path, indices).frames))
            yield torch.from_numpy(np.stack(batch))


def time_raw_files(paths: list[Path], args: argparse.Namespace) -> float:
    loader = DataLoader(RawFileClips(paths, args), batch_size=None, num_workers=args.num_workers)
    start = time.perf_counter()
    clips = sum(batch.shape[0] for batch in loader)
    return clips / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="frame height and width")
    parser.add_argument("--length", type=int, default=32, help="frames per video")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--stride", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=32)
    parser.add_argument("--per-shard", type=int, default=8, help="videos per shard")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (both routes)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating timed runs; the median is shown")
    args = parser.parse_args()

    print("command:", shlex.join([sys.executable, *sys.argv]))
    print("settings:", vars(args), "| decoder backends:", available_backends(), "| torch threads:",
          torch.get_num_threads())  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        raw, shard_dir = Path(tmp, "raw"), Path(tmp, "shards")
        paths = make_videos(raw, args.videos, args.size, args.length, seed=0)
        shards = make_shards(paths, shard_dir, args.per_shard, args.length, args.size)
        time_shard_loader(shards[:1], argparse.Namespace(**{**vars(args), "batches": 1}))  # warm-up
        shard_rates, raw_rates = [], []
        for _ in range(args.repeats):  # alternate, so a busy machine slows both routes alike
            shard_rates.append(time_shard_loader(shards, args))
            raw_rates.append(time_raw_files(paths, args))
    shard_rate, raw_rate = float(np.median(shard_rates)), float(np.median(raw_rates))

    clips = args.batches * args.batch_size
    print(f"\n{'route':<34}{'clips/s':>10}   (median of {args.repeats} runs of {clips} clips)")
    print(f"{'shards (video_clip_loader)':<34}{shard_rate:>10.1f}")
    print(f"{'raw files (decode_video per file)':<34}{raw_rate:>10.1f}")
    print(f"{'ratio shards / raw':<34}{shard_rate / raw_rate:>10.2f}")


if __name__ == "__main__":
    main()
