"""Stage `evaluate`: FVD/KVD over time, the real-vs-real floor and synthetic-motion metrics.

For every (setting, strategy) job of the `sample` stage: I3D features (Kinetics-400 logits
averaged over time, the StyleGAN-V / TATS convention) of every non-overlapping
`evaluate.window`-frame window of its long videos, FVD and KVD of each window against the real
clips of the test split — window 0 is FVD16, the rest the paper's FVD-over-time curve
(Fig. 6). Every figure sits beside the real-vs-real floor: FVD between two disjoint halves of
the real clips, the value a perfect generator would score at that N. On the synthetic
dataset the generated motion is also checked against the physics it was made from
(`data_prep.synthetic_motion`), which, unlike FVD, sees broken motion.

Real-set features are cached under the shard stage's cache key and the I3D weights' hash in
`<workdir>/cache/i3d/`,
so another evaluation of the same data does not rerun I3D on it. The work runs in one Ray
task (a GPU one with `evaluate.use_gpu`); the driver writes JSON and PNG plots and logs all
of it to MLflow.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import ExitStack

import av
import numpy as np
import ray
import torch

from data_prep import storage
from stages import tracking
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray, task_device

METRICS = "metrics.json"


def run(ctx: StageContext) -> dict:
    section = ctx.config.evaluate
    sample, shard = ctx.inputs["sample"], ctx.inputs["shard"]
    split, real_shards = real_split_of(shard)
    jobs = {
        name: [storage.join(sample["out_dir"], video) for video in record["videos"]]
        for name, record in sample["outputs"]["jobs"].items()
    }
    options = fvd_options(ctx.config, shard, split, i3d_cache(ctx.out_dir))
    print(f"[evaluate] {len(jobs)} jobs; real clips from the {split} split")
    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks("evaluate", f"evaluate.use_gpu={section.use_gpu}", {"CPU": 1, "GPU": int(section.use_gpu)})
    task = _evaluate_task.options(num_gpus=1 if section.use_gpu else 0)
    # The exact synthetic metrics (detection over every frame) are numpy on one core: they run as
    # tasks of their own beside the I3D task instead of after it in the same one.
    synthetic = ctx.config.data.dataset == "synthetic"
    fvd = task.remote(real_shards, jobs, options)
    if synthetic:
        real = _real_reference_task.remote(real_shards, section.window, section.real_clips)
        scores = {name: _synthetic_task.remote(paths, section.window, real) for name, paths in jobs.items()}
        done = {name: ray.get(ref) for name, ref in scores.items()}
        metrics = add_synthetic(ray.get(fvd), ray.get(real), done)
    else:
        metrics = ray.get(fvd)

    storage.write_json(storage.join(ctx.out_dir, METRICS), metrics)
    plots = write_plots(ctx.out_dir, metrics)
    log_metrics(ctx, metrics)
    tracking.log_artifact(ctx.tracking, storage.join(ctx.out_dir, METRICS), "evaluation")
    for plot in plots:
        tracking.log_artifact(ctx.tracking, plot, "evaluation")
    print_summary(metrics)
    outputs = {"metrics": METRICS, "plots": [storage.name(p) for p in plots], "summary": summary(metrics)}
    if synthetic and "train_pred" in ctx.inputs:
        from stages.reference_goals import check_goals, format_goals

        goals = check_goals(metrics, ctx.inputs["train_pred"]["outputs"].get("position_check"))
        print("\n".join(f"[evaluate] {line}" for line in format_goals(goals).splitlines()))
        outputs["goals"] = [dataclasses.asdict(goal) for goal in goals]
    return outputs


def fvd_options(config, shard: dict, split: str, cache: str) -> dict:
    """`evaluate_jobs`' keyword arguments from a pipeline config (its `evaluate` section), with
    the real clips' I3D statistics cached in `cache` under the shard stage's key and split."""
    section, home = config.evaluate, config.weights.home
    return {
        "window": section.window,
        "fvd_every": section.fvd_every,
        "real_clips": section.real_clips,
        "batch_size": section.batch_size,
        "i3d": str(section.i3d) if section.i3d else None,
        "i3d_sha256": section.i3d_sha256,
        "trust_i3d": section.trust_i3d,
        "home": str(home) if home else None,
        "cache": cache,
        "cache_key": f"{shard['key']}-{split}-{section.real_clips}x{section.window}",
    }


def real_split_of(shard: dict) -> tuple[str, list[str]]:
    """The real clips every evaluation compares with (FVD here, text alignment in `evaluate_t2v`):
    the shard stage's test split, or its train split for a dataset without one; and its shards."""
    listed = shard["outputs"]["shards"]
    split = next((name for name in ("test", "train") if listed.get(name)), None)
    if split is None:
        raise ValueError(
            f"the shard stage in {shard['out_dir']} lists no test or train shards: nothing real to compare "
            "with; check the dataset's splits (data.root, data.synthetic.videos) and rerun the shard stage"
        )
    return split, real_shards_of(shard, split)


