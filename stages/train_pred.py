"""Stage `train_pred`: the prediction model of long videos (LVDM §3.3).

Windows of `train_pred.frames` latents taken every `latent_stride`-th latent, so that the
keys a hierarchical long video extends lie far apart; the first `cond_frames` are given with
probability `p_cond` (else unconditional), diffused to a random level s ≤ s_max first
(conditional latent perturbation). Starts from `train_uncond`'s EMA weights (§4.1) where the
pipeline lists it, else from scratch. With `roles` [uncond, pred, interp] the network is shared:
each step draws one of §3.3's three roles, and `sample` takes its first clips and fills from it
where the pipeline lists no `train_uncond` / `train_interp` (README, "What stopped the small
models", point 7). When
training ends, `lvdm.prediction_check` measures on held-out clips whether the model's
continuations beat the unconditional model and a repeated last frame; on the synthetic
dataset `stages.position_check` also measures the decoded continuations' shape positions in
pixels against the true trajectories. The figures go to the manifest and MLflow.
"""

from __future__ import annotations

import torch

from data_prep import storage
from lvdm.autoencoder import normalise
from lvdm.prediction_check import continuation_errors
from stages import tracking
from stages.contract import Stage, StageContext
from stages.diffusion_stage import DiffusionTask, run_training, schedule_of
from stages.unet_file import FILENAME, load_unet


def task(section) -> DiffusionTask:
    return DiffusionTask(
        kind="pred",
        frames=section.frames,
        latent_stride=section.latent_stride,
        cond_frames=section.cond_frames,
        p_cond=section.p_cond,
        max_noise_level=section.max_noise_level,
        strides=(1, section.latent_stride) if section.stride_aware and section.latent_stride > 1 else (),
        roles=() if section.roles == ["pred"] else tuple(section.roles),
    )


def run(ctx: StageContext) -> dict:
    section = ctx.config.train_pred
    uncond = ctx.inputs.get("train_uncond")
    uncond_file = storage.join(uncond["out_dir"], FILENAME) if uncond else None
    outputs = run_training(ctx, task(section), section, init_from=uncond_file)
    check = prediction_check(ctx, section, storage.join(ctx.out_dir, FILENAME), uncond_file, outputs)
    tracking.log_metrics(ctx.tracking, {f"check/{k}": v for k, v in check.items()}, outputs["steps"])
    unconditional = (
        f"unconditional model {check['unconditional_model']:.4f}, " if "unconditional_model" in check else ""
    )
    print(
        f"[train_pred] held-out continuation latent MSE: prediction {check['prediction']:.4f}, "
        f"{unconditional}own unconditional mode {check['prediction_unconditioned']:.4f}, "
        f"repeat last frame {check['repeat_last']:.4f} ({int(check['clips'])} clips)"
    )
    outputs = {**outputs, "prediction_check": check}
    if ctx.config.data.dataset == "synthetic" and ctx.config.data.stride == 1:
        from stages.position_check import describe, flat_metrics

        pred_file = storage.join(ctx.out_dir, FILENAME)
        position = run_position_check(ctx.config, pred_file, uncond_file, outputs)
        tracking.log_metrics(ctx.tracking, flat_metrics(position), outputs["steps"])
        print(f"[train_pred] position error on held-out clips, pixels (found):\n{describe(position)}")
        outputs["position_check"] = position
    return outputs


def run_position_check(config, pred_file: str, uncond_file: str | None, outputs: dict) -> dict:
    """Issue 21 item 3 on the driver: decoded continuations' shape positions on held-out clips.

    Of any prediction network file of this `config` (`benchmarks/bench_goal_curves.py` runs it
    on the stage's snapshots); `outputs` gives the autoencoder and the latent scale/shift."""
    from lvdm.long_video import SamplingSettings
    from stages.autoencoder_file import load_autoencoder
    from stages.position_check import heldout_clips, position_check

    section = config.train_pred
    prediction, _ = load_unet(pred_file)
    unconditional = load_unet(uncond_file)[0] if uncond_file else None
    autoencoder, _ = load_autoencoder(outputs["autoencoder"])
    threads = torch.get_num_threads()  # process-wide: see prediction_check
    torch.set_num_threads(max(1, section.train.cpus_per_worker))
    try:
        return position_check(
            prediction,
            unconditional,
            autoencoder,
            heldout_clips(config.data, section.eval_clips, config.shard.crf),
            schedule_of(config.diffusion.schedule.model_dump()),
            scale=outputs["scale"],
            shift=outputs["shift"],
            cond_frames=section.cond_frames,
            clip_latents=section.frames,
            latent_stride=section.latent_stride,
            unconditional_latents=config.train_uncond.frames,
            encode_window=config.data.frames,
            sampling=SamplingSettings(**config.sampling.model_dump()),
            # A stride-aware model is checked at the data's pace: consecutive latents, decoded as
            # one video; the release's keys-only model at its keys' stride.
            stride=1 if task(section).strides else None,
        )
    finally:
        torch.set_num_threads(threads)


def prediction_check(
    ctx: StageContext, section, pred_file: str, uncond_file: str | None, outputs: dict
) -> dict:
    """Item 8 of the diffusion issue, on the driver: held-out strided windows of the test split."""
    from data_prep.loader import latent_window_loader

    cache = ctx.inputs["cache_latents"]
    shards = cache["outputs"]["shards"]
    heldout = [storage.join(cache["out_dir"], s) for s in (shards.get("test") or shards["train"])]
    loader = latent_window_loader(
        heldout,
        frames=section.frames,
        stride=section.latent_stride,
        batch_size=section.eval_clips,
        batches_per_epoch=1,
        seed=4321,
    )
    clips = normalise(next(iter(loader)), outputs["scale"], outputs["shift"])
    prediction, _ = load_unet(pred_file)
    unconditional = load_unet(uncond_file)[0] if uncond_file else None
    sampling = ctx.config.sampling
    # The driver's thread count is process-wide and other stages may be running beside this
    # one (the runner runs independent stages concurrently): set it for the check, then restore.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, section.train.cpus_per_worker))
    try:
        return continuation_errors(
            prediction,
            unconditional,
            clips,
            schedule_of(ctx.config.diffusion.schedule.model_dump()),
            cond_frames=section.cond_frames,
            sampler=sampling.sampler,
            steps=sampling.steps,
            eta=sampling.eta,
            noise_level=sampling.noise_level,
            guidance_weight=sampling.guidance_weight,
            stride=task(section).sample_stride,
        )
    finally:
        torch.set_num_threads(threads)


STAGE = Stage(
    name="train_pred",
    run=run,
    sections=("diffusion", "train_pred"),
    inputs=("cache_latents",),
    optional_inputs=("train_uncond",),
    description="prediction model (LVDM §3.3): first latents given, strided keys, on Ray Train",
)
