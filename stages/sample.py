"""Stage `sample`: long videos from the three trained models (LVDM §3.3), or from one shared
network (`train_pred.roles`), as H.264 mp4 files and contact sheets.

One Ray task per (sampling setting, strategy): it loads the EMA networks and the autoencoder,
generates `sample.videos` videos of `sample.frames` frames with `lvdm.long_video` (latents
decoded in overlapped windows and streamed to the mp4 writers, so memory does not grow with
length), and writes a contact sheet — a grid of frames at evenly spaced steps, one row per
video, like the paper's Fig. 2/5. Each task writes its files under temporary names, then a
record; a rerun redoes only the jobs without one.

Settings are the paper's Fig. 7 ablation of conditional latent perturbation (s) and
unconditional guidance (w): `default` uses the `sampling` section's s and w.
"""

from __future__ import annotations

import dataclasses
import io
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import ray
import torch
from PIL import Image

from data_prep import storage
from data_prep.chunks import RECORDS, is_complete, read_record, record_path
from data_prep.encode import write_mp4_streams
from lvdm.long_video import LongVideoModels, LongVideoPlan, SamplingSettings, key_count
from lvdm.precision import autocast, autocast_dtype
from stages import tracking
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray, task_device, wait_all

STATS_WINDOW_FRAMES = 16  # the FVD16 window: latent statistics per window of this many frames


def sampling_settings(sampling: dict, names: Iterable[str]) -> dict[str, SamplingSettings]:
    """Each named setting of the ablation as the sampler options it means."""
    base = SamplingSettings(**sampling)
    variants = {
        "default": base,
        "no_perturbation": dataclasses.replace(base, noise_level=0),
        "no_guidance": dataclasses.replace(base, guidance_weight=0.0),
        "neither": dataclasses.replace(base, noise_level=0, guidance_weight=0.0),
    }
    return {name: variants[name] for name in names}


def run(ctx: StageContext) -> dict:
    section, data = ctx.config.sample, ctx.config.data
    files = model_files(ctx.inputs) | {"schedule": ctx.config.diffusion.schedule.model_dump()}
    settings = sampling_settings(ctx.config.sampling.model_dump(), section.settings)
    jobs = [(name, strategy) for name in settings for strategy in section.strategies]
    pending = [job for job in jobs if not is_complete(ctx.out_dir, job_name(*job))]
    plan = plan_options(ctx.config)
    # Longest first: the jobs differ up to 2.5x in cost, and a long one started last ran alone
    # on an idle cluster for minutes (reference run: 6 of its 29 sampling minutes).
    pending.sort(key=lambda job: expected_cost(job[1], settings[job[0]], plan), reverse=True)
    print(
        f"[sample] {len(jobs)} jobs of {section.videos} x {section.frames}-frame videos; {len(pending)} to do"
    )

    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks("sample", f"sample.use_gpu={section.use_gpu}", {"CPU": 1, "GPU": int(section.use_gpu)})
    task = _sample_task.options(num_gpus=1 if section.use_gpu else 0)
    refs = {
        task.remote(
            ctx.out_dir,
            name,
            strategy,
            dataclasses.asdict(settings[name]),
            plan,
            files,
            {
                "videos": section.videos,
                "resolution": data.resolution,
                "fps": section.fps,
                "columns": section.contact_columns,
                "seed": section.seed,
                "precision": section.precision,
            },
        ): job_name(name, strategy)
        for name, strategy in pending
    }
    failures = [f"{name}: {type(err).__name__}: {err}" for name, err in wait_all(refs, "sample", "job")]
    if failures:
        raise RuntimeError("sampling failed for " + "; ".join(failures) + " (rerun to redo only these)")

    records = {job_name(*job): read_record(ctx.out_dir, job_name(*job)) for job in jobs}
    for name, record in records.items():
        sheet, video = (
            storage.join(ctx.out_dir, path) for path in (record["contact_sheet"], record["videos"][0])
        )
        tracking.log_artifact(ctx.tracking, sheet, "contact_sheets")
        tracking.log_artifact(ctx.tracking, video, f"videos/{name}")
        tracking.log_metrics(ctx.tracking, {f"{name}/seconds_per_frame": record["seconds_per_frame"]}, 0)
    return {
        "jobs": records,
        "frames": section.frames,
        "videos_per_job": section.videos,
        "settings": {name: dataclasses.asdict(value) for name, value in settings.items()},
        "strategies": list(section.strategies),
        "fps": section.fps,
    }


