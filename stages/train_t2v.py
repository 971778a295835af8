"""Stage `train_t2v`: the text-to-video model of LVDM §5 on Ray Train.

The network is `diffusion.unet` (the T2V layout: `temporal_transformer`, `context_dim` = the
text width); its spatial layers start from Stable Diffusion's UNet and its temporal layers as
the identity (§5). Each step: a batch of latent windows of `cache_t2v_latents` with their
captions, the captions through the frozen CLIP text encoder, caption dropout to the empty
caption (`t2v.caption_dropout`, default 0.1), the ε-prediction loss. The default trains every
layer, as the paper does; `t2v.freeze_spatial` trains the temporal layers alone (AnimateDiff),
which keeps SD's image quality for a fraction of the optimiser memory.

Long text-to-video (issue 18): with `t2v.cond_frames` > 0 text joins §3.3's mask conditioning.
The UNet gets the mask input channel and the noise-level embedding of the prediction network;
each training window has its first `cond_frames` latents given with probability `t2v.p_cond`
(conditional latent perturbation up to `t2v.max_noise_level`), and caption dropout is drawn
apart from the mask, so the one network learns ε with and without frames, with and without the
caption: what continuing a video with classifier-free text guidance asks of it
(`stages.t2v_model`). SD's weights then go into the unconditional layout first and are copied
over (`init_from_unconditional`: zero mask weights, zero noise-level embedding), so step 0 is
still SD on every frame. With `t2v.key_stride` > 1 as well, the one network holds all three of
§3.3's roles as `train_pred.roles` does (`diffusion_stage.trainer_windows`): first windows from
the caption alone and continuations, each at stride 1 and at the key stride (a stride
embedding, zero at first, tells it which), and fills between keys `key_stride` apart, so its
long videos can be hierarchical.

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
from dataclasses import asdict
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
from lvdm.unet import UNet3D, init_from_unconditional
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
    trainer_windows,
    window_of,
)
from stages.t2v_model import SD_VAE, VIDEO_AUTOENCODER, load_decoder, long_video_settings, open_text_encoder
from stages.unet_file import FILENAME

RANDOM_TEXT_ENCODER = "text_encoder"  # the folder, in the stage's, of a `t2v.random_text_encoder`
RANDOM_TEXT_WEIGHTS = "model.safetensors"  # published last: its presence marks the folder complete
STEM = "input_blocks.0.0.weight"  # the first convolution, which reads the mask channel


def run(ctx: StageContext) -> dict:
    t2v = ctx.config.t2v
    own_latents = "cache_latents" in ctx.inputs
    source = "cache_latents" if own_latents else "cache_t2v_latents"
    cache = ctx.inputs[source]
    train_shards, heldout_shards = latent_shards(cache, source)
    configured = ctx.config.diffusion.unet.model_dump(mode="json")
    window = latent_shape(train_shards, t2v.frames)  # one window read here, not a UNet error in a worker
    check_span(train_shards, t2v)
    check_latent_channels(window[0], configured, source, cache)
    if t2v.cond_frames:
        check_noise_level(t2v.max_noise_level, ctx.config.sampling.noise_level)
    kwargs = network_kwargs(configured, t2v)
    if kwargs["context_dim"] is None:
        raise ValueError("train_t2v: diffusion.unet.context_dim is null; set it to the text encoder's width")
    text_folder = text_encoder_folder(t2v, ctx.out_dir)
    width = open_text_encoder(text_folder).width  # fails here, naming the folder, if absent
    if width != kwargs["context_dim"]:
        raise ValueError(
            f"train_t2v: the text encoder in {text_folder} is {width} wide but diffusion.unet.context_dim="
            f"{kwargs['context_dim']}; set diffusion.unet.context_dim={width}"
        )
    print(f"[{ctx.name}] {describe_unet(kwargs, t2v_task(t2v))}")
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
        "task": asdict(t2v_task(t2v)),
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
        "cond_frames": t2v.cond_frames,  # > 0: the model continues its windows (stages.t2v_model)
        "key_stride": t2v.key_stride,  # > 1: and fills between keys this far apart (hierarchical)
    }


def t2v_task(t2v) -> DiffusionTask:
    """The T2V model as the diffusion stages' task: one window from the caption alone, or with
    `cond_frames` the prediction network's masks and perturbation (§3.3) beside the caption."""
    if not t2v.cond_frames:
        return DiffusionTask(kind="uncond", frames=t2v.frames)
    hierarchical = t2v.key_stride > 1
    return DiffusionTask(
        kind="pred",
        frames=t2v.frames,
        cond_frames=t2v.cond_frames,
        p_cond=t2v.p_cond,
        max_noise_level=t2v.max_noise_level,
        latent_stride=t2v.key_stride,
        strides=(1, t2v.key_stride) if hierarchical else (),
        roles=("uncond", "pred", "interp") if hierarchical else (),
    )


