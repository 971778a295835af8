"""Stage `train_interp`: the interpolation model of long videos (LVDM §3.3).

Windows of `train_interp.frames` latents with the first and last given (probability
`p_cond`, else unconditional), the given latents diffused to a random level s ≤ s_max
(conditional latent perturbation). Starts from `train_uncond`'s EMA weights (§4.1). With
`frames` = the prediction model's `latent_stride` + 1 it fills exactly the latents between
two neighbouring keys of a hierarchical long video.
"""

from __future__ import annotations

from data_prep import storage
from stages.contract import Stage, StageContext
from stages.diffusion_stage import DiffusionTask, run_training
from stages.unet_file import FILENAME


def task(section) -> DiffusionTask:
    return DiffusionTask(
        kind="interp", frames=section.frames, p_cond=section.p_cond, max_noise_level=section.max_noise_level
    )


def run(ctx: StageContext) -> dict:
    section = ctx.config.train_interp
    uncond = ctx.inputs["train_uncond"]
    return run_training(ctx, task(section), section, init_from=storage.join(uncond["out_dir"], FILENAME))


STAGE = Stage(
    name="train_interp",
    run=run,
    sections=("diffusion", "train_interp"),
    inputs=("cache_latents", "train_uncond"),
    description="interpolation model (LVDM §3.3): first and last latent given, on Ray Train",
)
