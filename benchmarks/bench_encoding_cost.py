"""What H.264 costs the shape count, on the data and on a run's samples (issue 21).

Every clip the pipeline trains on went through H.264 once (the shard stage stores mp4, yuv420p,
`shard.crf`), and every sample it scores went through it again (the sample stage's mp4s). A
32-pixel frame holds shapes a few pixels wide, and yuv420p keeps one chroma sample per 2×2
pixels, so the encoding itself moves the exact appearance statistics. This script draws the
run's unconditional network's first clips (its first-clip sampler, no restoring force), decodes
them, and scores them (`data_prep.appearance`) raw and through H.264 at each `--crfs`, against
the same held-out videos rendered raw and as the shards store them:

    python benchmarks/bench_encoding_cost.py --workdir W [--run RUN] [--clips 32] [--crfs 0,10,18,23]

It also prints what the shards' encoding does to the real clips themselves (shards against raw
renders), the floor every ratio to "real" stands on.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from bench_autoencoder_ceiling import decoded, through_h264

from data_prep import storage
from data_prep.appearance import appearance, appearance_ratios, mean_appearance
from data_prep.sources.synthetic import render
from lvdm.long_video import SamplingSettings
from lvdm.long_video_steps import sample_clips
from lvdm.precision import autocast, autocast_dtype
from pipelines.config import load_pipeline
from pipelines.generate_cli import MODEL_STAGES, run_with_models
from stages.contract import read_manifest
from stages.position_check import heldout_clips
from stages.sample import load_models, model_files

SHOWN = ("shape_count", "on_palette", "coverage")


def mean_of(clips) -> dict:
    return mean_appearance([appearance(clip) for clip in clips])


def ratios(clips, real: dict) -> str:
    values = appearance_ratios(mean_of(clips), real)
    return "  ".join(f"{name} {values[name]:.3f}" for name in SHOWN)


@torch.no_grad()
def first_clips(config, files: dict, count: int) -> np.ndarray:
    """`b t h w c` uint8: the unconditional network's first clips as drawn, decoded."""
    cpu = torch.device("cpu")
    models = load_models(files, cpu)
    side = config.data.resolution // config.autoencoder.model.fs
    shape = (count, models.unconditional.config.out_channels, config.train_uncond.frames, side, side)
    sampling = dataclasses.replace(SamplingSettings(**config.sampling.model_dump()), renormalise=False)
    with autocast(cpu, autocast_dtype(config.sample.precision, cpu)):
        generator = torch.Generator().manual_seed(0)
        latents = sample_clips(models.unconditional, shape, models.schedule, sampling, generator, cpu, count)
    return decoded(models.autoencoder, latents, files["scale"], files["shift"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a run's workdir with its diffusion stages done")
    parser.add_argument("--run", help="run id (default: the newest with trained models)")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--crfs", default="0,10,18,23", help="H.264 qualities to store the samples at")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    record = run_with_models(args.workdir, args.run)
    config = load_pipeline(storage.join(record.folder, "config.yaml"))
    manifests = {name: read_manifest(record.stages[name].output) for name in MODEL_STAGES}
    files = model_files(manifests) | {"schedule": config.diffusion.schedule.model_dump()}
    frames, fps, crf = config.data.frames, config.sample.fps, config.shard.crf

    held_out = heldout_clips(config.data, args.clips, crf)  # rendered, then as the shards store them
    shards = np.stack([video[:frames] for _, video in held_out])
    raw = np.stack([render(meta)[:frames] for meta, _ in held_out])
    real = {"raw renders": mean_of(raw), f"the shards (crf {crf})": mean_of(shards)}
    print(f"the shards' real clips / raw renders: {ratios(shards, real['raw renders'])}")

    fake = first_clips(config, files, args.clips)
    print(f"\n{args.clips} first clips of the unconditional network, ratio to real:")
    stored = {"raw": fake} | {
        f"H.264 crf {c}": np.stack([through_h264(clip, fps, int(c)) for clip in fake])
        for c in args.crfs.split(",")
    }
    for name, clips in stored.items():
        for against, means in real.items():
            print(f"  samples {name:<13} / real {against:<18} {ratios(clips, means)}")


if __name__ == "__main__":
    main()
