"""What the three diffusion stages share (`train_uncond`, `train_pred`, `train_interp`).

They differ only in a `DiffusionTask`: which frames are given (none; the first
`cond_frames`; the first and last), how far apart the latent frames of a training window lie,
and the conditional-latent-perturbation ceiling. Everything else is here once: the network
they train (derived from `diffusion.unet`), the latent loader over `cache_latents`' shards,
the Ray Train worker loop (through `stages.ray_training`), the decoded mp4 previews and the
weights file. `train_t2v` shares the pieces that are not about the task: the latent shards of
its cache (`latent_shards`), the step loop after the trainer is built (`train_latent_steps`)
and the EMA weights file (`save_ema_unet`, and the `snapshot_every` snapshots beside it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from einops import rearrange

from data_prep import storage
from lvdm.autoencoder import denormalise, normalise
from lvdm.diffusion.masks import frames_mask, interpolation_mask, prediction_mask
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion.strides import window_span
from lvdm.diffusion_training import DiffusionTrainer, TimestepBuckets, WindowRole
from lvdm.unet import UNet3D, init_from_unconditional
from stages import ray_training, tracking
from stages.contract import StageContext
from stages.ray_training import WorkerSession
from stages.unet_file import FILENAME, read_unet, save_unet

Kind = Literal["uncond", "pred", "interp"]
SNAPSHOTS = "snapshots"


@dataclass(frozen=True)
class DiffusionTask:
    kind: Kind
    frames: int  # latent frames per training window
    latent_stride: int = 1
    cond_frames: int = 0  # prediction: the first k latents are given
    p_cond: float = 0.0
    max_noise_level: int = 0
    # Prediction: the latent strides of its training windows, told to a stride embedding
    # (issue 21); () trains at latent_stride alone with no embedding (the release's model).
    strides: tuple[int, ...] = ()
    # Prediction: the roles of a shared network (§3.3's masks; `train_pred.roles`), e.g.
    # ("uncond", "pred", "interp"); () is the prediction network alone.
    roles: tuple[str, ...] = ()

    @property
    def interp_frames(self) -> int:
        """A shared network's interpolation windows: the keys and the fills between them."""
        return self.latent_stride + 1

    @property
    def window_length(self) -> int:
        """The longest window the network is trained on (its relative-position tables)."""
        return max(self.frames, self.interp_frames) if "interp" in self.roles else self.frames

    @property
    def sample_stride(self) -> int | None:
        """The stride to tell the network when it samples windows like its held-out ones."""
        return self.latent_stride if self.strides else None

    def given(self, frames: int | None = None) -> list[int]:
        """Indices of the conditioning latents at sampling time (§3.3)."""
        frames = frames or self.frames
        if self.kind == "pred":
            return list(range(self.cond_frames))
        if self.kind == "interp":
            return [0, frames - 1]
        return []


def unet_kwargs(unet: dict, task: DiffusionTask) -> dict:
    """`UNet3D` kwargs of the task's network: the unconditional one as configured; the
    conditional ones with a mask input channel, the noise-level embedding (s ∈ [0, s_max])
    and relative-position tables as long as their clip (official: 4 and 5 latents)."""
    kwargs = dict(unet)
    if task.kind != "uncond":
        kwargs |= {
            "in_channels": unet["in_channels"] + 1,
            "max_noise_level": task.max_noise_level,
            "temporal_length": task.window_length,
        }
    if task.strides:
        kwargs["max_stride"] = max(task.strides)
    return kwargs


def schedule_of(schedule: dict) -> NoiseSchedule:
    return NoiseSchedule.linear(
        timesteps=schedule["timesteps"],
        linear_start=schedule["linear_start"],
        linear_end=schedule["linear_end"],
    )


def describe_unet(kwargs: dict, task: DiffusionTask) -> str:
    """Parameter count of the task's network, counted on the meta device (no memory)."""
    with torch.device("meta"):
        params = sum(p.numel() for p in UNet3D(**kwargs).parameters())
    roles = f", roles {'/'.join(task.roles)}" if task.roles else ""
    return (
        f"UNet3D ({task.kind}{roles}): {params:,} parameters; "
        f"windows of {task.frames} latents at stride {task.latent_stride}"
    )