def network_kwargs(unet: dict, t2v) -> dict:
    """`UNet3D` kwargs of the T2V network: `diffusion.unet` as configured, plus with
    `t2v.cond_frames` the mask input channel and the noise-level embedding (s in 0..s_max).

    Unlike `diffusion_stage.unet_kwargs`, `temporal_length` stays as configured: the T2V layout's
    relative-position tables are the unconditional network's, which SD-initialised training and
    a model trained without `cond_frames` share."""
    if not t2v.cond_frames:
        return dict(unet)
    kwargs = unet | {"in_channels": unet["in_channels"] + 1, "max_noise_level": t2v.max_noise_level}
    if t2v.key_stride > 1:
        kwargs["max_stride"] = t2v.key_stride
    return kwargs


def check_span(shards: list[str], t2v) -> None:
    """A hierarchical network's key windows span `1 + (frames − 1) · key_stride` latents of one
    clip: clips shorter than that would fail in a worker's loader, after the cluster started."""
    if t2v.key_stride <= 1:
        return
    span = 1 + (t2v.frames - 1) * t2v.key_stride
    try:
        latent_shape(shards, span)
    except RuntimeError:  # the loader's "no usable sample": every clip too short
        raise ValueError(
            f"train_t2v: t2v.key_stride={t2v.key_stride} with t2v.frames={t2v.frames} needs clips of {span} "
            f"latents (windows of {t2v.frames} keys {t2v.key_stride} apart) but every cached clip "
            f"({shards[0]}, ...) is shorter; lower t2v.key_stride or t2v.frames, or shard longer clips "
            "(data.frames)"
        ) from None


def check_noise_level(max_noise_level: int, noise_level: int) -> None:
    """Continuations are sampled with the given latents perturbed to `sampling.noise_level`: a level
    the noise-level embedding has no row for would fail at the first preview, after training."""
    if not 0 <= noise_level <= max_noise_level:
        raise ValueError(
            f"train_t2v: sampling.noise_level={noise_level} but t2v.max_noise_level={max_noise_level}: "
            f"set sampling.noise_level to at most {max_noise_level} (official 100 of 250)"
        )


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
        new = load_sd_weights(network, cfg["unet_weights"])
        if cfg["freeze_spatial"]:
            trained = {name.rsplit(".", 1)[0] for name in new}
            for name, parameter in network.named_parameters():
                parameter.requires_grad_(name.rsplit(".", 1)[0] in trained)
    elif cfg["freeze_spatial"]:
        raise ValueError("t2v.freeze_spatial needs SD weights to freeze: set t2v.unet_weights")
    return network


def load_sd_weights(network: UNet3D, path: str) -> list[str]:
    """SD's UNet into `network`'s spatial layers; returns the tensors SD does not give, which
    `freeze_spatial` trains.

    A continuing network (mask channel, noise-level embedding) has a stem SD's does not fit:
    SD goes into its unconditional twin, copied over by `init_from_unconditional` (zero weights on
    the mask channel, zero noise-level embedding), the same function as SD at step 0. Its stem then
    counts as new too: frozen, its mask weights would stay zero and the frames given unread."""
    config = network.config
    if config.in_channels == config.out_channels:
        return load_sd_unet(network, read_sd_unet(path))
    twin = UNet3D(**(asdict(config) | {"in_channels": config.out_channels, "max_noise_level": 0}))
    temporal = load_sd_unet(twin, read_sd_unet(path))
    init_from_unconditional(network, twin.state_dict())
    embedding = [name for name in network.state_dict() if name.startswith("noise_level_embed.")]
    return temporal + embedding + [STEM]