def plan_options(config) -> dict:
    """`LongVideoPlan` fields from a pipeline config: the prediction model's clip layout
    (its training windows) and the sample section's length and memory bounds."""
    return {
        "frames": config.sample.frames,
        "clip": config.train_pred.frames,
        "cond_frames": config.train_pred.cond_frames,
        "latent_stride": config.train_pred.latent_stride,
        "max_batch": config.sample.max_batch,
        "decode_window": config.sample.decode_window,
    }


def expected_cost(strategy: str, sampling: SamplingSettings, plan: dict) -> int:
    """A job's network evaluations in latent frames (up to a constant), to order the jobs by.

    Autoregressive: one unconditional clip, then clips of `clip` latents each adding
    `clip − cond_frames`. Hierarchical: the same over keys `latent_stride` apart, then one fill
    of `latent_stride + 1` latents between every pair of keys. Guidance (w > 0) evaluates every
    conditional clip twice.
    """
    latents, clip, cond = plan["frames"], plan["clip"], plan["cond_frames"]
    stride = plan["latent_stride"] if strategy == "hierarchical" else 1
    keys = key_count(latents, stride)
    loop_clips = max(0, math.ceil((keys - clip) / (clip - cond)))
    conditional = loop_clips * clip
    if strategy == "hierarchical":
        conditional += (keys - 1) * (stride + 1)
    return clip + conditional * (2 if sampling.guidance_weight > 0 else 1)


def model_files(inputs: dict) -> dict:
    """Paths of the trained networks and the autoencoder, with the latent normalisation.

    A shared prediction network (`train_pred.roles`) stands in for the ones the pipeline does
    not train: with no `train_uncond`, first clips come from its unconditional mode (None
    here); with no `train_interp`, it fills between the keys, if it learned to."""
    pred = inputs["train_pred"]

    def unet(stage: dict) -> str:
        return storage.join(stage["out_dir"], stage["outputs"]["unet"])

    interp = inputs.get("train_interp")
    if interp is None and "interp" not in pred["outputs"]["task"].get("roles", ()):
        raise ValueError(
            "no interpolation network: list train_interp in `stages`, or train a shared network "
            "with train_pred.roles: [uncond, pred, interp]"
        )
    uncond = inputs.get("train_uncond")
    return {
        "unconditional": unet(uncond) if uncond else None,
        "prediction": unet(pred),
        "interpolation": unet(interp) if interp else unet(pred),
        "autoencoder": pred["outputs"]["autoencoder"],
        "scale": pred["outputs"]["scale"],
        "shift": pred["outputs"]["shift"],
    }


def job_name(setting: str, strategy: str) -> str:
    return f"{setting}-{strategy}"


def load_models(files: dict, device: torch.device) -> LongVideoModels:
    """EMA networks and the autoencoder in eval mode on `device`."""
    from lvdm.diffusion.schedule import NoiseSchedule
    from stages.autoencoder_file import load_autoencoder
    from stages.unet_file import load_unet

    autoencoder, _ = load_autoencoder(files["autoencoder"])
    prediction = load_unet(files["prediction"])[0].to(device)
    shared = files["interpolation"] == files["prediction"]
    interpolation = prediction if shared else load_unet(files["interpolation"])[0].to(device)
    unconditional = load_unet(files["unconditional"])[0].to(device) if files["unconditional"] else None
    return LongVideoModels(
        prediction=prediction,
        interpolation=interpolation,
        unconditional=unconditional,
        autoencoder=autoencoder.to(device),
        schedule=NoiseSchedule.linear(**files["schedule"]),
        scale=files["scale"],
        shift=files["shift"],
    )


@ray.remote(num_cpus=1)
def _sample_task(
    out_dir: str, setting: str, strategy: str, sampling: dict, plan: dict, files: dict, options: dict
) -> dict:
    device = task_device()
    settings = SamplingSettings(**sampling)
    with storage.staged_folder(out_dir, last=(RECORDS,)) as folder:
        return sample_job(folder, setting, strategy, settings, plan, files, device=device, **options)