def run_training(ctx: StageContext, task: DiffusionTask, section, init_from: str | None = None) -> dict:
    """Driver side of a diffusion stage: resolve inputs, fit on Ray Train, write `unet.pt`."""
    cache = ctx.inputs["cache_latents"]
    train_shards, heldout_shards = latent_shards(cache, "cache_latents")
    diffusion = ctx.config.diffusion
    kwargs = unet_kwargs(diffusion.unet.model_dump(mode="json"), task)
    print(f"[{ctx.name}] {describe_unet(kwargs, task)}")

    loop_config = {
        "task": asdict(task),
        "unet": kwargs,
        "schedule": diffusion.schedule.model_dump(),
        "loss_type": diffusion.loss_type,
        "train": section.train.model_dump(),
        "sampling": ctx.config.sampling.model_dump(),
        "train_shards": train_shards,
        "heldout_shards": heldout_shards,
        "scale": cache["outputs"]["scale"],
        "shift": cache["outputs"]["shift"],
        "autoencoder": cache["outputs"]["autoencoder"],
        "init_from": init_from,
    }
    state = ray_training.fit(ctx, _train_loop, loop_config, section.train)
    save_ema_unet(ctx, kwargs, state)
    final_loss = state.get("final_loss")
    return {
        "unet": FILENAME,
        "snapshots": kept_snapshots(ctx, section.train),
        "unet_config": kwargs,
        "task": asdict(task),
        "steps": state["step"],
        "resumed_from_step": state["resumed_from_step"],
        "final_loss": final_loss,
        "parameters": sum(v.numel() for v in state["trainer"]["ema"]["model"].values()),
        "scale": cache["outputs"]["scale"],
        "shift": cache["outputs"]["shift"],
        "autoencoder": cache["outputs"]["autoencoder"],
    }


def latent_shards(cache: dict, source: str) -> tuple[list[str], list[str]]:
    """The train shards of the latent cache stage `source` (its manifest `cache`) and the held-out
    ones the previews sample from: the test split's, else the train shards."""
    shards = cache["outputs"]["shards"]
    train = [storage.join(cache["out_dir"], s) for s in shards.get("train", [])]
    if not train:
        raise ValueError(f"{source} at {cache['out_dir']} wrote no train latent shards; check data.splits")
    return train, [storage.join(cache["out_dir"], s) for s in shards.get("test", [])] or train


def save_ema_unet(ctx: StageContext, kwargs: dict, state: dict) -> str:
    """The trained network's EMA weights (what every sampler uses) as the stage's weights file,
    also logged to MLflow; returns its location."""
    unet_file = storage.join(ctx.out_dir, FILENAME)
    save_unet(unet_file, kwargs, state["trainer"]["ema"]["model"], state["step"])
    tracking.log_artifact(ctx.tracking, unet_file, "checkpoint")
    print(f"[{ctx.name}] {state['step']} steps; EMA weights in {unet_file}")
    return unet_file


def snapshot_name(step: int) -> str:
    """Where `train.snapshot_every` keeps the EMA weights of `step`, relative to the stage folder."""
    return f"{SNAPSHOTS}/unet-step-{step:07d}.pt"


def kept_snapshots(ctx: StageContext, train: Any) -> list[dict]:
    """`{step, file}` of each snapshot of a finished stage, for the stage's record: those its
    `snapshot_every` asked for and that exist (a stage finished before the option was set has
    none; the option is out of the cache key)."""
    every = train.snapshot_every
    steps = range(every, train.steps + 1, every) if every else []
    return [
        {"step": s, "file": snapshot_name(s)}
        for s in steps
        if storage.is_file(storage.join(ctx.out_dir, snapshot_name(s)))
    ]


def snapshot_writer(cfg: dict, trainer: Any) -> Callable[[int], None]:
    """Rank 0's `snapshot(step)`: the trainer's EMA network as a weights file of the stage's own
    format, under the stage folder (atomic: a killed write leaves no partial file)."""

    def snapshot(step: int) -> None:
        path = storage.join(cfg["out_dir"], snapshot_name(step))
        save_unet(path, cfg["unet"], trainer.ema.model.state_dict(), step)

    return snapshot


