"""The reference run's sample goals under other sampling settings, without rerunning it: a
finished run's own networks, its `sample` stage code and its `evaluate` scoring, at a shorter
length (issue 21).

Sampling is not part of any training cache key, so the sampler, its steps and the restoring
force of `sampling.renormalise` can be chosen after training; this script measures each choice
on the figures the reference run's goals read (`stages.reference_goals.check_goals`): the
default setting's autoregressive videos for the first 16-frame window (appearance against real
clips, FVD16 against the run's own real-vs-real floor and cached I3D statistics), its
hierarchical videos for every window to `--frames` (objects kept, motion error, coverage, frame
change). With `--position`, also train_pred's position check (`stages.train_pred.
run_position_check`, the run's prediction network on its held-out clips) under each set of
overrides, and its goal (+8 frames, lost shapes counted, against a still frame); the
`--variants` do not apply to it (it samples as the overridden `sampling` section says).

    python benchmarks/bench_sampling_goals.py --workdir W --sampling '|sampler=dpmpp,steps=8' --seeds 0,1

`--sampling`: sets of overrides of the run's `sampling` section separated by '|' (empty = as the
run sampled). `--variants`: what `sampling.renormalise` does with the first clip:
- `off`: no restoring force at all (the paper);
- `pooled`: the first clip put at mean 0 / std 1 per channel, pooled over the videos drawn together;
- `as_sampled`: the first clip as the unconditional network drew it; later chunks held at it.
FVD at N=16 moves by tens of per cent between seeds: compare over `--seeds`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from data_prep import storage
from lvdm.long_video import SamplingSettings
from lvdm.long_video_steps import sample_clips
from lvdm.precision import autocast, autocast_dtype
from pipelines.config import load_pipeline
from pipelines.generate_cli import MODEL_STAGES, run_with_models
from stages.contract import read_manifest
from stages.evaluate import (
    evaluate_jobs,
    fvd_options,
    i3d_cache,
    real_split_of,
    real_synthetic_reference,
    synthetic_scores,
)
from stages.reference_goals import check_goals
from stages.sample import load_models, model_files, plan_options, sample_job
from stages.train_pred import run_position_check

VARIANTS = ("off", "pooled", "as_sampled")


def settings_of(base: dict, variant: str) -> SamplingSettings:
    if variant not in VARIANTS:
        raise SystemExit(f"--variants: unknown {variant!r}; pick from {', '.join(VARIANTS)}")
    if variant == "off":
        return SamplingSettings(**base | {"renormalise": False})
    return SamplingSettings(**base | {"renormalise": True, "renormalise_first_clip": variant})


def config_with(config_file: str, overrides: str):
    """The run's config with 'sampler=dpmpp,steps=8' applied as `--set sampling.…` would apply
    them: parsed as YAML and validated, so a misspelt key or value is refused."""
    sets = [f"sampling.{item}" for item in filter(None, overrides.split(","))]
    return load_pipeline(config_file, sets)


def sampling_with(config_file: str, overrides: str) -> dict:
    """The run's `sampling` section with the overrides applied (`config_with`)."""
    return config_with(config_file, overrides).sampling.model_dump()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a finished run's workdir (with evaluate done)")
    parser.add_argument("--run", help="run id (default: the newest with trained models)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds")
    parser.add_argument("--videos", type=int, default=16, help="videos per variant and seed (the run's N)")
    parser.add_argument(
        "--frames", type=int, default=256, help="frames per video (the run's 1,024 take 4x longer)"
    )
    parser.add_argument(
        "--sampling",
        default="",
        help="overrides of the run's sampling section, e.g. 'sampler=dpmpp,steps=8' ('|' between sets)",
    )
    parser.add_argument(
        "--dispersion",
        help="instead: the run's unconditional network's clips under each '|'-separated set of overrides "
        "(32 clips, no restoring force): per-channel mean and std, the data's being 0 and 1",
    )
    parser.add_argument(
        "--position", action="store_true", help="also train_pred's position check under each set"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    record = run_with_models(args.workdir, args.run)
    config_file = storage.join(record.folder, "config.yaml")
    config = load_pipeline(config_file)
    manifests = {name: read_manifest(record.stages[name].output) for name in (*MODEL_STAGES, "shard")}
    evaluated = read_manifest(record.stages["evaluate"].output)
    files = model_files(manifests) | {"schedule": config.diffusion.schedule.model_dump()}
    plan = plan_options(config) | {"frames": args.frames}
    if args.dispersion is not None:
        print_dispersion(config, config_file, files, args.dispersion.split("|"))
        return
    scorer, real, floor = run_scorer(config, manifests, evaluated)
    rows = []
    runs = [
        (overrides, variant, seed)
        for overrides in args.sampling.split("|")
        for variant in args.variants.split(",")
        for seed in (int(s) for s in args.seeds.split(","))
    ]
    positions: dict[str, dict] = {}
    for overrides, variant, seed in runs:
        sampling = settings_of(sampling_with(config_file, overrides), variant)
        jobs = {}
        for strategy in ("autoregressive", "hierarchical"):
            jobs[f"default-{strategy}"] = measure_job(
                strategy, sampling, seed, args, config, files, plan, scorer
            )
        metrics = {"jobs": jobs, "real_synthetic": real, "real_floor": {"fvd": floor}}
        # The check samples as the overrides say: neither the variant nor the seed changes it.
        if args.position and overrides not in positions:
            positions[overrides] = positions_under(config_file, overrides, files, manifests)
        position = positions.get(overrides)
        goals = [
            goal
            for goal in check_goals(metrics, position)
            if position is not None or not goal.name.startswith("position")
        ]
        row = {"sampling": overrides or "run's", "variant": variant, "seed": seed} | {
            goal.name.split(" (")[0]: goal.value for goal in goals
        }
        if position is not None:
            row["position px (found) +4/+8/+16"] = {
                name: [(scores[k]["error"], scores[k]["found"]) for k in ("+4", "+8", "+16")]
                for name, scores in position.items()
                if name in ("prediction", "prediction_no_perturbation", "still_frame")
            }
        # What the sampler itself draws (data: 1): with `off`, the networks' own dispersion.
        first_std = jobs["default-autoregressive"]["latent_std_first_window"]
        row["latent std, frames 0-15 (autoregressive)"] = first_std
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows)


