"""Shard-stage throughput (videos/s) with 1 and 2 Ray workers, side by side.

Runs the real stage (`lvdm run --until shard`) in a fresh process per setting, each with a
local Ray cluster of N CPUs, on the synthetic dataset at a size where decoding, resizing and
H.264 encoding dominate. Reports the chunk phase (the stage's own `videos_per_s`), so Ray's
start-up is not counted.

    python benchmarks/bench_shard.py [--videos 48] [--resolution 128] [--frames 48]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def shard_rate(workers: int, args: argparse.Namespace, workdir: Path) -> float:
    overrides = [
        "stages=[shard]",
        f"ray.num_cpus={workers}",
        f"data.resolution={args.resolution}",
        f"data.synthetic.videos={{train: {args.videos}}}",
        "data.splits=[train]",
        f"data.synthetic.frames={args.frames}",
        f"shard.videos_per_shard={args.per_shard}",
    ]
    cmd = [sys.executable, "-m", "pipelines.cli", "run", "--workdir", str(workdir)]
    cmd += [a for o in overrides for a in ("--set", o)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    manifest = next(workdir.glob("stages/shard-*/manifest.json"))
    return json.loads(manifest.read_text())["outputs"]["videos_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--per-shard", type=int, default=4)
    args = parser.parse_args()
    print(
        f"synthetic {args.videos} videos x {args.frames} frames at {args.resolution}px, "
        f"{args.per_shard} videos per shard"
    )
    rates = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            rates[workers] = shard_rate(workers, args, Path(folder))
        print(f"  {workers} Ray worker(s): {rates[workers]:7.2f} videos/s")
    print(f"  speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
