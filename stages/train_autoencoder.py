"""Stage `train_autoencoder`: the 3D video autoencoder (LVDM §3.1) on Ray Train.

Shaped like Ray's own Train examples: a per-worker loop (`_train_loop`) that builds the
model, prepares it for DDP, reads its own shards and reports checkpoints; the driver side
(`run`) only builds the `TorchTrainer`. Resuming is Ray Train V2's: a new trainer with the
same `RunConfig(storage_path, name)` hands the newest checkpoint to `get_checkpoint()`, so
the run name is the stage's deterministic `<stage>-<cache key>`, never a timestamp.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from data_prep.encode import write_mp4
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder, latent_normalisation
from lvdm.autoencoder_training import AutoencoderTrainer, psnr
from lvdm.discriminator import build_discriminator
from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from stages import tracking
from stages.autoencoder_file import FILENAME, save_autoencoder
from stages.contract import Stage, StageContext, Tracking

FAULT_ENV = "LVDM_FAULT_INJECT"  # "train_autoencoder:<step>": crash after that step of a fresh start (tests)
TRAINER_STATE = "trainer.pt"


def run(ctx: StageContext) -> dict:
    import ray.train
    from ray.train.torch import TorchTrainer

    from stages.ray_session import ensure_ray

    ae, data = ctx.config.autoencoder, ctx.config.data
    shard_manifest = ctx.inputs["shard"]
    shard_dir = Path(shard_manifest["out_dir"])
    train_shards = [str(shard_dir / s) for s in shard_manifest["outputs"]["shards"].get("train", [])]
    heldout_shards = [str(shard_dir / s) for s in shard_manifest["outputs"]["shards"].get("test", [])]
    if not train_shards:
        raise ValueError(f"shard stage at {shard_dir} wrote no train shards; check data.splits and data.root")
    lpips_path = _check_perceptual(ae.loss, ctx.config.weights.home)
    print(f"[train_autoencoder] {describe_model(ae.model.model_dump(), data.frames, data.resolution)}")

    loop_config = {
        "model": ae.model.model_dump(),
        "loss": ae.loss.model_dump(),
        "train": ae.train.model_dump(),
        "frames": data.frames,
        "stride": data.stride,
        "train_shards": train_shards,
        "heldout_shards": heldout_shards or train_shards,
        "lpips_path": lpips_path,
        "tracking": dataclasses.asdict(ctx.tracking),
        "fault_step": _fault_step(),
    }
    ensure_ray(ctx.config.ray.address, ctx.config.ray.num_cpus)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=ae.train.num_workers,
            use_gpu=ae.train.use_gpu,
            resources_per_worker={"CPU": ae.train.cpus_per_worker} | ({"GPU": 1} if ae.train.use_gpu else {}),
        ),
        run_config=ray.train.RunConfig(
            name=ctx.run_name,
            storage_path=str(ctx.out_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=ae.train.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / TRAINER_STATE, map_location="cpu", weights_only=False)
    model = VideoAutoencoder(_model_config(loop_config["model"]))
    model.load_state_dict(state["trainer"]["model"])
    save_autoencoder(ctx.out_dir / FILENAME, model, state["scale"], state["shift"], state["step"])
    tracking.log_artifact(ctx.tracking, ctx.out_dir / FILENAME, "checkpoint")
    tracking.log_metrics(
        ctx.tracking, {"latent_scale": state["scale"], "latent_shift": state["shift"]}, state["step"]
    )
    params = sum(p.numel() for p in model.parameters())
    print(
        f"[train_autoencoder] {params / 1e6:.2f}M parameters; latent scale {state['scale']:.4f} "
        f"shift {state['shift']:.4f}; held-out PSNR {state['heldout_psnr']:.2f} dB at step {state['step']}"
    )
    return {
        "autoencoder": FILENAME,
        "steps": state["step"],
        "resumed_from_step": state["resumed_from_step"],
        "scale": state["scale"],
        "shift": state["shift"],
        "heldout_psnr": state["heldout_psnr"],
        "parameters": params,
        "latent_shape_per_clip": list(model.latent_shape(data.frames, data.resolution, data.resolution)),
    }


def describe_model(model: dict, frames: int, resolution: int) -> str:
    """Parameter counts and the latent of one clip, printed before training starts."""
    autoencoder = VideoAutoencoder(_model_config(model))
    encoder = sum(p.numel() for p in autoencoder.encoder.parameters())
    decoder = sum(p.numel() for p in autoencoder.decoder.parameters())
    latent = autoencoder.latent_shape(frames, resolution, resolution)
    return (
        f"autoencoder: {encoder / 1e6:.2f}M encoder + {decoder / 1e6:.2f}M decoder parameters; "
        f"{resolution}x{resolution}x{frames} clip -> latent {latent} "
        f"({3 * frames * resolution**2 / np.prod(latent):.0f}x fewer numbers)"
    )


def _check_perceptual(loss, weights_home: Path | None) -> str | None:
    """Fail on the driver, before any worker starts, if the LPIPS weights are missing."""
    if loss.perceptual_weight == 0 or loss.lpips == "random":
        return None
    from lvdm.pretrained.cache import LPIPS_FILES, cached_weights

    return str(cached_weights(LPIPS_FILES[loss.lpips], home=weights_home))


def _model_config(model: dict) -> AutoencoderConfig:
    multipliers = model["channel_multipliers"]
    return AutoencoderConfig(**{**model, "channel_multipliers": tuple(multipliers) if multipliers else None})


def _train_loop(cfg: dict) -> None:
    """One Ray Train worker: its own shards, DDP-wrapped model, checkpoints from rank 0."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    train = cfg["train"]
    torch.manual_seed(train["seed"] + rank)
    torch.set_num_threads(train["cpus_per_worker"])  # Ray pins OMP threads to the CPUs it granted

    model = ray.train.torch.prepare_model(VideoAutoencoder(_model_config(cfg["model"])))
    discriminator = ray.train.torch.prepare_model(
        build_discriminator(
            cfg["loss"]["discriminator"],
            num_layers=cfg["loss"]["disc_layers"],
            base_channels=cfg["loss"]["disc_channels"],
        )
    )
    loss = AutoencoderLoss(_loss_config(cfg["loss"]), _perceptual(cfg)).to(device)
    autocast = (
        {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train["precision"])
        if device.type == "cuda"
        else None
    )
    trainer = AutoencoderTrainer(
        model,
        discriminator,
        loss,
        lr=train["lr"],
        grad_clip=train["grad_clip"],
        autocast_dtype=autocast,
        seed=train["seed"] + rank,
    )
    step = resumed_from = _restore(trainer)
    log = Tracking(**cfg["tracking"]) if rank == 0 else None
    heldout = _heldout_batch(cfg, device) if rank == 0 else None

    every = train["checkpoint_every"]
    from tqdm import tqdm

    bar = tqdm(total=train["steps"], initial=step, desc="train_autoencoder", disable=rank != 0, mininterval=5)
    while step < train["steps"]:
        segment = step // every  # one loader "epoch" per checkpoint interval: resume replays the same data
        batches = min(every - step % every, train["steps"] - step)
        loader = _loader(cfg, cfg["train_shards"], epoch=segment, batches=batches, rank=rank, world=world)
        window_start, window_step = time.perf_counter(), step
        for batch in loader:
            logs = trainer.step(batch.to(device), step)
            step += 1
            bar.update(1)
            if cfg["fault_step"] is not None and step == cfg["fault_step"] and resumed_from == 0:
                raise RuntimeError(f"injected failure after step {step} ({FAULT_ENV})")
            if log and step % train["log_every"] == 0:
                clips = (step - window_step) * train["batch_size"] * world  # all workers' clips
                rate = clips / max(time.perf_counter() - window_start, 1e-9)
                tracking.log_metrics(log, {**logs, "lr": train["lr"], "clips_per_s": rate}, step)
                window_start, window_step = time.perf_counter(), step
            if log and step % train["preview_every"] == 0:
                _preview(trainer, heldout, log, step)
        _report(trainer, step, resumed_from, cfg, heldout, rank, world, final=step >= train["steps"])
    bar.close()


