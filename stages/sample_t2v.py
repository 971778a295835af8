"""Stage `sample_t2v`: videos of the trained text-to-video model for each prompt of `sample.prompts`.

For every prompt, `sample.videos` videos (seeded by `sample.seed`): latents drawn with
classifier-free guidance at the training stage's `guidance_scale` (one batched forward per
step, `lvdm.diffusion.text_guidance`), decoded by the model's own decoder (SD's VAE per frame
or the pipeline's video autoencoder, `stages.t2v_model`), written as H.264 mp4 plus one
contact sheet per prompt (a row per video, a column per frame). In MLflow each prompt's files
sit under an artifact folder named after the prompt (`videos/a_red_circle_moving_left/`) and
the prompts are params (`prompt.000`, ...), so a preview always says what it was asked for.
The work runs in one Ray task (a GPU one with `sample.use_gpu`); a rerun redoes it whole.

Length: a model trained with `t2v.cond_frames` > 0 continues its windows, so its videos are
`sample.frames` long (every window conditioned on the last latents and the caption;
hierarchical, keys then fills, for a model trained with `t2v.key_stride` > 1, else
autoregressive; `stages.t2v_model`); any other model makes one training window, as before, since
`sample.frames` (1,024 by default) is the long-video stages' length, which it cannot reach.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import ray
import torch

from data_prep import storage
from data_prep.encode import write_mp4
from stages import tracking
from stages.cluster_check import check_tasks
from stages.contract import Stage, StageContext
from stages.ray_session import ensure_ray, task_device

if TYPE_CHECKING:
    from stages.t2v_model import TextVideoModel

RECORD = "samples.json"


def run(ctx: StageContext) -> dict:
    section = ctx.config.sample
    prompts = list(section.prompts)
    print(f"[sample_t2v] {section.videos} videos for each of {len(prompts)} prompts")
    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    check_tasks("sample_t2v", f"sample.use_gpu={section.use_gpu}", {"CPU": 1, "GPU": int(section.use_gpu)})
    options = {
        "videos": section.videos,
        "fps": section.fps,
        "seed": section.seed,
        "max_batch": section.max_batch,
        "frames": section.frames,
        "contact_columns": section.contact_columns,
        "schedule": ctx.config.diffusion.schedule.model_dump(),
        "sampling": ctx.config.sampling.model_dump(),
    }
    task = _sample_task.options(num_gpus=1 if section.use_gpu else 0)
    record = ray.get(task.remote(ctx.out_dir, ctx.inputs["train_t2v"], prompts, options))

    tracking.log_params(ctx.tracking, {"prompt": {f"{i:03d}": p for i, p in enumerate(prompts)}})
    for prompt, entry in record["prompts"].items():
        folder = prompt_slug(prompt)
        for video in entry["videos"]:
            tracking.log_artifact(ctx.tracking, storage.join(ctx.out_dir, video), f"videos/{folder}")
        tracking.log_artifact(
            ctx.tracking, storage.join(ctx.out_dir, entry["contact_sheet"]), "contact_sheets"
        )
    tracking.log_metrics(ctx.tracking, {"seconds_per_video": record["seconds_per_video"]}, 0)
    print(f"[sample_t2v] {record['seconds_per_video']:.2f} s per video; in {ctx.out_dir}")
    return record


def prompt_slug(prompt: str) -> str:
    """A file and artifact name that reads as the prompt: `a_red_circle_moving_left`."""
    return re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:120] or "empty_prompt"


@ray.remote(num_cpus=1)
def _sample_task(out_dir: str, train_manifest: dict, prompts: list[str], options: dict) -> dict:
    device = task_device()
    with storage.staged_folder(out_dir, last=(RECORD,)) as folder:
        return sample_prompts(folder, train_manifest, prompts, device=device, **options)


def sample_prompts(
    out_dir: Path,
    train_manifest: dict,
    prompts: list[str],
    *,
    videos: int,
    fps: float,
    seed: int,
    max_batch: int,
    schedule: dict,
    sampling: dict,
    device: torch.device,
    frames: int | None = None,
    contact_columns: int = 8,
) -> dict:
    """`videos` videos per prompt into the local folder `out_dir` (mp4 + a contact sheet per prompt),
    then the record `samples.json`; plain, no Ray. `frames` (sample.frames) is the length of a
    continuing model's videos; any other model's are one window (None: a window for every model).
    A contact sheet shows every frame of a window, `contact_columns` evenly spaced ones of a longer
    video (as the long-video sheets of `sample` do)."""
    from stages.sample import contact_steps, write_contact_sheet
    from stages.t2v_model import TextVideoModel

    model = TextVideoModel.load(train_manifest, device)
    length = frames if model.continues and frames is not None else model.window_frames
    generator = torch.Generator(device).manual_seed(seed)
    started = time.perf_counter()
    asked = [prompt for prompt in prompts for _ in range(videos)]
    generated = generate_videos(
        model,
        asked,
        generator=generator,
        max_batch=max_batch,
        schedule=schedule,
        sampling=sampling,
        frames=length,
    )
    seconds = time.perf_counter() - started
    record: dict = {
        "prompts": {},
        "guidance_scale": model.guidance_scale,
        "fps": fps,
        "videos_per_prompt": videos,
        "frames": length,
        "continued": model.continues,  # windows past the first conditioned on the last latents
        # Past one window: the model's own strategy (hierarchical if trained with t2v.key_stride > 1).
        "strategy": model.check_strategy(None) if length > model.window_frames else None,
    }
    shown = range(length) if length <= model.window_frames else contact_steps(length, contact_columns)
    for i, prompt in enumerate(prompts):
        slug = prompt_slug(prompt)
        clips = generated[i * videos : (i + 1) * videos]
        paths = [out_dir / "videos" / f"{i:03d}-{slug}" / f"video-{k:03d}.mp4" for k in range(videos)]
        for path, clip in zip(paths, clips, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_mp4(path, clip, fps=fps)
        sheet = out_dir / "contact_sheets" / f"{i:03d}-{slug}.png"
        sheet.parent.mkdir(parents=True, exist_ok=True)
        write_contact_sheet(sheet, [clips[:, t] for t in shown])  # columns: frames; rows: videos
        record["prompts"][prompt] = {
            "videos": [str(p.relative_to(out_dir)) for p in paths],
            "contact_sheet": str(sheet.relative_to(out_dir)),
        }
    record["seconds_per_video"] = seconds / len(asked)
    storage.write_json(out_dir / RECORD, record)
    return record


def generate_videos(
    model: TextVideoModel,
    prompts: list[str],
    *,
    generator: torch.Generator,
    max_batch: int,
    schedule: dict,
    sampling: dict,
    guidance_scale: float | None = None,
    frames: int | None = None,
) -> np.ndarray:
    """One video per prompt as uint8 `b t h w c`, `max_batch` prompts per sampler call, from a loaded
    `stages.t2v_model.TextVideoModel` (here and in `evaluate_t2v_zero_shot`)."""
    from lvdm.long_video import to_uint8_frames
    from stages.diffusion_stage import schedule_of

    videos = []
    for start in range(0, len(prompts), max_batch):
        video = model.sample(
            prompts[start : start + max_batch],
            schedule_of(schedule),
            sampling,
            generator=generator,
            guidance_scale=guidance_scale,
            frames=frames,
        )
        videos.append(to_uint8_frames(video).numpy())  # b t h w c
    return np.concatenate(videos)


STAGE = Stage(
    name="sample_t2v",
    run=run,
    sections=("sample", "sampling"),
    inputs=("train_t2v",),
    description="text-to-video samples for each of sample.prompts: mp4 + contact sheets, named by prompt",
)