def sample_job(
    out_dir: Path,
    setting: str,
    strategy: str,
    sampling: SamplingSettings,
    plan: dict,
    files: dict,
    *,
    videos: int,
    resolution: int,
    fps: float,
    columns: int,
    seed: int,
    device: torch.device,
    progress: bool = False,
    precision: str = "fp32",
) -> dict:
    """Generate one job's videos and contact sheet into the local folder `out_dir`, then write
    its record (plain, no Ray; the task publishes the folder to an object-store workdir)."""
    from lvdm.latent_stats import WindowedLatentStats, out_of_range
    from lvdm.long_video import long_video_frames

    name = job_name(setting, strategy)
    models = load_models(files, device)
    ft = models.autoencoder.config.ft
    latent_stats = WindowedLatentStats(window=max(1, STATS_WINDOW_FRAMES // ft))
    long_plan = LongVideoPlan(strategy=strategy, sampling=sampling, **plan)
    generator = torch.Generator(device).manual_seed(seed)
    started = time.perf_counter()
    chunks = long_video_frames(
        models,
        long_plan,
        videos=videos,
        size=(resolution, resolution),
        generator=generator,
        progress=progress,
        on_latents=latent_stats.add,
    )
    steps = contact_steps(plan["frames"], columns)
    sheet_frames: dict[int, np.ndarray] = {}
    paths = [out_dir / "videos" / setting / strategy / f"video-{i:03d}.mp4" for i in range(videos)]
    with autocast(device, autocast_dtype(precision, device)):  # the chunks are generated as written
        write_mp4_streams(paths, _keep_frames(chunks, steps, sheet_frames), fps=fps)
    seconds = time.perf_counter() - started
    sheet = out_dir / "contact_sheets" / f"{name}.png"
    write_contact_sheet(sheet, [sheet_frames[s] for s in steps])
    record = {
        "setting": setting,
        "strategy": strategy,
        "videos": [str(p.relative_to(out_dir)) for p in paths],
        "contact_sheet": str(sheet.relative_to(out_dir)),
        "contact_steps": steps,
        "sampling": dataclasses.asdict(sampling),
        "seconds": seconds,
        "seconds_per_frame": seconds / (videos * plan["frames"]),
        # Per 16-frame window, each channel's mean and std over the job's videos, in the
        # normalised units the data has (mean ~0, std ~1): where a long video leaves them.
        "latent_stats": latent_stats.windows(),
        "latent_stats_window_frames": STATS_WINDOW_FRAMES,
        "latents_leave_range_at_frame": _frame_of(out_of_range(latent_stats.windows())),
    }
    storage.write_json(record_path(out_dir, name), record)
    return record


def _frame_of(window: int | None) -> int | None:
    return None if window is None else window * STATS_WINDOW_FRAMES


def contact_steps(frames: int, columns: int) -> list[int]:
    """`columns` frame indices evenly spaced from the first to the last frame."""
    columns = min(columns, frames)
    return sorted({round(i * (frames - 1) / max(columns - 1, 1)) for i in range(columns)})


def _keep_frames(chunks: Iterable[torch.Tensor], steps: list[int], kept: dict[int, np.ndarray]) -> Iterator:
    """Pass chunks `(n t h w c)` on to the writer, keeping the frames at `steps` of every video."""
    start = 0
    for chunk in chunks:
        array = np.asarray(chunk)
        for step in steps:
            if start <= step < start + array.shape[1]:
                kept[step] = array[:, step - start]
        start += array.shape[1]
        yield array


def write_contact_sheet(path: Path, columns: list[np.ndarray]) -> None:
    """A PNG grid: one row per video, one column per kept step (`columns[j]`: `(n h w c)`)."""
    grid = np.concatenate([np.concatenate(list(column), axis=0) for column in columns], axis=1)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    storage.write_bytes(path, buffer.getvalue())


STAGE = Stage(
    name="sample",
    run=run,
    sections=("sample", "sampling"),
    inputs=("train_pred",),
    optional_inputs=("train_uncond", "train_interp"),
    description="long videos (LVDM §3.3): autoregressive and hierarchical, mp4 + contact sheets",
)
