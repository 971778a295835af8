"""The exact synthetic metrics on clips whose answer is known: what "like the data" reads as.

    python benchmarks/bench_exact_metrics.py [--videos 16] [--frames 64] [--resolution 32]
    python benchmarks/bench_exact_metrics.py --video FILE.mp4 [--every 128]

Videos of the synthetic source through H.264 (as the shard stage stores them), scored as the
evaluate stage scores generated videos, against real 16-frame clips of the other split:
- `real`: the test split's own videos (the ratios a perfect generator would get at this N);
- `shuffled`: the same frames in a random order (motion broken, appearance kept);
- `noise`: uniform noise; `collapsed`: real for the first window, noise afterwards (the
  1,024-frame failure of issue 21);
- `blobs`: every shape drawn at twice its size (the small models' samples).
Per set: appearance and motion error / real over all windows and in the last one, and the 95%
bootstrap interval of the last window's coverage. Then the position check's baselines on the
same clips (given 2 frames): still frame and true continuation, pixels at +4/+8/+16.
`--video`: instead, one generated video's coverage and shapes per frame in the 16-frame window
starting every `--every` frames (does a 1,024-frame video hold to the end?), beside real clips'.
A script, not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a plain checkout

from data_prep.decode import decode_video  # noqa: E402
from data_prep.encode import encode_mp4  # noqa: E402
from data_prep.position_check import (  # noqa: E402
    pool_position_errors,
    position_errors,
    still_frame,
    true_continuation,
)
from data_prep.sources import synthetic  # noqa: E402
from data_prep.window_curves import COMPARED, ratios_to_real, real_reference, video_windows, window_intervals  # noqa: E402


def coded(frames: np.ndarray) -> np.ndarray:
    return decode_video(encode_mp4(frames)).frames


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--video", help="score this one video's windows instead (an mp4)")
    parser.add_argument("--every", type=int, default=128, help="--video: a window every N frames")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.video:
        print_video_windows(args.video, args.every, args.videos, args.resolution)
        return

    def source(split: str, frames: int, scale: float = 1.0) -> list[tuple[dict, np.ndarray]]:
        found = synthetic.discover(
            None, [split], num_videos=args.videos, num_frames=frames, resolution=args.resolution
        )
        out = []
        for video in found.videos:
            meta = video.meta
            if scale != 1.0:
                meta = {
                    **meta,
                    "shapes": [{**s, "half_size": s["half_size"] * scale} for s in meta["shapes"]],
                }
            out.append((video.meta, coded(synthetic.render(meta))))
        return out

    real = real_reference((f[:16] for _, f in source("train", 16)), window=16)
    means = ", ".join(f"{k} {real['means'][k]:.3f}" for k in COMPARED)
    print(f"real reference: {real['clips']} train clips of 16 frames, {args.resolution} px: {means}")
    rng = np.random.default_rng(0)
    test = source("test", args.frames)
    sets = {
        "real": [f for _, f in test],
        "shuffled": [f[rng.permutation(len(f))] for _, f in test],
        "noise": [rng.integers(0, 256, f.shape, dtype=np.uint8) for _, f in test],
        "collapsed": [
            np.concatenate([f[:16], rng.integers(0, 256, f[16:].shape, dtype=np.uint8)]) for _, f in test
        ],
        "blobs": [f for _, f in source("test", args.frames, scale=2.0)],
    }
    header = f"{'set':10} {'scope':12} " + " ".join(f"{k:>13}" for k in COMPARED)
    print(header)
    for name, videos in sets.items():
        windows = [video_windows(v, window=16)[1] for v in videos]
        ratios = ratios_to_real(windows, real)
        for scope in ("all_windows", "last_window"):
            cells = " ".join(
                f"{ratios[scope][k]:13.2f}" if ratios[scope][k] is not None else f"{'-':>13}"
                for k in COMPARED
            )
            print(f"{name:10} {scope:12} {cells}")
        coverage = window_intervals(windows)["coverage"]
        print(
            f"{'':10} coverage of the last window: {coverage['mean'][-1]:.3f} "
            f"[{coverage['low'][-1]:.3f}, {coverage['high'][-1]:.3f}] (95%, {coverage['videos'][-1]} videos)"
        )

    given = 2
    rows = {
        "still_frame": [position_errors(still_frame(f[:given], 17), m, given) for m, f in test],
        "true_continuation": [position_errors(true_continuation(m, given, 17), m, given) for m, _ in test],
        "decoded_clip": [position_errors(f[given : given + 17], m, given) for m, f in test],
    }
    print("position error, pixels (found), given 2 frames:")
    for name, results in rows.items():
        pooled = pool_position_errors(results)
        cells = ", ".join(
            f"{k} {v['error']:.2f} ({v['found']:.0%}, {v['shapes']} shapes)" for k, v in pooled.items()
        )
        print(f"  {name:18} {cells}")
    print(f"{time.perf_counter() - started:.1f} s")


def print_video_windows(path: str, every: int, videos: int, resolution: int) -> None:
    from data_prep.appearance import appearance

    found = synthetic.discover(None, ["test"], num_videos=videos, num_frames=16, resolution=resolution)
    real = [appearance(coded(synthetic.render(v.meta))[:16]) for v in found.videos]
    print(
        f"real ({len(real)} test clips, 16 frames): coverage {np.mean([r['coverage'] for r in real]):.3f}, "
        f"shapes per frame {np.mean([r['shape_count'] for r in real]):.2f}"
    )
    frames = decode_video(Path(path).read_bytes()).frames
    starts = list(range(0, len(frames) - 15, every))
    for start in starts + ([len(frames) - 16] if starts and starts[-1] != len(frames) - 16 else []):
        scores = appearance(frames[start : start + 16])
        print(
            f"frames {start}-{start + 15}: coverage {scores['coverage']:.3f}, "
            f"shapes per frame {scores['shape_count']:.2f}"
        )


if __name__ == "__main__":
    main()