def positions_under(config_file: str, overrides: str, files: dict, manifests: dict) -> dict:
    """train_pred's position check of the run's networks, sampled as the overridden section says."""
    outputs = manifests["train_pred"]["outputs"]
    return run_position_check(
        config_with(config_file, overrides), files["prediction"], files["unconditional"], outputs
    )


def run_scorer(config, manifests: dict, evaluated: dict):
    """`scorer(paths, first_window_fvd)`: the evaluate stage's scores of a finished run's sample
    files (exact metrics against the run's real clips; FVD16 of the first window against its
    cached I3D statistics), with the real statistics and the run's real-vs-real FVD floor."""
    split, real_shards = real_split_of(manifests["shard"])
    section = config.evaluate
    floor = json.loads(Path(evaluated["out_dir"], "metrics.json").read_text())["real_floor"]["fvd"]
    real = real_synthetic_reference(real_shards, section.window, section.real_clips)
    print(f"real-vs-real FVD16 floor (the evaluate stage's): {floor:.1f}", flush=True)

    def scorer(paths: list[str], first_window_fvd: bool) -> dict:
        scores = {"synthetic": synthetic_scores(paths, section.window, real)}
        if first_window_fvd:
            options = fvd_options(config, manifests["shard"], split, i3d_cache(evaluated["out_dir"]))
            options["fvd_every"] = 10**6  # the first window only
            fvd = evaluate_jobs(real_shards, {"job": paths}, device=torch.device("cpu"), **options)
            scores["fvd16"] = fvd["jobs"]["job"]["fvd16"]
        return scores

    return scorer, real, floor


def print_dispersion(
    config, config_file: str, files: dict, override_sets: list[str], clips: int = 32
) -> None:
    """How far the sampler alone shrinks the unconditional network's clips (pooled over clips)."""
    models = load_models(files, torch.device("cpu"))
    side = config.data.resolution // config.autoencoder.model.fs
    shape = (clips, models.unconditional.config.out_channels, config.train_uncond.frames, side, side)
    cpu = torch.device("cpu")
    for overrides in override_sets:
        sampling = settings_of(sampling_with(config_file, overrides), "off")
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad(), autocast(cpu, autocast_dtype(config.sample.precision, cpu)):
            clip = sample_clips(models.unconditional, shape, models.schedule, sampling, generator, cpu, clips)
        mean, std = (f(clip.float(), dim=(0, 2, 3, 4)).tolist() for f in (torch.mean, torch.std))
        print(
            f"{overrides or 'as the run sampled':<32} mean {' '.join(f'{m:+.2f}' for m in mean)}"
            f"   std {' '.join(f'{v:.3f}' for v in std)}",
            flush=True,
        )


def measure_job(strategy, sampling, seed, args, config, files, plan, scorer) -> dict:
    """One job of the `sample` stage at the bench's length, scored as `evaluate` scores it."""
    with tempfile.TemporaryDirectory() as folder:
        job = sample_job(
            Path(folder),
            "default",
            strategy,
            sampling,
            plan,
            files,
            videos=args.videos,
            resolution=config.data.resolution,
            fps=config.sample.fps,
            columns=16,
            seed=seed,
            device=torch.device("cpu"),
            precision=config.sample.precision,
        )
        paths = [str(Path(folder, video)) for video in job["videos"]]
        scores = scorer(paths, first_window_fvd=strategy == "autoregressive")
        first = job["latent_stats"][0]["std"]  # pooled over the videos, per channel
        return scores | {"latent_std_first_window": sum(first) / len(first)}


def print_table(rows: list[dict]) -> None:
    labels = ("sampling", "variant", "seed")
    names = [key for key, value in rows[0].items() if key not in labels and not isinstance(value, dict)]
    print()
    for index, name in enumerate(names):
        print(f"  [{index}] {name}")
    print(
        f"{'sampling':<26} {'variant':<11} {'seed':>4} "
        + " ".join(f"{f'[{i}]':>6}" for i in range(len(names)))
    )
    for row in rows:
        values = " ".join("   n/a" if row[n] is None else f"{row[n]:>6.2f}" for n in names)
        print(f"{row['sampling']:<26} {row['variant']:<11} {row['seed']:>4} {values}")


if __name__ == "__main__":
    main()
