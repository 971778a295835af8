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
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from data_prep import storage
from lvdm.autoencoder import denormalise, normalise
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.text_guidance import text_guided
from lvdm.pretrained.stable_diffusion import DIFFUSERS_UNET_WEIGHTS, load_sd_unet, read_sd_unet
from lvdm.text_diffusion_training import TextDiffusionTrainer
from lvdm.text_encoder import TextEncoder
from lvdm.unet import UNet3D
from stages import ray_training, tracking
from stages.contract import Stage, StageContext
from stages.diffusion_stage import (
    DiffusionTask,
    describe_unet,
    kept_snapshots,
    latent_shards,
    save_ema_unet,
    schedule_of,
    snapshot_writer,
    train_latent_steps,
)
from stages.t2v_model import SD_VAE, VIDEO_AUTOENCODER, load_decoder, open_text_encoder
from stages.unet_file import FILENAME

RANDOM_TEXT_ENCODER = "text_encoder"  # the folder, in the stage's, of a `t2v.random_text_encoder`
RANDOM_TEXT_WEIGHTS = "model.safetensors"  # published last: its presence marks the folder complete


def run(ctx: StageContext) -> dict:
    t2v = ctx.config.t2v
    own_latents = "cache_latents" in ctx.inputs
    source = "cache_latents" if own_latents else "cache_t2v_latents"
    cache = ctx.inputs[source]
    train_shards, heldout_shards = latent_shards(cache, source)
    kwargs = ctx.config.diffusion.unet.model_dump(mode="json")
    window = latent_shape(train_shards, t2v.frames)  # one window read here, not a UNet error in a worker
    check_latent_channels(window[0], kwargs, source, cache)
    if kwargs["context_dim"] is None:
        raise ValueError("train_t2v: diffusion.unet.context_dim is null; set it to the text encoder's width")
    text_folder = text_encoder_folder(t2v, ctx.out_dir)
    width = open_text_encoder(text_folder).width  # fails here, naming the folder, if absent
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
    save_ema_unet(ctx, kwargs, state)
    return {
        "unet": FILENAME,
        "snapshots": kept_snapshots(ctx, t2v.train),
        "unet_config": kwargs,
        "steps": state["step"],
        "final_loss": state.get("final_loss"),
        "initialised_from": loop_config["unet_weights"],
        "text_encoder": text_folder,
        "autoencoder": decoder["path"],
        "decoder": decoder,
        "latent_shape": window,
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
        return build_random_text_encoder(t2v.random_text_encoder, storage.join(out_dir, RANDOM_TEXT_ENCODER))
    if t2v.stable_diffusion is None:
        raise ValueError("train_t2v: set t2v.text_encoder, t2v.random_text_encoder or t2v.stable_diffusion")
    return str(t2v.stable_diffusion)


def check_latent_channels(channels: int, unet: dict, source: str, cache: dict) -> None:
    """The UNet denoises the cached latents: `diffusion.unet.in_channels` and `out_channels` must be
    their channel count, or the first training step fails deep inside the network."""
    wrong = [key for key in ("in_channels", "out_channels") if unet[key] != channels]
    if not wrong:
        return
    whose = (
        "autoencoder.model.latent_channels" if source == "cache_latents" else "latent_channels of SD's vae/"
    )
    raise ValueError(
        f"train_t2v: the latents of {source} in {cache['out_dir']} have {channels} channels ({whose}) but "
        + ", ".join(f"diffusion.unet.{key}={unet[key]}" for key in wrong)
        + f"; set {' and '.join(f'diffusion.unet.{key}' for key in wrong)} to {channels}"
    )


def build_random_text_encoder(options, folder: storage.Location) -> str:
    """`t2v.random_text_encoder` written to `folder` (a local path or a URI in the workdir), once.

    It is built whole in a local scratch folder, then published file by file with the weights
    last, each file whole (`storage.upload`): a folder holding `model.safetensors` is complete,
    on a rerun after a kill as on an object store, which has no folder rename."""
    from lvdm.random_clip import write_random_clip

    folder = str(folder)
    if storage.is_file(storage.join(folder, RANDOM_TEXT_WEIGHTS)):
        return folder
    with tempfile.TemporaryDirectory(prefix="lvdm-clip-") as scratch:
        built = write_random_clip(Path(scratch), options.width, options.layers, options.heads, options.seed)
        files = [path for path in built.rglob("*") if path.is_file()]
        for path in sorted(files, key=lambda path: path.name == RANDOM_TEXT_WEIGHTS):
            storage.upload(path, storage.join(folder, path.relative_to(built).as_posix()))
    return folder


def latent_shape(shards: list[str], frames: int) -> list[int]:
    """`c t h w` of one training window: what a sampler of this model draws."""
    from data_prep.loader import latent_window_loader

    loader = latent_window_loader(shards, frames=frames, batch_size=1, batches_per_epoch=1, captions=True)
    batch = next(iter(loader))
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

    train = cfg["train"]
    session = ray_training.start_worker(cfg, train)
    text = open_text_encoder(cfg["text_encoder"]).to(session.device)
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
    scale, shift = cfg["scale"], cfg["shift"]

    def step(batch, global_step: int) -> dict[str, float]:
        return trainer.step(normalise(batch.latents, scale, shift), text.encode(batch.captions), global_step)

    train_latent_steps(
        session,
        trainer,
        train,
        shards=cfg["train_shards"],
        frames=cfg["frames"],
        captions=True,
        step=step,
        previewer=lambda: Previewer(cfg, session, text, null_context),
        snapshot=snapshot_writer(cfg, trainer),
    )


class Previewer:
    """Rank 0's previews: held-out captions sampled with guidance, decoded, logged as mp4 + their captions."""

    def __init__(self, cfg: dict, session, text: TextEncoder, null_context: torch.Tensor) -> None:
        from data_prep.loader import latent_window_loader

        self.cfg, self.session, self.null_context = cfg, session, null_context
        self.schedule = schedule_of(cfg["schedule"])
        batch = next(
            iter(
                latent_window_loader(
                    cfg["heldout_shards"],
                    frames=cfg["frames"],
                    batch_size=cfg["train"]["heldout_clips"],
                    batches_per_epoch=1,
                    seed=12345,
                    captions=True,
                )
            )
        )
        self.captions = batch.captions
        self.context = text.encode(self.captions)
        self.shape = tuple(batch.latents.shape)
        self.decode = load_decoder(cfg["decoder"]["kind"], cfg["decoder"]["path"], session.device).decode

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