def _train_loop(cfg: dict) -> None:
    """One Ray Train worker: its latent shards, the frozen text encoder, the DDP-wrapped UNet."""
    import ray.train.torch

    train = cfg["train"]
    session = ray_training.start_worker(cfg, train)
    text = open_text_encoder(cfg["text_encoder"]).to(session.device)
    null_context = text.encode([""])[0]
    schedule = schedule_of(cfg["schedule"])
    task = DiffusionTask(**cfg["task"])
    trainer = TextDiffusionTrainer(
        ray.train.torch.prepare_model(build_network(cfg)),
        schedule,
        null_context=null_context,
        caption_dropout=cfg["caption_dropout"],
        **trainer_windows(task),  # masks, strides, roles; none: one window from the caption alone
        max_noise_level=task.max_noise_level,
        lr=train["lr"],
        weight_decay=train["weight_decay"],
        grad_clip=train["grad_clip"],
        ema_decay=train["ema_decay"],
        lr_schedule=train["lr_schedule"],
        total_steps=train["steps"],
        warmup_steps=train["warmup_steps"],
        loss_type=cfg["loss_type"],
        loss_weighting=train["loss_weighting"],
        min_snr_gamma=train["min_snr_gamma"],
        autocast_dtype=session.autocast_dtype(train["precision"]),
        seed=train["seed"] + session.rank,
    )
    scale, shift = cfg["scale"], cfg["shift"]

    def step(batch, global_step: int) -> dict[str, float]:
        return trainer.step(normalise(batch.latents, scale, shift), text.encode(batch.captions), global_step)

    frames, stride = window_of(task, trainer)
    train_latent_steps(
        session,
        trainer,
        train,
        shards=cfg["train_shards"],
        frames=frames,
        stride=stride,
        captions=True,
        step=step,
        previewer=lambda: Previewer(cfg, session, text, null_context),
        snapshot=snapshot_writer(cfg, trainer),
    )


class Previewer:
    """Rank 0's previews: held-out captions sampled with guidance, decoded, logged as mp4 + their captions.

    A continuing model (`t2v.cond_frames`) previews what it is trained for: each held-out clip's
    first latents given with its caption, the rest of the window sampled, beside the true clip
    (left), with the latent MSE of the sampled frames."""

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
        self.heldout = normalise(batch.latents, cfg["scale"], cfg["shift"]).to(session.device)
        self.cond_frames = cfg["task"]["cond_frames"]
        self.decode = load_decoder(cfg["decoder"]["kind"], cfg["decoder"]["path"], session.device).decode

    @torch.no_grad()
    def __call__(self, network: torch.nn.Module, step: int) -> dict[str, float]:
        denoiser = text_guided(network, self.context, self.null_context, self.cfg["guidance_scale"])
        generator = torch.Generator(self.session.device).manual_seed(step)
        if self.cond_frames:
            sample = self._continuation(denoiser, generator)
            panels = [self.heldout, sample]  # ground truth | sample
        else:
            sampling = self.cfg["sampling"]
            sample = sample_latents(
                denoiser,
                self.shape,
                self.schedule,
                sampler=sampling["sampler"],
                steps=sampling["steps"],
                eta=sampling["eta"],
                generator=generator,
                device=self.session.device,
            )
            panels = [sample]
        video = torch.cat([self._decode(panel) for panel in panels], dim=-1)
        frames = rearrange(video, "b c t h w -> t (b h) w c")
        frames = ((frames.float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        name = f"t2v_step{step:07d}"
        ray_training.log_video(self.session, frames, f"{name}.mp4")
        if self.session.log is not None:  # the preview's prompts, top to bottom
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / f"{name}.json"
                path.write_text(json.dumps({"captions": self.captions}, indent=1))
                tracking.log_artifact(self.session.log, path, "previews")
        metrics = {"preview/sample_std": sample.std().item()}
        if self.cond_frames:
            sampled = (sample - self.heldout)[:, :, self.cond_frames :]
            metrics["preview/latent_mse"] = sampled.pow(2).mean().item()
        return metrics

    def _continuation(self, denoiser, generator: torch.Generator) -> torch.Tensor:
        """The held-out windows continued from their first `cond_frames` latents and their captions."""
        from lvdm.continuation import continue_latents

        return continue_latents(
            denoiser,
            self.heldout[:, :, : self.cond_frames],
            self.schedule,
            clip=self.shape[2],
            latents=self.shape[2],
            sampling=long_video_settings(self.cfg["sampling"]),
            generator=generator,
        )

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(denormalise(latents, self.cfg["scale"], self.cfg["shift"])).clamp(-1, 1)


STAGE = Stage(
    name="train_t2v",
    run=run,
    sections=("diffusion", "t2v"),
    # SD's latents (the paper's §5 model) or the pipeline's own video autoencoder's.
    one_of=(("cache_t2v_latents", "cache_latents"),),
    description="text-to-video latent diffusion (LVDM §5): SD-initialised UNet, frozen CLIP text",
)
