"""Text alignment of a finished text-to-video run's model against its guidance scale (issue 18).

Classifier-free guidance is a sampling setting: one trained model, sampled at several scales,
shows what the scale buys without retraining. For each `--scales` value this samples the run's
`train_t2v` model as `sample_t2v` does (`generate_videos`: the run's sampler, `--videos` videos
per prompt of its `sample.prompts`, seeded by `--seed`), passes every video through H.264 as
the stage stores it, and scores it as `evaluate_t2v` does (`data_prep.text_alignment`).
`--sampling` overrides sampling fields (JSON) to ask the same of the sampler.

    W=workdir of `lvdm run pipelines/bouncing_shapes_t2v.yaml`
    python benchmarks/bench_t2v_guidance.py --workdir W --scales 3,5,7,9,12
    python benchmarks/bench_t2v_guidance.py --workdir W --scales 7 --sampling '{"steps": 50}'
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
from bench_text_control import score, stage_manifest

from pipelines.config import load_pipeline
from stages.t2v_model import TextVideoModel


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, required=True, help="a finished text-to-video run's workdir")
    parser.add_argument("--scales", default="3,5,7,9,12", help="guidance scales, comma-separated")
    parser.add_argument("--videos", type=int, default=8, help="per prompt")
    parser.add_argument("--seed", type=int, help="default: the run's sample.seed")
    parser.add_argument("--sampling", default="{}", help="JSON of sampling fields to override")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = sorted((args.workdir / "runs").iterdir())
    if not runs:
        raise SystemExit(f"no run under {args.workdir}/runs: run the pipeline first")
    config = load_pipeline(runs[-1] / "config.yaml")
    model = TextVideoModel.load(stage_manifest(args.workdir, "train_t2v"), torch.device("cpu"))
    sampling = config.sampling.model_dump() | json.loads(args.sampling)
    prompts = list(config.sample.prompts)
    seed = config.sample.seed if args.seed is None else args.seed
    print(
        f"run {runs[-1].name}: {len(prompts)} prompts x {args.videos} videos, seed {seed}, "
        f"sampling {sampling}"
    )
    print("| guidance scale | colour | shape | direction |\n|---|---|---|---|")
    for scale in (float(s) for s in args.scales.split(",")):
        with tempfile.TemporaryDirectory() as scratch:
            figures = score(
                model,
                prompts,
                config,
                args.videos,
                Path(scratch),
                seed=seed,
                sampling=sampling,
                guidance_scale=scale,
            )
        print(
            f"| {scale:g} | "
            + " | ".join(f"{figures[k]:.2f}" for k in ("colour", "shape", "direction"))
            + " |"
        )


if __name__ == "__main__":
    main()
