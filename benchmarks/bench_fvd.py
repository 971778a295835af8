"""FVD feature throughput: I3D clips/s on 16x224x224 clips resized from small stored frames.

    python benchmarks/bench_fvd.py [--batches 1 8] [--repeats 2] [--source-size 64] [--device cpu]

What the evaluate stage and `lvdm fvd` pay per clip, split into its two parts:
1. resize: uint8 `(b t h w c)` at `--source-size` -> `(b 3 t 224 224)` in [-1, 1] (`preprocess_for_i3d`);
2. I3D: the forward to the 400 time-averaged logits;
and end to end through `i3d_features` (per-clip preprocessing, batching, float64 copy back).
Also the distances: FVD + KVD on 2,048 x 400 features (the paper's N), which do not depend on the
device. Real weights when `lvdm weights fetch` has run, else random ones (same cost). A script,
not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout

from lvdm.metrics.fvd import fvd_kvd, i3d_features, preprocess_for_i3d  # noqa: E402
from lvdm.metrics.i3d import InceptionI3d, load_i3d  # noqa: E402
from lvdm.pretrained.cache import MissingWeightsError  # noqa: E402

FRAMES = 16


def seconds_per_call(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up: allocator, kernel selection (cuDNN / oneDNN)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - start) / repeats


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_features(batches: list[int], repeats: int, source_size: int, device: torch.device) -> None:
    try:
        model, weights = load_i3d(), "Kinetics-400"
    except MissingWeightsError:
        model, weights = InceptionI3d().eval().requires_grad_(False), "random"
    model = model.to(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu, {torch.get_num_threads()} threads"
    )
    print(
        f"I3D ({weights} weights) on {name}: {FRAMES}x{source_size}x{source_size} uint8 -> {FRAMES}x224x224"
    )
    print(
        f"  {'batch':>5}  {'resize ms/clip':>14}  {'I3D ms/clip':>11}  {'resize share':>12}  "
        f"{'end-to-end clips/s':>18}"
    )
    rng = np.random.default_rng(0)
    for b in batches:
        clips = rng.integers(0, 256, (b, FRAMES, source_size, source_size, 3), dtype=np.uint8)
        on_device = torch.from_numpy(clips).to(device)
        with torch.inference_mode():
            resized = preprocess_for_i3d(on_device)
            resize_s = seconds_per_call(lambda x=on_device: preprocess_for_i3d(x), repeats, device)
            i3d_s = seconds_per_call(lambda x=resized: model(x), repeats, device)
            total_s = seconds_per_call(
                lambda c=clips, b=b: i3d_features(model, c, batch_size=b), repeats, device
            )
        print(
            f"  {b:>5}  {1e3 * resize_s / b:>14.2f}  {1e3 * i3d_s / b:>11.1f}  "
            f"{resize_s / (resize_s + i3d_s):>11.1%}  {b / total_s:>18.2f}"
        )


def bench_distances(n: int = 2048, d: int = 400) -> None:
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(n, d)), rng.normal(0.1, 1.0, size=(n, d))
    start = time.perf_counter()
    fvd_kvd(real, fake)
    print(f"FVD + KVD on {n} x {d} features per side (float64): {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--source-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench_features(args.batches, args.repeats, args.source_size, torch.device(args.device))
    bench_distances()


if __name__ == "__main__":
    main()