def _loss_config(loss: dict) -> AutoencoderLossConfig:
    return AutoencoderLossConfig(
        reconstruction=loss["reconstruction"],
        perceptual_weight=loss["perceptual_weight"],
        kl_weight=loss["kl_weight"],
        disc_start=loss["disc_start"],
        disc_weight=loss["disc_weight"],
    )


def _perceptual(cfg: dict):
    from lvdm.losses.lpips import load_lpips

    loss = cfg["loss"]
    if loss["perceptual_weight"] == 0:
        return None
    if loss["lpips"] == "random":
        warnings.warn(
            "autoencoder.loss.lpips=random: the perceptual loss has a RANDOM VGG trunk (tests only)",
            stacklevel=1,
        )
        return load_lpips("vgg", random=True)
    return load_lpips(loss["lpips"], path=cfg["lpips_path"])


def _loader(
    cfg: dict, shards: list[str], *, epoch: int, batches: int, rank: int = 0, world: int = 1, **override
):
    """The training clip loader; `override` replaces batch_size, num_workers or seed for one use."""
    from data_prep.loader import video_clip_loader

    train = cfg["train"]
    options = {
        "batch_size": train["batch_size"],
        "num_workers": train["loader_workers"],
        "seed": train["seed"],
    }
    return video_clip_loader(
        shards,
        frames=cfg["frames"],
        stride=cfg["stride"],
        batches_per_epoch=batches,
        rank=rank,
        world_size=world,
        epoch=epoch,
        **(options | override),
    )


