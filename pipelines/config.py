"""Pipeline files: YAML validated once, here, into frozen typed config.

Everything below this module takes plain, already-valid values. A wrong key, type or value
is reported with the file, the dotted key path, what was given and what is allowed, because
the person reading the error is editing that YAML file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DatasetName = Literal["synthetic", "ucf101", "sky_timelapse", "taichi", "webvid"]
SplitName = Literal["train", "test"]


class ConfigError(ValueError):
    """A pipeline file (or a --set override) that does not validate."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticConfig(Section):
    """The built-in dataset: bouncing shapes with their true trajectories in the metadata."""

    videos: dict[SplitName, int] = Field(default_factory=lambda: {"train": 32, "test": 8})
    frames: int = Field(24, ge=1, description="frames per generated video")
    fps: float = Field(8.0, gt=0)
    seed: int = 0


class DataConfig(Section):
    dataset: DatasetName
    root: Path | None = Field(None, description="dataset folder in its release layout")
    splits: tuple[SplitName, ...] = ("train", "test")
    resolution: int = Field(256, ge=8, description="short side resize + centre crop, pixels")
    frames: int = Field(16, ge=1, description="frames per training clip")
    stride: int = Field(1, ge=1, description="frame step inside a clip")
    ucf101_split: Literal[1, 2, 3] = 1
    taichi_format: Literal["mp4", "png"] = "mp4"
    webvid_csv: dict[SplitName, str] = Field(
        default_factory=lambda: {"train": "results_2M_train.csv", "test": "results_2M_val.csv"}
    )
    frame_folder_fps: float = Field(25.0, gt=0, description="fps recorded for folders of frames")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)

    @field_validator("resolution")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even (H.264 yuv420p needs even sizes); got {value}")
        return value

    @model_validator(mode="after")
    def _root_for_real_datasets(self) -> DataConfig:
        if self.dataset != "synthetic" and self.root is None:
            raise ValueError(
                f"data.root is required for dataset {self.dataset!r}: set it in the file or "
                f"with --set data.root=/path/to/{self.dataset}"
            )
        return self

    @property
    def min_frames(self) -> int:
        """Frames a video needs to yield one clip at this stride."""
        return (self.frames - 1) * self.stride + 1


class ShardConfig(Section):
    videos_per_shard: int = Field(64, ge=1)
    crf: int = Field(18, ge=0, le=51, description="H.264 quality of the stored clips")


class AutoencoderModelSection(Section):
    """lvdm.autoencoder.AutoencoderConfig; defaults are the paper's (fs=8, ft=4, 32->256 ch)."""

    hidden: int = Field(32, ge=1)
    channel_multipliers: tuple[int, ...] | None = Field(None, description="None: 2, 4, 8, ... per level")
    latent_channels: int = Field(4, ge=1)
    fs: int = Field(8, ge=1, description="spatial downsampling, a power of 2")
    ft: int = Field(4, ge=1, description="temporal downsampling, a power of 2")
    encoder_res_blocks: int = Field(1, ge=0)
    decoder_res_blocks: int = Field(2, ge=0)
    norm_groups: int = Field(32, ge=1)


class AutoencoderLossSection(Section):
    reconstruction: Literal["l1", "mse"] = "l1"
    perceptual_weight: float = Field(1.0, ge=0)
    lpips: Literal["vgg", "alex", "random"] = Field(
        "vgg", description="LPIPS trunk from `lvdm weights fetch`; `random` is for tests only"
    )
    kl_weight: float = Field(0.0, ge=0, description="the official configs use 0")
    discriminator: Literal["frame", "spacetime"] = "frame"
    disc_layers: int = Field(3, ge=1)
    disc_channels: int = Field(64, ge=1)
    disc_start: int = Field(50001, ge=0, description="step at which the adversarial loss switches on")
    disc_weight: float = Field(0.5, ge=0)


class TrainSection(Section):
    """What every Ray Train stage shares: the step budget, the optimiser, the workers."""

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(1, ge=1, description="clips per worker per step")
    lr: float = Field(1e-4, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast: auto = bf16 where the GPU or CPU computes it natively, else fp32"
    )
    num_workers: int = Field(1, ge=1, description="Ray Train workers (one per GPU)")
    use_gpu: bool = False
    cpus_per_worker: int = Field(1, ge=1, description="CPU cores (and torch threads) per Ray Train worker")
    loader_workers: int = Field(2, ge=0, description="DataLoader processes per Ray Train worker")
    checkpoint_every: int = Field(500, ge=1)
    log_every: int = Field(10, ge=1)
    preview_every: int = Field(500, ge=1, description="held-out preview mp4 + metrics every N steps")
    heldout_clips: int = Field(4, ge=1, description="held-out clips in each preview")
    max_failures: int = Field(2, ge=0, description="Ray Train retries from the last checkpoint")
    seed: int = 0


class AutoencoderTrainSection(TrainSection):
    lr: float = Field(3.6e-5, gt=0)
    normalisation_clips: int = Field(32, ge=1, description="clips encoded to compute the latent scale/shift")


class AutoencoderSection(Section):
    model: AutoencoderModelSection = Field(default_factory=AutoencoderModelSection)
    loss: AutoencoderLossSection = Field(default_factory=AutoencoderLossSection)
    train: AutoencoderTrainSection = Field(default_factory=AutoencoderTrainSection)


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

    @model_validator(mode="after")
    def _divisible(self) -> UNetSection:
        for mult in self.channel_mult:
            channels = self.model_channels * mult
            if channels % self.norm_groups:
                raise ValueError(
                    f"model_channels * channel_mult = {channels} is not divisible by norm_groups="
                    f"{self.norm_groups}; pick norm_groups dividing every level's width"
                )
            if channels % self.num_heads:
                raise ValueError(
                    f"model_channels * channel_mult = {channels} is not divisible by "
                    f"num_heads={self.num_heads}"
                )
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