def real_shards_of(shard: dict, split: str) -> list[str]:
    """The shards the shard stage's manifest lists for `split`, in order. Not a glob of its folder,
    which could also match a stray or half-uploaded object that no completion record vouches for."""
    return [storage.join(shard["out_dir"], name) for name in shard["outputs"]["shards"][split]]


@ray.remote(num_cpus=1)
def _evaluate_task(real_shards: list[str], jobs: dict[str, list[str]], options: dict) -> dict:
    device = task_device()
    return evaluate_jobs(real_shards, jobs, device=device, **options)


@ray.remote(num_cpus=1)
def _real_reference_task(real_shards: list[str], window: int, real_clips: int) -> dict:
    return real_synthetic_reference(real_shards, window, real_clips)


@ray.remote(num_cpus=1)
def _synthetic_task(paths: list[str], window: int, real: dict) -> dict:
    return synthetic_scores(paths, window, real)


def real_synthetic_reference(real_shards: str | list[str], window: int, real_clips: int) -> dict:
    """`window_curves.real_reference` of the first `real_clips` real clips: what the synthetic
    metrics of every job are read against."""
    from data_prep.video_folder import FirstClips
    from data_prep.window_curves import real_reference

    return real_reference(iter(FirstClips(real_shards, frames=window, limit=real_clips)), window=window)


def add_synthetic(metrics: dict, real: dict, scores: dict[str, dict]) -> dict:
    """The FVD metrics with the synthetic ones joined in: `real_synthetic` and each job's `synthetic`."""
    metrics["real_synthetic"] = real
    for name, job_scores in scores.items():
        metrics["jobs"][name]["synthetic"] = job_scores
    return metrics


def evaluate_jobs(
    real_shards: str | list[str],
    jobs: dict[str, list[str]],
    *,
    window: int,
    real_clips: int,
    batch_size: int,
    i3d: str | None,
    home: str | None,
    cache: str,
    cache_key: str,
    device: torch.device,
    i3d_sha256: str | None = None,
    trust_i3d: bool = False,
    fvd_every: int = 1,
) -> dict:
    """The FVD figures of the evaluation, as plain JSON-ready data (no Ray, no MLflow); the
    synthetic dataset's exact metrics join them with `add_synthetic`."""
    from data_prep.video_folder import FirstClips
    from lvdm.metrics.fvd import (
        FEATURES,
        cached_feature_set,
        i3d_features,
        i3d_weights_id,
        load_fvd_model,
        real_floor,
        windowed_fvd,
    )

    model = load_fvd_model(i3d, home=home, sha256=i3d_sha256, trust=trust_i3d).to(device).eval()
    # Statistics of one I3D must never meet another's features: the network is part of the key.
    cache_key = f"{cache_key}-i3d{i3d_weights_id(i3d, home=home)}"

    def real_features() -> np.ndarray:
        clips = FirstClips(real_shards, frames=window, limit=real_clips)
        return i3d_features(
            model, iter(clips), batch_size=batch_size, progress=True, total=clips.total, desc="I3D real"
        )

    real = cached_feature_set(cache, cache_key, real_features)
    metrics: dict = {
        "features": FEATURES,
        "window": window,
        "real_clips": real.count,
        "real_floor": real_floor(real.features) if real.count >= 4 else None,
        "jobs": {},
    }
    for name, paths in jobs.items():
        curve = windowed_fvd(
            model,
            _video_windows(paths, window),
            real,
            window=window,
            batch_size=batch_size,
            progress=True,
            every=fvd_every,
        )
        first = curve[0] if curve else None
        metrics["jobs"][name] = {"videos": len(paths), "fvd_curve": curve, "fvd16": first}
    return metrics