def _heldout_batch(cfg: dict, device: torch.device) -> torch.Tensor:
    """A fixed batch of held-out clips (the test split), the same at every preview."""
    batch_size = cfg["train"]["heldout_clips"]
    loader = _loader(
        cfg, cfg["heldout_shards"], epoch=0, batches=1, batch_size=batch_size, num_workers=0, seed=12345
    )
    return next(iter(loader)).to(device)


def _restore(trainer: AutoencoderTrainer) -> int:
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / TRAINER_STATE, map_location="cpu", weights_only=False)
    trainer.load_state_dict(state["trainer"])
    print(f"[train_autoencoder] resumed from the checkpoint at step {state['step']}")
    return state["step"]


def _preview(trainer: AutoencoderTrainer, heldout: torch.Tensor, log: Tracking, step: int) -> float:
    recon = trainer.reconstruct(heldout)
    score = psnr(heldout, recon)
    tracking.log_metrics(log, {"heldout_psnr": score}, step)
    strip = torch.cat([heldout, recon], dim=-1)  # original | reconstruction, side by side
    frames = rearrange(strip, "b c t h w -> t (b h) w c")
    frames = ((frames.float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        path = write_mp4(Path(folder) / f"recon_step{step:07d}.mp4", frames, fps=8)
        tracking.log_artifact(log, path, "previews")
    return score


def _report(
    trainer, step: int, resumed_from: int, cfg: dict, heldout, rank: int, world: int, final: bool
) -> None:
    """Every worker reports; rank 0 attaches the checkpoint (and, at the end, normalisation)."""
    import ray.train

    metrics = {"step": step}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    state = {"trainer": trainer.state_dict(), "step": step, "resumed_from_step": resumed_from}
    if final:
        state["heldout_psnr"] = psnr(heldout, trainer.reconstruct(heldout))
        state["scale"], state["shift"] = _normalisation(trainer.autoencoder, cfg, heldout.device)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / TRAINER_STATE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


@torch.no_grad()
def _normalisation(model: VideoAutoencoder, cfg: dict, device: torch.device) -> tuple[float, float]:
    """scale = 1/std, shift = -mean of posterior means over training clips (not hard-coded)."""
    batch_size = cfg["train"]["batch_size"]
    batches = max(1, cfg["train"]["normalisation_clips"] // batch_size)
    loader = _loader(cfg, cfg["train_shards"], epoch=0, batches=batches, num_workers=0, seed=777)
    model.eval()
    latents = [model.encode(batch.to(device)).mode().float().cpu() for batch in loader]
    return latent_normalisation(torch.cat(latents))


def _fault_step() -> int | None:
    name, _, step = os.environ.get(FAULT_ENV, "").partition(":")
    return int(step) if name == "train_autoencoder" and step else None


STAGE = Stage(
    name="train_autoencoder",
    run=run,
    sections=("data", "autoencoder"),
    inputs=("shard",),
    description="3D KL video autoencoder (LVDM §3.1) with LPIPS + hinge GAN loss, on Ray Train",
)
