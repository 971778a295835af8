"""Stage `train_autoencoder`: the 3D video autoencoder (LVDM §3.1) on Ray Train.

What is autoencoder-specific lives here: the model, discriminator and loss, the clip loader,
held-out PSNR previews and the data-derived latent normalisation computed at the end. The Ray
Train plumbing (run name, checkpoints, resume, fault injection, logging) is
`stages.ray_training`, shared with the diffusion stages.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from data_prep import storage
from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder, latent_normalisation
from lvdm.autoencoder_training import AutoencoderTrainer, psnr
from lvdm.discriminator import build_discriminator
from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from stages import ray_training, tracking
from stages.autoencoder_file import FILENAME, save_autoencoder
from stages.contract import Stage, StageContext
from stages.ray_training import FAULT_ENV, WorkerSession

__all__ = ["FAULT_ENV", "STAGE", "describe_model", "run"]


def run(ctx: StageContext) -> dict:
    ae, data = ctx.config.autoencoder, ctx.config.data
    shard_manifest = ctx.inputs["shard"]
    shard_dir = shard_manifest["out_dir"]
    train_shards = [storage.join(shard_dir, s) for s in shard_manifest["outputs"]["shards"].get("train", [])]
    heldout_shards = [storage.join(shard_dir, s) for s in shard_manifest["outputs"]["shards"].get("test", [])]
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
    }
    state = ray_training.fit(ctx, _train_loop, loop_config, ae.train)
    model = VideoAutoencoder(_model_config(loop_config["model"]))
    model.load_state_dict(state["trainer"]["model"])
    model_file = storage.join(ctx.out_dir, FILENAME)
    save_autoencoder(model_file, model, state["scale"], state["shift"], state["step"])
    tracking.log_artifact(ctx.tracking, model_file, "checkpoint")
    tracking.log_metrics(ctx.tracking, _normalisation_metrics(state["scale"], state["shift"]), state["step"])
    params = sum(p.numel() for p in model.parameters())
    print(
        f"[train_autoencoder] {params / 1e6:.2f}M parameters; latent scale {_rounded(state['scale'])} "
        f"shift {_rounded(state['shift'])}; held-out PSNR {state['heldout_psnr']:.2f} dB "
        f"at step {state['step']}"
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
    import ray.train.torch

    train = cfg["train"]
    session = ray_training.start_worker(cfg, train)
    model = ray.train.torch.prepare_model(VideoAutoencoder(_model_config(cfg["model"])))
    discriminator = ray.train.torch.prepare_model(
        build_discriminator(
            cfg["loss"]["discriminator"],
            num_layers=cfg["loss"]["disc_layers"],
            base_channels=cfg["loss"]["disc_channels"],
        )
    )
    loss = AutoencoderLoss(_loss_config(cfg["loss"]), _perceptual(cfg)).to(session.device)
    trainer = AutoencoderTrainer(
        model,
        discriminator,
        loss,
        lr=train["lr"],
        betas=tuple(train["betas"]),
        grad_clip=train["grad_clip"],
        sample_posterior=train["sample_posterior"],
        autocast_dtype=session.autocast_dtype(train["precision"]),
        seed=train["seed"] + session.rank,
    )
    ray_training.compile_network(trainer.model, train)  # after the trainer: see its docstring
    restored = ray_training.restore(session)
    if restored is not None:
        trainer.load_state_dict(restored["trainer"])
    heldout = _heldout_batch(cfg, session.device) if session.rank == 0 else None

    def state(step: int, final: bool) -> dict:
        payload = {"trainer": trainer.state_dict()}
        if final:
            payload["heldout_psnr"] = psnr(heldout, trainer.reconstruct(heldout))
            payload["scale"], payload["shift"] = _normalisation(trainer.autoencoder, cfg, session.device)
        return payload

    ray_training.train_steps(
        session,
        start=session.resumed_from,
        train=train,
        loader=lambda segment, batches: _loader(
            cfg, cfg["train_shards"], epoch=segment, batches=batches, rank=session.rank, world=session.world
        ),
        step=trainer.step,
        state=state,
        preview=lambda step: _preview(trainer, heldout, session, step),
    )


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


def _preview(trainer: AutoencoderTrainer, heldout: torch.Tensor, session: WorkerSession, step: int) -> dict:
    recon = trainer.reconstruct(heldout)
    strip = torch.cat([heldout, recon], dim=-1)  # original | reconstruction, side by side
    frames = rearrange(strip, "b c t h w -> t (b h) w c")
    frames = ((frames.float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    ray_training.log_video(session, frames, f"recon_step{step:07d}.mp4")
    return {"heldout_psnr": psnr(heldout, recon)}


def _rounded(value: float | list[float]) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "[" + ", ".join(f"{v:.4f}" for v in value) + "]"


def _normalisation_metrics(scale: float | list[float], shift: float | list[float]) -> dict[str, float]:
    if isinstance(scale, float):
        return {"latent_scale": scale, "latent_shift": shift}
    return {
        f"latent_{name}/{c}": v
        for name, values in (("scale", scale), ("shift", shift))
        for c, v in enumerate(values)
    }


@torch.no_grad()
def _normalisation(model: VideoAutoencoder, cfg: dict, device: torch.device) -> tuple:
    """scale = 1/std, shift = -mean of posterior means over training clips (not hard-coded),
    over all channels or per channel (`autoencoder.train.latent_normalisation`)."""
    batch_size = cfg["train"]["batch_size"]
    batches = max(1, cfg["train"]["normalisation_clips"] // batch_size)
    loader = _loader(cfg, cfg["train_shards"], epoch=0, batches=batches, num_workers=0, seed=777)
    model.eval()
    latents = [model.encode(batch.to(device)).mode().float().cpu() for batch in loader]
    per_channel = cfg["train"]["latent_normalisation"] == "channel"
    return latent_normalisation(torch.cat(latents), per_channel=per_channel)


STAGE = Stage(
    name="train_autoencoder",
    run=run,
    sections=("data", "autoencoder"),
    inputs=("shard",),
    description="3D KL video autoencoder (LVDM §3.1) with LPIPS + hinge GAN loss, on Ray Train",
)
