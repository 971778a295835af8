"""Stage `train_t2v`: the text-to-video model of LVDM §5 on Ray Train.

The network is `diffusion.unet` (the T2V layout: `temporal_transformer`, `context_dim` = the
text width); its spatial layers start from Stable Diffusion's UNet and its temporal layers as
the identity (§5). Each step: a batch of latent windows of `cache_t2v_latents` with their
captions, the captions through the frozen CLIP text encoder, caption dropout to the empty
caption (`t2v.caption_dropout`, default 0.1), the ε-prediction loss. The default trains every
layer, as the paper does; `t2v.freeze_spatial` trains the temporal layers alone (AnimateDiff),
which keeps SD's image quality for a fraction of the optimiser memory.

The latents come from `cache_t2v_latents` (SD's VAE per frame, the paper's §5) or, where the
pipeline lists `cache_latents` instead, from the pipeline's own video autoencoder with a fresh
UNet: the synthetic demo (`pipelines/bouncing_shapes_t2v.yaml`) learns text control that way in
minutes. Its text encoder is then `t2v.text_encoder`, or with `t2v.random_text_encoder` a
frozen, randomly initialised CLIP text transformer with CLIP's real vocabulary, built here in
the stage folder (`lvdm/random_clip.py`): a caption grammar of a few dozen words needs no
pretrained language model, only distinct, fixed tokens for the cross-attention to learn from,
and the model is then opened and sampled exactly as one conditioned on CLIP ViT-L/14 is.

The text encoder runs in the training loop rather than caching its output: CLIP-L's tokens
are 77 x 768 fp16 = 118 KB per caption, as much again as a 16x32x32x4 latent clip, and one
frozen forward per batch is small beside the UNet's (see the report of issue 18 for figures).
Previews: held-out captions sampled with classifier-free guidance (`t2v.guidance_scale`),
decoded by SD's VAE, logged with their captions as the file names' companions.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from data_prep import storage
from lvdm.autoencoder import denormalise, normalise
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.text_guidance import text_guided
from lvdm.diffusion_training import TimestepBuckets
from lvdm.pretrained.stable_diffusion import DIFFUSERS_UNET_WEIGHTS, load_sd_unet, read_sd_unet
from lvdm.text_diffusion_training import TextDiffusionTrainer
from lvdm.text_encoder import TextEncoder
from lvdm.unet import UNet3D
from stages import ray_training, tracking
from stages.contract import Stage, StageContext
from stages.diffusion_stage import DiffusionTask, describe_unet, schedule_of
from stages.t2v_model import SD_VAE, VIDEO_AUTOENCODER, load_decoder
from stages.unet_file import FILENAME, save_unet

RANDOM_TEXT_ENCODER = "text_encoder"  # the folder, in the stage's, of a `t2v.random_text_encoder`


def run(ctx: StageContext) -> dict:
    t2v = ctx.config.t2v
    own_latents = "cache_latents" in ctx.inputs
    cache = ctx.inputs["cache_latents" if own_latents else "cache_t2v_latents"]
    shards = cache["outputs"]["shards"]
    train_shards = [storage.join(cache["out_dir"], s) for s in shards.get("train", [])]
    if not train_shards:
        raise ValueError(f"cache_t2v_latents at {cache['out_dir']} wrote no train latent shards")
    heldout_shards = [storage.join(cache["out_dir"], s) for s in shards.get("test", [])] or train_shards
    kwargs = ctx.config.diffusion.unet.model_dump(mode="json")
    if kwargs["context_dim"] is None:
        raise ValueError("train_t2v: diffusion.unet.context_dim is null; set it to the text encoder's width")
    text_folder = text_encoder_folder(t2v, ctx.out_dir)
    width = TextEncoder.from_folder(text_folder).width  # fails here, naming the folder, if absent
    if width != kwargs["context_dim"]:
        raise ValueError(
            f"train_t2v: the text encoder in {text_folder} is {width} wide but diffusion.unet.context_dim="
            f"{kwargs['context_dim']}; set diffusion.unet.context_dim={width}"
        )
    print(f"[{ctx.name}] {describe_unet(kwargs, DiffusionTask(kind='uncond', frames=t2v.frames))}")
    decoder = {
        "kind": VIDEO_AUTOENCODER if own_latents else SD_VAE,
        "path": cache["outputs"]["autoencoder"] if own_latents else str(t2v.stable_diffusion),
    }
    loop_config = {
        "unet": kwargs,
        "schedule": ctx.config.diffusion.schedule.model_dump(),
        "loss_type": ctx.config.diffusion.loss_type,
        "train": t2v.train.model_dump(),
        "sampling": ctx.config.sampling.model_dump(),
        "frames": t2v.frames,
        "caption_dropout": t2v.caption_dropout,
        "guidance_scale": t2v.guidance_scale,
        "freeze_spatial": t2v.freeze_spatial,
        "text_encoder": text_folder,
        "unet_weights": sd_unet_weights(t2v),
        "decoder": decoder,
        "train_shards": train_shards,
        "heldout_shards": heldout_shards,
        "scale": cache["outputs"]["scale"],
        "shift": cache["outputs"]["shift"],
    }
    state = ray_training.fit(ctx, _train_loop, loop_config, t2v.train)
    unet_file = storage.join(ctx.out_dir, FILENAME)
    save_unet(unet_file, kwargs, state["trainer"]["ema"]["model"], state["step"])
    tracking.log_artifact(ctx.tracking, unet_file, "checkpoint")
    print(f"[{ctx.name}] {state['step']} steps; EMA weights in {unet_file}")
    return {
        "unet": FILENAME,
        "unet_config": kwargs,
        "steps": state["step"],
        "final_loss": state.get("final_loss"),
        "initialised_from": loop_config["unet_weights"],
        "text_encoder": text_folder,
        "autoencoder": decoder["path"],
        "decoder": decoder,
        "latent_shape": latent_shape(train_shards, t2v.frames),
        "scale": cache["outputs"]["scale"],
        "shift": cache["outputs"]["shift"],
        "guidance_scale": t2v.guidance_scale,
    }


def text_encoder_folder(t2v, out_dir: str) -> str:
    """`t2v.text_encoder`, else a frozen random CLIP built in the stage folder (`random_text_encoder`),
    else the SD folder's text_encoder/ + tokenizer/."""
    if t2v.text_encoder is not None:
        return str(t2v.text_encoder)
    if t2v.random_text_encoder is not None:
        from lvdm.random_clip import write_random_clip

        if storage.is_uri(out_dir):
            raise ValueError(
                "t2v.random_text_encoder is built in the stage folder, which must be local; on a "
                f"workdir at {out_dir} give t2v.text_encoder (a CLIP folder every worker can read)"
            )
        folder = Path(storage.join(out_dir, RANDOM_TEXT_ENCODER))
        if not folder.is_dir():  # built whole under another name, then renamed; the same on a rerun
            options = t2v.random_text_encoder
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            write_random_clip(partial, options.width, options.layers, options.heads, options.seed)
            partial.rename(folder)
        return str(folder)
    if t2v.stable_diffusion is None:
        raise ValueError("train_t2v: set t2v.text_encoder, t2v.random_text_encoder or t2v.stable_diffusion")
    return str(t2v.stable_diffusion)


