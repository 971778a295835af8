"""Each reference goal against training steps, and what limits the shapes, from one finished run
(issue 21 item 5: "where a goal is not reached: the curve (figure vs training steps) and what
limits it").

The run's diffusion stages must have kept snapshots of their EMA weights (`train.snapshot_every`;
`pipelines/bouncing_shapes.yaml` keeps every 250 steps). At a constant learning rate (the
default `train.lr_schedule`) the networks at step S of the run are those of an S-step run. For
each step that all three stages kept, this script:
- draws with the three networks at S through the `sample` stage's code (the run's own sampling
  section, 16 videos per strategy, `--frames` long) and scores them with the `evaluate` stage's
  code against the run's real clips, I3D statistics and real-vs-real floor;
- runs train_pred's position check (`stages.train_pred.run_position_check`) on the prediction
  network at S;
- prints the ten goals of `stages.reference_goals` at S (the long-video goals over `--frames`,
  not the run's 1,024);
- and, for the shape-count goal, where it is lost: the unconditional network's first clips as
  drawn (no restoring force) and with it, each through H.264 as the sample stage stores them, beside
  the autoencoder's own reconstructions of real clips (the ceiling no diffusion network can pass).

    python benchmarks/bench_goal_curves.py --workdir W [--steps 500,1000,1500] [--frames 256]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from bench_autoencoder_ceiling import autoencoder_ceiling, decoded, first_clip_ratios
from bench_sampling_goals import measure_job, run_scorer

from data_prep import storage
from lvdm.long_video import SamplingSettings
from lvdm.long_video_steps import sample_clips
from lvdm.precision import autocast, autocast_dtype
from pipelines.config import load_pipeline
from pipelines.generate_cli import MODEL_STAGES, run_with_models
from stages.contract import read_manifest
from stages.reference_goals import check_goals
from stages.sample import load_models, model_files, plan_options
from stages.train_pred import run_position_check

NETWORKS = {"train_uncond": "unconditional", "train_pred": "prediction", "train_interp": "interpolation"}


def snapshot_files(manifests: dict) -> dict[int, dict[str, str]]:
    """step -> {network: snapshot file} for the steps all three diffusion stages kept."""
    kept = {
        stage: {
            s["step"]: storage.join(manifests[stage]["out_dir"], s["file"])
            for s in manifests[stage]["outputs"].get("snapshots", [])
        }
        for stage in NETWORKS
    }
    common = set.intersection(*(set(steps) for steps in kept.values()))
    if not common:
        raise SystemExit(
            "the run's diffusion stages kept no common snapshots: rerun them with "
            "--set train_uncond.train.snapshot_every=N (and train_pred, train_interp) in a fresh workdir"
        )
    return {step: {NETWORKS[stage]: kept[stage][step] for stage in NETWORKS} for step in sorted(common)}


def sampling_of(config) -> SamplingSettings:
    return SamplingSettings(**config.sampling.model_dump())


@torch.no_grad()
def first_clips(config, files: dict, real: dict, clips: int) -> dict:
    """The unconditional network's first clips (the run's first-clip sampler), as drawn and with
    the restoring force of `sampling.renormalise`, as appearance ratios through H.264."""
    models = load_models(files, torch.device("cpu"))
    cpu = torch.device("cpu")
    side = config.data.resolution // config.autoencoder.model.fs
    shape = (clips, models.unconditional.config.out_channels, config.train_uncond.frames, side, side)
    rows = {}
    for name, renormalise in (("as drawn", False), ("restoring force", True)):
        sampling = dataclasses.replace(sampling_of(config), renormalise=renormalise)
        generator = torch.Generator().manual_seed(0)
        with autocast(cpu, autocast_dtype(config.sample.precision, cpu)):
            latents = sample_clips(
                models.unconditional, shape, models.schedule, sampling, generator, cpu, clips
            )
        frames = decoded(models.autoencoder, latents, files["scale"], files["shift"])
        rows[name] = first_clip_ratios(frames, real, config.sample.fps, config.shard.crf)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", required=True, help="a finished run's workdir whose stages kept snapshots"
    )
    parser.add_argument("--run", help="run id (default: the newest with trained models)")
    parser.add_argument("--steps", default="", help="comma-separated steps (default: every step kept)")
    parser.add_argument(
        "--frames", type=int, default=256, help="frames per video (the run's 1,024 take 4x longer)"
    )
    parser.add_argument("--videos", type=int, default=16, help="videos per strategy (the run's N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clips", type=int, default=32, help="first clips / real clips for the shape breakdown"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    record = run_with_models(args.workdir, args.run)
    config = load_pipeline(storage.join(record.folder, "config.yaml"))
    manifests = {name: read_manifest(record.stages[name].output) for name in (*MODEL_STAGES, "shard")}
    evaluated = read_manifest(record.stages["evaluate"].output)
    files = model_files(manifests) | {"schedule": config.diffusion.schedule.model_dump()}
    plan = plan_options(config) | {"frames": args.frames}
    scheduled = [stage for stage in NETWORKS if getattr(config, stage).train.lr_schedule != "constant"]
    if scheduled:
        print(
            f"note: {', '.join(scheduled)} decayed the learning rate (train.lr_schedule), so a snapshot "
            "at step S is not the network of an S-step run",
            flush=True,
        )
    snapshots = snapshot_files(manifests)
    wanted = [int(s) for s in args.steps.split(",") if s] or list(snapshots)
    missing = sorted(set(wanted) - set(snapshots))
    if missing:
        raise SystemExit(f"--steps {missing}: not kept; the run kept {list(snapshots)}")

    scorer, real_synthetic, floor = run_scorer(config, manifests, evaluated)
    autoencoder = load_models(files, torch.device("cpu")).autoencoder
    real, ceiling = autoencoder_ceiling(config, autoencoder, files["scale"], files["shift"], args.clips)
    print(json.dumps({"autoencoder reconstructions / real": ceiling}), flush=True)
    pred_outputs = manifests["train_pred"]["outputs"]
    rows = []
    for step in wanted:
        at_step = files | snapshots[step]
        jobs = {
            f"default-{strategy}": measure_job(
                strategy, sampling_of(config), args.seed, args, config, at_step, plan, scorer
            )
            for strategy in ("autoregressive", "hierarchical")
        }
        metrics = {"jobs": jobs, "real_synthetic": real_synthetic, "real_floor": {"fvd": floor}}
        position = run_position_check(config, at_step["prediction"], at_step["unconditional"], pred_outputs)
        goals = check_goals(metrics, position)
        clips = first_clips(config, at_step, real, args.clips)
        row = {"step": step, "goals": {g.name.split(" (")[0]: g.value for g in goals}, "first clips": clips}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_tables(rows, ceiling, goals)


def print_tables(rows: list[dict], ceiling: dict, goals: list) -> None:
    names = list(rows[0]["goals"])
    print("\nGoals against training steps (targets last):")
    for index, name in enumerate(names):
        print(f"  [{index}] {name}: {goals[index].target}")
    print(f"{'step':>6} " + " ".join(f"{f'[{i}]':>6}" for i in range(len(names))))
    for row in rows:
        values = " ".join("   n/a" if row["goals"][n] is None else f"{row['goals'][n]:>6.2f}" for n in names)
        print(f"{row['step']:>6} {values}")
    print("\nShape count / on-palette fraction of first clips, through H.264, ratio to real:")
    label = "autoencoder reconstructions (ceiling)"
    print(f"{label:<40} {ceiling['shape_count']:>6.2f} {ceiling['on_palette']:>6.2f}")
    for row in rows:
        for name, ratios in row["first clips"].items():
            label = f"step {row['step']}, {name}"
            print(f"{label:<40} {ratios['shape_count']:>6.2f} {ratios['on_palette']:>6.2f}")


if __name__ == "__main__":
    main()
