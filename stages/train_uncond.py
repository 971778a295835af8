"""Stage `train_uncond`: the unconditional latent video diffusion model (LVDM §3.2).

Random windows of `train_uncond.frames` consecutive latents from the latent cache, ε-prediction
with the official linear schedule, EMA weights saved as `unet.pt`. The prediction and
interpolation stages start from these weights (§4.1).
"""

from __future__ import annotations

from stages.contract import Stage, StageContext
from stages.diffusion_stage import DiffusionTask, run_training


def task(section) -> DiffusionTask:
    return DiffusionTask(kind="uncond", frames=section.frames)


def run(ctx: StageContext) -> dict:
    section = ctx.config.train_uncond
    return run_training(ctx, task(section), section)


STAGE = Stage(
    name="train_uncond",
    run=run,
    sections=("diffusion", "train_uncond"),
    inputs=("cache_latents",),
    description="unconditional latent video diffusion (LVDM §3.2) on Ray Train",
)