def latent_shape(shards: list[str], frames: int) -> list[int]:
    """`c t h w` of one training window: what a sampler of this model draws."""
    from data_prep.captioned_latents import captioned_window_loader

    batch = next(iter(captioned_window_loader(shards, frames=frames, batch_size=1, batches_per_epoch=1)))
    return list(batch.latents.shape[1:])


def sd_unet_weights(t2v) -> str | None:
    """Where the spatial layers come from: `t2v.unet_weights`, else the SD folder's unet/, else None."""
    if t2v.unet_weights is not None:
        return str(t2v.unet_weights)
    folder = t2v.stable_diffusion
    return str(folder) if folder is not None and (folder / DIFFUSERS_UNET_WEIGHTS).is_file() else None


def build_network(cfg: dict) -> UNet3D:
    """The T2V UNet, SD's weights in its spatial layers (temporal ones at identity), frozen as asked."""
    network = UNet3D(**cfg["unet"])
    if cfg["unet_weights"]:
        temporal = load_sd_unet(network, read_sd_unet(cfg["unet_weights"]))
        if cfg["freeze_spatial"]:
            trained = {name.rsplit(".", 1)[0] for name in temporal}
            for name, parameter in network.named_parameters():
                parameter.requires_grad_(name.rsplit(".", 1)[0] in trained)
    elif cfg["freeze_spatial"]:
        raise ValueError("t2v.freeze_spatial needs SD weights to freeze: set t2v.unet_weights")
    return network