def train_latent_steps(
    session: WorkerSession,
    trainer: DiffusionTrainer,
    train: dict,
    *,
    shards: list[str],
    frames: int,
    stride: int = 1,
    captions: bool = False,
    step: Callable[[Any, int], dict[str, float]],
    previewer: Callable[[], Callable[[torch.nn.Module, int], dict[str, float]]],
    snapshot: Callable[[int], None] | None = None,
) -> None:
    """A worker's loop once its trainer is built, the same for every latent diffusion stage:
    resume the trainer from the newest checkpoint; read this rank's batches of latent windows
    (`frames` every `stride`, with their `captions` for text-to-video) from `shards`; run
    `step(batch, global_step)` with its per-timestep losses gathered into buckets (logged with
    the metrics); checkpoint the trainer's state and last loss; preview the EMA network on rank 0
    (`previewer()` builds it there, after the resume)."""
    from data_prep.loader import latent_window_loader

    def loader(segment: int, batches: int) -> Iterable[Any]:
        return latent_window_loader(
            shards,
            frames=frames,
            stride=stride,
            batch_size=train["batch_size"],
            batches_per_epoch=batches,
            rank=session.rank,
            world_size=session.world,
            num_workers=train["loader_workers"],
            seed=train["seed"],
            epoch=segment,
            captions=captions,
        )

    restored = ray_training.restore(session)
    if restored is not None:
        trainer.load_state_dict(restored["trainer"])
    buckets = TimestepBuckets(trainer.schedule.timesteps)
    preview = previewer() if session.rank == 0 else None
    last: dict[str, float] = {}

    def logged_step(batch: Any, global_step: int) -> dict[str, float]:
        logs = step(batch, global_step)
        buckets.add(trainer.last_timesteps, trainer.last_losses)
        last.update(logs)
        return logs

    ray_training.train_steps(
        session,
        start=session.resumed_from,
        train=train,
        loader=loader,
        step=logged_step,
        state=lambda _step, _final: {"trainer": trainer.state_dict(), "final_loss": last.get("loss")},
        preview=lambda current: preview(trainer.ema.model, current),
        items_name="latents_per_s",
        metrics=buckets.pop,
        snapshot=snapshot,
    )


def _train_loop(cfg: dict) -> None:
    """One Ray Train worker: its own latent shards, DDP-wrapped UNet, EMA, checkpoints from rank 0."""
    import ray.train.torch

    train, task = cfg["train"], DiffusionTask(**cfg["task"])
    session = ray_training.start_worker(cfg, train)
    network = UNet3D(**cfg["unet"])
    if cfg["init_from"]:
        # Paper §4.1: prediction and interpolation start from the unconditional model's EMA weights.
        init_from_unconditional(network, read_unet(cfg["init_from"])["state_dict"])
    schedule = schedule_of(cfg["schedule"])
    trainer = DiffusionTrainer(
        ray.train.torch.prepare_model(network),
        schedule,
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
        max_noise_level=task.max_noise_level,
        autocast_dtype=session.autocast_dtype(train["precision"]),
        seed=train["seed"] + session.rank,
        **trainer_windows(task),
    )
    ray_training.compile_network(trainer.model, train)  # after the trainer: see its docstring
    scale, shift = cfg["scale"], cfg["shift"]

    def step(batch: torch.Tensor, global_step: int) -> dict[str, float]:
        return trainer.step(normalise(batch, scale, shift), global_step)

    frames, stride = window_of(task, trainer)
    train_latent_steps(
        session,
        trainer,
        train,
        shards=cfg["train_shards"],
        frames=frames,
        stride=stride,
        step=step,
        previewer=lambda: Previewer(cfg, task, session),
        snapshot=snapshot_writer(cfg, trainer),
    )


def window_of(task: DiffusionTask, trainer: DiffusionTrainer) -> tuple[int, int]:
    """(frames, stride) of the loader's windows: the task's own, or for a stride-aware or shared
    network whole spans of consecutive latents, which the trainer cuts per example."""
    if task.roles:
        # As long as the longest role needs: each step's role cuts its own window.
        return max(role.span for role in trainer.roles), 1
    if task.strides:
        # The trainer cuts each example's window at its own stride (`lvdm.diffusion.strides`).
        return window_span(task.frames, max(task.strides)), 1
    return task.frames, task.latent_stride