class DiffusionTrainSection(TrainSection):
    lr: float = Field(6e-5, gt=0, description="official unconditional lr")
    weight_decay: float = Field(0.01, ge=0, description="AdamW's default, as the official release")
    ema_decay: float = Field(0.9999, ge=0, lt=1, description="sampling always uses the EMA weights")


class ConditionalTrainSection(DiffusionTrainSection):
    lr: float = Field(8e-5, gt=0, description="official prediction/interpolation lr")


class TrainUncondSection(Section):
    """The unconditional base model (LVDM §3.2) on random windows of latent frames."""

    frames: int = Field(4, ge=1, description="latent frames per training window (official: 4 = 16 frames)")
    train: DiffusionTrainSection = Field(default_factory=DiffusionTrainSection)


class TrainPredSection(Section):
    """The prediction model (§3.3): first `cond_frames` latents given with probability `p_cond`,
    on latent windows subsampled by `latent_stride` so that its keys are far apart."""

    frames: int = Field(4, ge=2)
    latent_stride: int = Field(4, ge=1, description="official: every 4th latent (64 raw frames per window)")
    cond_frames: int = Field(1, ge=1)
    p_cond: float = Field(0.5, ge=0, le=1)
    max_noise_level: int = Field(250, ge=0, description="conditional latent perturbation s_max")
    eval_clips: int = Field(8, ge=1, description="held-out clips for the does-it-predict check")
    train: ConditionalTrainSection = Field(default_factory=ConditionalTrainSection)

    @model_validator(mode="after")
    def _conditions_fewer_than_frames(self) -> TrainPredSection:
        if self.cond_frames >= self.frames:
            raise ValueError(f"cond_frames={self.cond_frames} must be below frames={self.frames}")
        return self


class TrainInterpSection(Section):
    """The interpolation model (§3.3): first and last latent given with probability `p_cond`;
    `frames` = the prediction model's latent_stride + 1 fills exactly between its keys."""

    frames: int = Field(5, ge=3)
    p_cond: float = Field(0.9, ge=0, le=1)
    max_noise_level: int = Field(250, ge=0)
    train: ConditionalTrainSection = Field(default_factory=ConditionalTrainSection)


class SamplingSection(Section):
    """How samples are drawn (previews, long videos). Not part of any training cache key:
    changing it never retrains a model."""

    sampler: Literal["ddim", "ddpm", "dpmpp"] = "ddim"
    steps: int = Field(50, ge=1, description="official: DDIM 50 steps")
    eta: float = Field(1.0, ge=0, description="DDIM eta; official 1.0")
    noise_level: int = Field(
        100, ge=0, description="conditional latent perturbation s at sampling; official 100"
    )
    guidance_weight: float = Field(0.1, ge=0, description="unconditional guidance w; official 0.1")


class CacheLatentsSection(Section):
    batch_size: int = Field(4, ge=1, description="clip windows encoded per forward pass")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="encoder autocast, as training")
    use_gpu: bool = Field(False, description="one GPU per encoding task")


class MlflowConfig(Section):
    tracking_uri: str | None = Field(None, description="default: sqlite:///<workdir>/mlflow.db")
    experiment: str | None = Field(None, description="default: the pipeline name")


class RayConfig(Section):
    address: str | None = Field(None, description="None starts a local cluster")
    num_cpus: int | None = Field(None, ge=1, description="local cluster size; None = all cores")


class WeightsConfig(Section):
    home: Path | None = Field(None, description="pretrained weights cache; default $LVDM_HOME")


class PipelineConfig(Section):
    name: str
    stages: tuple[str, ...]
    data: DataConfig
    shard: ShardConfig = Field(default_factory=ShardConfig)
    autoencoder: AutoencoderSection = Field(default_factory=AutoencoderSection)
    cache_latents: CacheLatentsSection = Field(default_factory=CacheLatentsSection)
    diffusion: DiffusionSection = Field(default_factory=DiffusionSection)
    train_uncond: TrainUncondSection = Field(default_factory=TrainUncondSection)
    train_pred: TrainPredSection = Field(default_factory=TrainPredSection)
    train_interp: TrainInterpSection = Field(default_factory=TrainInterpSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)

    def section(self, name: str) -> Section:
        return getattr(self, name)


def load_pipeline(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a pipeline file, apply `key.path=value` overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"pipeline file {path} does not exist (default: pipelines/demo.yaml)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate(raw, source=str(path) + (" (with --set overrides)" if overrides else ""))


def validate(raw: dict[str, Any], source: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid pipeline config:\n" + describe_errors(err)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`a.b.c=value`, the value parsed as YAML so numbers, booleans and lists work."""
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set data.root=/data/UCF101")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is a value, not a section")
        node = child
    node[leaf] = yaml.safe_load(text) if text else None


def to_yaml(config: PipelineConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def describe_errors(err: ValidationError) -> str:
    lines = []
    for error in err.errors():
        path = ".".join(str(p) for p in error["loc"]) or "<top level>"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"][:-1])
            lines.append(f"  {path}: unknown key (given {error['input']!r}); allowed keys here: {allowed}")
        elif error["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        else:
            lines.append(f"  {path}: given {error['input']!r}; {error['msg']}")
    return "\n".join(lines)


def _allowed_keys(loc: tuple) -> str:
    model: Any = PipelineConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return "(see the pipeline file reference in README.md)"
        model = annotation
    return ", ".join(model.model_fields)