def _train_loop(cfg: dict) -> None:
    """One Ray Train worker: its latent shards, the frozen text encoder, the DDP-wrapped UNet."""
    import ray.train.torch

    from data_prep.captioned_latents import captioned_window_loader

    train = cfg["train"]
    session = ray_training.start_worker(cfg, train)
    text = TextEncoder.from_folder(cfg["text_encoder"]).to(session.device)
    null_context = text.encode([""])[0]
    schedule = schedule_of(cfg["schedule"])
    trainer = TextDiffusionTrainer(
        ray.train.torch.prepare_model(build_network(cfg)),
        schedule,
        null_context=null_context,
        caption_dropout=cfg["caption_dropout"],
        lr=train["lr"],
        weight_decay=train["weight_decay"],
        grad_clip=train["grad_clip"],
        ema_decay=train["ema_decay"],
        loss_type=cfg["loss_type"],
        autocast_dtype=session.autocast_dtype(train["precision"]),
        seed=train["seed"] + session.rank,
    )
    restored = ray_training.restore(session)
    if restored is not None:
        trainer.load_state_dict(restored["trainer"])
    scale, shift = cfg["scale"], cfg["shift"]
    buckets = TimestepBuckets(schedule.timesteps)
    last: dict[str, float] = {}

    def step(batch, global_step: int) -> dict[str, float]:
        logs = trainer.step(normalise(batch.latents, scale, shift), text.encode(batch.captions), global_step)
        buckets.add(trainer.last_timesteps, trainer.last_losses)
        last.update(logs)
        return logs

    def loader(segment: int, batches: int):
        return captioned_window_loader(
            cfg["train_shards"],
            frames=cfg["frames"],
            batch_size=train["batch_size"],
            batches_per_epoch=batches,
            rank=session.rank,
            world_size=session.world,
            num_workers=train["loader_workers"],
            seed=train["seed"],
            epoch=segment,
        )

    previewer = Previewer(cfg, session, text, null_context) if session.rank == 0 else None
    ray_training.train_steps(
        session,
        start=session.resumed_from,
        train=train,
        loader=loader,
        step=step,
        state=lambda _step, _final: {"trainer": trainer.state_dict(), "final_loss": last.get("loss")},
        preview=lambda current: previewer(trainer.ema.model, current),
        items_name="latents_per_s",
        metrics=buckets.pop,
    )


class Previewer:
    """Rank 0's previews: held-out captions sampled with guidance, decoded, logged as mp4 + their captions."""

    def __init__(self, cfg: dict, session, text: TextEncoder, null_context: torch.Tensor) -> None:
        from data_prep.captioned_latents import captioned_window_loader

        self.cfg, self.session, self.null_context = cfg, session, null_context
        self.schedule = schedule_of(cfg["schedule"])
        batch = next(
            iter(
                captioned_window_loader(
                    cfg["heldout_shards"],
                    frames=cfg["frames"],
                    batch_size=cfg["train"]["heldout_clips"],
                    batches_per_epoch=1,
                    seed=12345,
                )
            )
        )
        self.captions = batch.captions
        self.context = text.encode(self.captions)
        self.shape = tuple(batch.latents.shape)
        self.decode = load_decoder(cfg["decoder"]["kind"], cfg["decoder"]["path"], session.device)

    @torch.no_grad()
    def __call__(self, network: torch.nn.Module, step: int) -> dict[str, float]:
        sampling = self.cfg["sampling"]
        sample = sample_latents(
            text_guided(network, self.context, self.null_context, self.cfg["guidance_scale"]),
            self.shape,
            self.schedule,
            sampler=sampling["sampler"],
            steps=sampling["steps"],
            eta=sampling["eta"],
            generator=torch.Generator(self.session.device).manual_seed(step),
            device=self.session.device,
        )
        video = self.decode(denormalise(sample, self.cfg["scale"], self.cfg["shift"])).clamp(-1, 1)
        frames = rearrange(video, "b c t h w -> t (b h) w c")
        frames = ((frames.float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        name = f"t2v_step{step:07d}"
        ray_training.log_video(self.session, frames, f"{name}.mp4")
        if self.session.log is not None:  # the preview's prompts, top to bottom
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{name}.json"
                path.write_text(json.dumps({"captions": self.captions}, indent=1))
                tracking.log_artifact(self.session.log, path, "previews")
        return {"preview/sample_std": sample.std().item()}


STAGE = Stage(
    name="train_t2v",
    run=run,
    sections=("diffusion", "t2v"),
    # SD's latents (the paper's §5 model) or the pipeline's own video autoencoder's.
    one_of=(("cache_t2v_latents", "cache_latents"),),
    description="text-to-video latent diffusion (LVDM §5): SD-initialised UNet, frozen CLIP text",
)