def trainer_windows(task: DiffusionTask) -> dict:
    """`DiffusionTrainer` options for the task's windows and masks: one role, or the roles of a
    shared network. A shared network's conditional roles are always conditioned (its
    unconditional steps are its own role, drawn as often as each other), its interpolation
    windows fill between keys `latent_stride` apart (consecutive latents, stride 1 to the
    embedding), its unconditional and prediction windows take every stride it is told."""
    if not task.roles:
        return {"mask_sampler": mask_sampler(task), "strides": task.strides or None, "frames": task.frames}
    k = task.cond_frames

    def nothing(b: int, frames: int, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(b, frames, dtype=torch.bool)

    def predict(b: int, frames: int, generator: torch.Generator) -> torch.Tensor:
        return prediction_mask(b, frames, k=k, p=1.0, generator=generator)

    def interpolate(b: int, frames: int, generator: torch.Generator) -> torch.Tensor:
        return interpolation_mask(b, frames, p=1.0, generator=generator)

    strides = task.strides or None  # a shared network with keys far apart is stride-aware (config)
    table = {
        # Unconditional windows at every stride: a hierarchical video's first keys come from
        # this mode at the key stride, an autoregressive video's first clip at stride 1.
        "uncond": WindowRole(task.frames, nothing, strides),
        "pred": WindowRole(task.frames, predict, strides),
        "interp": WindowRole(task.interp_frames, interpolate),
    }
    return {"roles": [table[name] for name in task.roles]}


def mask_sampler(task: DiffusionTask):
    """The training mask of the task (§3.3), or None for the unconditional model."""
    if task.kind == "pred":
        return lambda b, frames, generator: prediction_mask(
            b, frames, k=task.cond_frames, p=task.p_cond, generator=generator
        )
    if task.kind == "interp":
        return lambda b, frames, generator: interpolation_mask(b, frames, p=task.p_cond, generator=generator)
    return None


class Previewer:
    """Rank 0's held-out previews: sample with the EMA network, decode, log an mp4.

    Unconditional: a grid of samples. Prediction / interpolation: the held-out clip's
    conditioning latents are given and the rest sampled, ground truth beside the sample,
    and the latent MSE on the sampled frames is logged.
    """

    def __init__(self, cfg: dict, task: DiffusionTask, session: WorkerSession) -> None:
        from data_prep.loader import latent_window_loader
        from stages.autoencoder_file import load_autoencoder

        self.task, self.session, self.sampling = task, session, cfg["sampling"]
        self.schedule = schedule_of(cfg["schedule"])
        self.scale, self.shift = cfg["scale"], cfg["shift"]
        self.autoencoder, _ = load_autoencoder(cfg["autoencoder"])
        self.autoencoder.to(session.device)
        loader = latent_window_loader(
            cfg["heldout_shards"],
            frames=task.frames,
            stride=task.latent_stride,
            batch_size=cfg["train"]["heldout_clips"],
            batches_per_epoch=1,
            seed=12345,
        )
        self.heldout = normalise(next(iter(loader)), self.scale, self.shift).to(session.device)

    @torch.no_grad()
    def __call__(self, network: torch.nn.Module, step: int) -> dict[str, float]:
        given = self.task.given()
        b = self.heldout.shape[0]
        mask = frames_mask(b, self.task.frames, given).to(self.session.device) if given else None
        generator = torch.Generator(self.session.device).manual_seed(step)
        sample = sample_latents(
            network,
            tuple(self.heldout.shape),
            self.schedule,
            sampler=self.sampling["sampler"],
            steps=self.sampling["steps"],
            eta=self.sampling["eta"],
            z_cond=self.heldout if given else None,
            mask=mask,
            noise_level=self.sampling["noise_level"] if given else 0,
            guidance_weight=self.sampling["guidance_weight"] if given else 0.0,
            generator=generator,
            stride=self.task.sample_stride,
        )
        metrics = {"preview/sample_std": sample.std().item()}
        panels = [sample]
        if given:
            free = ~mask  # (b t): the sampled frames
            error = (sample - self.heldout).pow(2).mean(dim=(1, 3, 4))  # (b t)
            metrics["preview/latent_mse"] = error[free].mean().item()
            panels = [self.heldout, sample]  # ground truth | sample
        video = torch.cat([self._decode(p) for p in panels], dim=-1)
        frames = rearrange(video, "b c t h w -> t (b h) w c")
        frames = ((frames.float().cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
        ray_training.log_video(self.session, frames, f"{self.task.kind}_step{step:07d}.mp4")
        return metrics

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(denormalise(latents, self.scale, self.shift)).clamp(-1, 1)
