"""Pipeline-file sections of the diffusion models: the UNet, the schedule, the unconditional,
prediction and interpolation training stages, and text-to-video. Re-exported by
`pipelines/config.py`, which importers use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from pipelines.config_base import EXECUTION, ReadWhen, Section, TrainSection, _library_check


class UNetSection(Section):
    """`lvdm.unet.UNet3D`'s keyword arguments, one for one: `UNet3D(**section)` builds the
    unconditional network. Defaults are the official short-video network (548,904,580
    parameters). The prediction and interpolation networks are derived from it: one more
    input channel (the mask), the noise-level embedding and `temporal_length` = their clip
    length in latent frames."""

    in_channels: int = Field(4, ge=1, description="latent channels (the autoencoder's latent_channels)")
    out_channels: int = Field(4, ge=1)
    model_channels: int = Field(256, ge=1)
    channel_mult: tuple[int, ...] = Field((1, 2, 3, 4), min_length=1)
    num_res_blocks: int = Field(3, ge=1)
    attention_resolutions: tuple[int, ...] = Field(
        (2, 4, 8), description="downsampling factors whose level gets space-time attention"
    )
    temporal_attention_resolutions: tuple[int, ...] = Field(
        (), description="further factors whose level gets temporal attention only (frames see each other)"
    )
    num_heads: int = Field(4, ge=1)
    temporal_length: int = Field(4, ge=1, description="relative-position table radius, latent frames")
    norm_groups: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    use_checkpoint: bool = Field(False, description="gradient checkpointing: less memory, ~30% slower")
    max_noise_level: int = Field(0, ge=0, description="0 for the unconditional network")
    context_dim: int | None = Field(
        None, ge=1, description="cross-attention width (text-to-video); None = off"
    )
    transformer_depth: int = Field(1, ge=1)
    relative_key: Literal["standard", "official"] = Field(
        "standard",
        description="temporal attention's relative key term: 'official' = the released LVDM "
        "checkpoints' (paper pipelines); 'standard' = Shaw et al. (default: older unet.pt files, demo)",
    )
    use_scale_shift_norm: bool = Field(
        True, description="false: SD's ResBlocks (timestep embedding added), the text-to-video layout"
    )
    temporal_transformer: bool = Field(
        False, description="SD's spatial transformer with temporal attention inside (text-to-video)"
    )
    frame_group_norm: bool = Field(
        False, description="GroupNorm per frame: an SD-initialised network equals SD on every frame"
    )
    prediction: Literal["eps", "v"] = Field(
        "eps", description="network output: 'eps' the noise (the paper's), 'v' the velocity (issue 21)"
    )

    @model_validator(mode="after")
    def _builds(self) -> UNetSection:
        """`lvdm.unet.UNet3DConfig`'s own checks (norm_groups and num_heads dividing the level
        widths, attention factors that exist), here when the YAML is read."""
        from lvdm.unet import UNet3DConfig

        _library_check(UNet3DConfig, self.model_dump())
        return self


class ScheduleSection(Section):
    """The official "linear" schedule: betas = linspace(sqrt(start), sqrt(end), T)^2."""

    timesteps: int = Field(1000, ge=2)
    linear_start: float = Field(0.0015, gt=0, lt=1)
    linear_end: float = Field(0.0155, gt=0, lt=1)


class DiffusionSection(Section):
    unet: UNetSection = Field(default_factory=UNetSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    loss_type: Literal["l1", "l2"] = Field("l1", description="l1: official release; l2: the paper's L_simple")


def _scheduled(section: DiffusionTrainSection) -> bool:
    return section.lr_schedule != "constant" or section.warmup_steps > 0


def _weighted(section: DiffusionTrainSection) -> bool:
    return section.loss_weighting != "none"


class DiffusionTrainSection(TrainSection):
    lr: float = Field(6e-5, gt=0, description="official unconditional lr")
    # Hashed only when not the release's constant rate: a run trained without them keeps its key.
    lr_schedule: Annotated[Literal["constant", "cosine"], ReadWhen(_scheduled)] = Field(
        "constant",
        description="constant: lr at every step (official); cosine: from lr to 0 at `steps` "
        "(lvdm/lr_schedule.py), so `snapshot_every`'s step-S weights are no longer an S-step run's",
    )
    warmup_steps: Annotated[int, ReadWhen(_scheduled)] = Field(
        0, ge=0, description="ramp the rate linearly from 0 over the first N steps; 0: none"
    )
    # Hashed only when on, like the rate schedule.
    loss_weighting: Annotated[Literal["none", "min_snr"], ReadWhen(_weighted)] = Field(
        "none",
        description="none: each timestep as the target (eps/v) weighs it (official); min_snr: "
        "Min-SNR-gamma per example (lvdm.diffusion.loss.min_snr_weights)",
    )
    min_snr_gamma: Annotated[float, ReadWhen(_weighted)] = Field(
        5.0, gt=0, description="gamma of loss_weighting min_snr (Hang et al. 2023: 5)"
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW's default, as the official release")
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="sampling always uses the EMA weights")
    snapshot_every: Annotated[int | None, EXECUTION] = Field(
        None,
        ge=1,
        description="also keep the EMA weights every N steps (snapshots/unet-step-N.pt beside unet.pt), "
        "for a figure-against-steps curve (benchmarks/bench_goal_curves.py); off by default",
    )

    @model_validator(mode="after")
    def _warmup_within_steps(self) -> DiffusionTrainSection:
        if self.warmup_steps >= self.steps:
            raise ValueError(
                f"train.warmup_steps={self.warmup_steps} must be fewer than train.steps={self.steps}: "
                "lower warmup_steps or raise steps"
            )
        return self


class ConditionalTrainSection(DiffusionTrainSection):
    lr: float = Field(8e-5, gt=0, description="official prediction/interpolation lr")


class TrainUncondSection(Section):
    """The unconditional base model (LVDM §3.2) on random windows of latent frames."""

    frames: int = Field(4, ge=1, description="latent frames per training window (official: 4 = 16 frames)")
    train: DiffusionTrainSection = Field(default_factory=DiffusionTrainSection)


Role = Literal["uncond", "pred", "interp"]


class TrainPredSection(Section):
    """The prediction model (§3.3): first `cond_frames` latents given with probability `p_cond`,
    on latent windows subsampled by `latent_stride` so that its keys are far apart."""

    frames: int = Field(4, ge=2)
    latent_stride: int = Field(4, ge=1, description="official: every 4th latent (64 raw frames per window)")
    cond_frames: int = Field(1, ge=1)
    p_cond: float = Field(0.5, ge=0, le=1)
    max_noise_level: int = Field(250, ge=0, description="conditional latent perturbation s_max")
    stride_aware: bool = Field(
        True,
        description="train on windows at stride 1 and at latent_stride, told which (a stride embedding), "
        "so autoregressive videos move at the data's pace and hierarchical keys at the keys' pace; "
        "false: the release's model, keys only",
    )
    eval_clips: int = Field(8, ge=1, description="held-out clips for the does-it-predict check")
    # Hashed only when shared: the prediction network alone keeps the cache keys it had.
    roles: Annotated[list[Role], ReadWhen(lambda s: s.roles != ["pred"])] = Field(
        ["pred"],
        description="one network for several of §3.3's roles: [uncond, pred, interp] trains a shared "
        "network that samples first clips, continuations and fills (train_uncond and train_interp "
        "are then optional); [pred]: the prediction network alone, as the release",
    )
    train: ConditionalTrainSection = Field(default_factory=ConditionalTrainSection)

    @model_validator(mode="after")
    def _conditions_fewer_than_frames(self) -> TrainPredSection:
        if self.cond_frames >= self.frames:
            raise ValueError(f"cond_frames={self.cond_frames} must be below frames={self.frames}")
        if "pred" not in self.roles or len(set(self.roles)) != len(self.roles):
            raise ValueError(f"train_pred.roles={self.roles}: distinct roles, and pred among them")
        if self.roles != ["pred"] and self.latent_stride > 1 and not self.stride_aware:
            raise ValueError(
                "train_pred.roles: a shared network needs stride_aware: true, so that it knows the "
                "pace of its key windows from that of its consecutive ones"
            )
        return self


class TrainInterpSection(Section):
    """The interpolation model (§3.3): first and last latent given with probability `p_cond`;
    `frames` = the prediction model's latent_stride + 1 fills exactly between its keys."""

    frames: int = Field(5, ge=3)
    p_cond: float = Field(0.9, ge=0, le=1)
    max_noise_level: int = Field(250, ge=0)
    train: ConditionalTrainSection = Field(default_factory=ConditionalTrainSection)