def synthetic_scores(paths: list[str], window: int, real: dict | None = None) -> dict:
    """Synthetic-motion metrics per window (averaged over videos) and per video; per window,
    motion and appearance with 95% bootstrap intervals over videos (`intervals`); appearance
    against the real clips' (`vs_real`, with `real` = `window_curves.real_reference`)."""
    from data_prep.decode import decode_video
    from data_prep.synthetic_motion import average_windows
    from data_prep.window_curves import ratios_to_real, video_windows, window_intervals

    reports, per_window = [], []
    for path in paths:  # one decoded video in memory at a time
        report, windows = video_windows(decode_video(path).frames, window=window)
        reports.append(report)
        per_window.append(windows)
    videos = [report.as_dict()["video"] for report in reports]
    overall = {
        key: float(np.mean([v[key] for v in videos if v[key] is not None]))
        for key in videos[0]
        if key not in ("start", "end") and any(v[key] is not None for v in videos)
    }
    scores = {"windows": average_windows(reports), "video": overall}
    scores["intervals"] = window_intervals(per_window)
    if real is not None and real["clips"]:
        scores["vs_real"] = ratios_to_real(per_window, real)
    return scores


def _video_windows(paths: list[str], window: int) -> Iterator[np.ndarray]:
    """`(n window h w c)` uint8 windows of n videos read side by side: memory stays one window."""
    with ExitStack() as files:
        containers = [av.open(files.enter_context(storage.open_input(path))) for path in paths]
        yield from _windows_of(containers, window)


def _windows_of(containers: list, window: int) -> Iterator[np.ndarray]:
    try:
        streams = [container.decode(video=0) for container in containers]
        while True:
            batch = []
            for frames in streams:
                clip = [
                    frame.to_ndarray(format="rgb24") for _, frame in zip(range(window), frames, strict=False)
                ]
                if len(clip) < window:
                    return  # a trailing partial window is dropped, as `clip_windows` does
                batch.append(np.stack(clip))
            yield np.stack(batch)
    finally:
        for container in containers:
            container.close()


def summary(metrics: dict) -> dict:
    """The headline figures per job: FVD16, mean FVD over windows, and synthetic motion."""
    rows = {}
    for name, job in metrics["jobs"].items():
        curve = job["fvd_curve"]
        row = {
            "fvd16": job["fvd16"]["fvd"] if job["fvd16"] else None,
            "kvd16": job["fvd16"]["kvd"] if job["fvd16"] else None,
            "fvd_mean_over_windows": float(np.mean([w["fvd"] for w in curve])) if curve else None,
        }
        if "synthetic" in job:
            video = job["synthetic"]["video"]
            row |= {f"synthetic_{k}": video.get(k) for k in ("objects_found", "motion_error", "colour_drift")}
            for scope, suffix in (("all_windows", ""), ("last_window", "_last_window")):
                ratios = job["synthetic"].get("vs_real", {}).get(scope, {})
                row |= {f"{k}_vs_real{suffix}": v for k, v in ratios.items()}
        rows[name] = row
    floor = metrics["real_floor"]
    return {"jobs": rows, "real_floor_fvd": floor["fvd"] if floor else None}


def log_metrics(ctx: StageContext, metrics: dict) -> None:
    floor = metrics["real_floor"]
    if floor:
        tracking.log_metrics(
            ctx.tracking, {"real_floor/fvd": floor["fvd"], "real_floor/kvd": floor["kvd"]}, 0
        )
    for name, job in metrics["jobs"].items():
        for point in job["fvd_curve"]:
            tracking.log_metrics(
                ctx.tracking, {f"{name}/fvd": point["fvd"], f"{name}/kvd": point["kvd"]}, point["start"]
            )
        for point in job.get("synthetic", {}).get("windows", []):
            values = {
                f"{name}/synthetic_{k}": v
                for k, v in point.items()
                if k not in ("start", "end") and v is not None
            }
            tracking.log_metrics(ctx.tracking, values, point["start"])
        for metric, curve in job.get("synthetic", {}).get("intervals", {}).items():
            columns = (curve[k] for k in ("start", "mean", "low", "high"))
            for start, mean, low, high in zip(*columns, strict=True):
                if mean is not None and metric not in ("objects_found", "motion_error"):  # logged above
                    tracking.log_metrics(ctx.tracking, {f"{name}/window_{metric}": mean}, start)
                if mean is not None:
                    bounds = {f"{name}/window_{metric}_low": low, f"{name}/window_{metric}_high": high}
                    tracking.log_metrics(ctx.tracking, bounds, start)


def i3d_cache(out_dir: str) -> str:
    """`<workdir>/cache/i3d`, shared by every evaluation of one dataset. For a workdir on an
    object store the statistics file is kept on this machine instead (`~/.cache/lvdm/i3d`): its
    key (the shard stage's cache key + clip rule) already names the real set exactly."""
    if storage.is_uri(out_dir):
        return str(storage.machine_folder("i3d", "LVDM_I3D_CACHE"))
    return storage.join(storage.parent(storage.parent(out_dir)), "cache", "i3d")


def write_plots(out_dir: str, metrics: dict) -> list[str]:
    """FVD over frame index (one line per job, the real-vs-real floor as a band) and, on the
    synthetic dataset, motion error and objects found over frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, job in metrics["jobs"].items():
        axis.plot(
            [w["start"] for w in job["fvd_curve"]],
            [w["fvd"] for w in job["fvd_curve"]],
            marker="o",
            label=name,
        )
    if metrics["real_floor"]:
        axis.axhspan(0, metrics["real_floor"]["fvd"], color="grey", alpha=0.25, label="real vs real")
    axis.set(xlabel="frame index (window start)", ylabel=f"FVD{metrics['window']}", title="FVD over time")
    axis.legend(fontsize=8)
    plots.append(_save(figure, storage.join(out_dir, "fvd_over_time.png")))
    synthetic = {
        name: job["synthetic"]["windows"] for name, job in metrics["jobs"].items() if "synthetic" in job
    }
    if synthetic:
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for name, windows in synthetic.items():
            starts = [w["start"] for w in windows]
            axes[0].plot(starts, [w["motion_error"] for w in windows], marker="o", label=name)
            axes[1].plot(starts, [w["objects_found"] for w in windows], marker="o", label=name)
        axes[0].set(xlabel="frame index", ylabel="motion error (px)", title="departure from the physics")
        axes[1].set(
            xlabel="frame index", ylabel="objects found / expected", title="objects kept", ylim=(0, 1.05)
        )
        axes[0].legend(fontsize=8)
        plots.append(_save(figure, storage.join(out_dir, "synthetic_motion.png")))
        from stages.window_plots import write_window_plots

        plots += write_window_plots(out_dir, metrics, _save)
    return plots


def _save(figure, path: str) -> str:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    storage.write_bytes(path, buffer.getvalue())
    return path


def print_summary(metrics: dict) -> None:
    floor = metrics["real_floor"]
    print(
        f"[evaluate] real-vs-real floor: FVD {floor['fvd']:.1f} at {floor['clips']} clips per side"
        if floor
        else ""
    )
    real = metrics.get("real_synthetic")
    if real and real["clips"]:
        means = ", ".join(f"{k} {v:.3f}" for k, v in real["means"].items() if v is not None)
        print(f"[evaluate] real clips ({real['clips']} windows): {means}")
    for name, row in summary(metrics)["jobs"].items():
        print(f"[evaluate] {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items() if v is not None))


STAGE = Stage(
    name="evaluate",
    run=run,
    sections=("evaluate",),
    # train_pred: its position check is one of the reference run's goals (stages.reference_goals).
    inputs=("sample", "shard", "train_pred"),
    description="FVD/KVD over time with the real I3D, real-vs-real floor, synthetic-motion metrics",
)