class RandomTextEncoderSection(Section):
    """A frozen, randomly initialised CLIP text transformer with CLIP's real BPE vocabulary
    (`lvdm/random_clip.py`), built by `train_t2v` in its folder: for a dataset whose captions
    are a small fixed grammar (the synthetic demo), where no pretrained CLIP is at hand."""

    width: int = Field(64, ge=8, description="hidden width = diffusion.unet.context_dim")
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    seed: int = 0


def _continues(t2v: T2VSection) -> bool:
    """Whether a `t2v` section trains the continuing text model (`cond_frames` > 0)."""
    return t2v.cond_frames > 0


class T2VSection(Section):
    """Text-to-video (LVDM §5): SD's VAE per frame, frozen CLIP text, SD-initialised UNet, captions.

    `stable_diffusion` is a local SD 1.x folder in the diffusers layout (vae/, unet/,
    text_encoder/, tokenizer/); nothing is downloaded."""

    stable_diffusion: Path | None = Field(
        None, description="SD 1.x diffusers folder: vae/ (+ unet/, text_encoder/); required by the T2V stages"
    )
    text_encoder: Path | None = Field(
        None, description="CLIP text folder; None = stable_diffusion's text_encoder/ + tokenizer/"
    )
    unet_weights: Path | None = Field(
        None,
        description="SD UNet weights for the spatial layers: a .safetensors/.ckpt single file or a "
        "diffusers folder; None = stable_diffusion's unet/ if it has one, else a fresh network",
    )
    frames: int = Field(16, ge=1, description="latent frames per training clip (= video frames: no ft)")
    caption_dropout: float = Field(0.1, ge=0, le=1, description="p of training on the empty caption")
    guidance_scale: float = Field(15.0, ge=1, description="classifier-free guidance scale (release: 15)")
    freeze_spatial: bool = Field(
        False, description="train the temporal layers only (AnimateDiff); false trains all (the paper)"
    )
    # Long text-to-video (issue 18): text joins §3.3's mask conditioning. Hashed only when on, so a
    # model trained without it keeps the cache key it had.
    cond_frames: Annotated[int, ReadWhen(_continues)] = Field(
        0,
        ge=0,
        description="latents a continuation window is given (the mask channel, §3.3): > 0 trains the "
        "text UNet to predict from them and the caption, and sampling continues windows past the "
        "first; 0: one window from the caption alone",
    )
    p_cond: Annotated[float, ReadWhen(_continues)] = Field(
        0.5, ge=0, le=1, description="with cond_frames: p of a training window with its first latents given"
    )
    max_noise_level: Annotated[int, ReadWhen(_continues)] = Field(
        250, ge=0, description="with cond_frames: conditional latent perturbation s_max (official 250)"
    )
    key_stride: Annotated[int, ReadWhen(lambda s: s.key_stride > 1)] = Field(
        1,
        ge=1,
        description="with cond_frames: > 1 trains one stride-aware network for §3.3's three roles (first "
        "windows from the caption alone and continuations, each at stride 1 and at key_stride; fills "
        "between keys key_stride apart), so long videos can be hierarchical; 1: autoregressive only",
    )
    cache_batch_frames: Annotated[int, EXECUTION] = Field(16, ge=1, description="frames per VAE call")
    use_gpu: Annotated[bool, EXECUTION] = False
    train: DiffusionTrainSection = Field(default_factory=DiffusionTrainSection)
    random_text_encoder: Annotated[
        RandomTextEncoderSection | None, ReadWhen(lambda s: s.random_text_encoder is not None)
    ] = Field(None, description="no pretrained text encoder: a frozen random CLIP of this size (demo)")

    @model_validator(mode="after")
    def _conditions_fewer_than_frames(self) -> T2VSection:
        if self.cond_frames >= self.frames:
            raise ValueError(
                f"t2v.cond_frames={self.cond_frames} must be below t2v.frames={self.frames}: a continuation "
                "window needs a latent left to sample"
            )
        if self.key_stride > 1 and not self.cond_frames:
            raise ValueError(
                f"t2v.key_stride={self.key_stride} needs t2v.cond_frames >= 1: hierarchical videos continue "
                "their keys and fill between them, which only a network with the mask channel can"
            )
        if self.key_stride > 1 and self.key_stride >= self.frames:
            raise ValueError(
                f"t2v.key_stride={self.key_stride} must be below t2v.frames={self.frames}: a fill window "
                f"holds two keys and the {self.key_stride - 1} latents between them, at most as long as a "
                "training window (the temporal layers' relative positions)"
            )
        return self


class T2VLatentsView(Section):
    """What `cache_t2v_latents` reads of `t2v`: its cache key holds the VAE folder alone, so
    changing a training setting never re-encodes the dataset."""

    stable_diffusion: Path | None
    cache_batch_frames: Annotated[int, EXECUTION]
    use_gpu: Annotated[bool, EXECUTION]
