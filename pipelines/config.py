"""Pipeline files: YAML validated once, here, into frozen typed config.

Everything below this module takes plain, already-valid values. A wrong key, type or value
is reported with the file, the dotted key path, what was given and what is allowed, because
the person reading the error is editing that YAML file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DatasetName = Literal["synthetic", "ucf101", "sky_timelapse", "taichi", "webvid", "captioned_table"]
SplitName = Literal["train", "test"]


class ConfigError(ValueError):
    """A pipeline file (or a --set override) that does not validate."""


@dataclass(frozen=True)
class Execution:
    """Marks a field that says how a stage runs, not what it computes (worker counts, GPUs,
    logging cadence). Such fields stay out of cache keys and Ray Train run names, so a run
    moved from 8 workers to 16 finds its stage folder and resumes from its checkpoint."""


@dataclass(frozen=True)
class ReadWhen:
    """Marks a field that only some configurations read (a dataset's own option): it is hashed
    only where `applies(section)` holds, so e.g. `ucf101_split` never reshards Sky Time-lapse."""

    applies: Callable[[Any], bool]


EXECUTION = Execution()


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def hashed(self) -> dict[str, Any]:
        """The fields that change this section's result, recursively: the cache key's view.

        Everything else (`Execution` fields, `ReadWhen` fields that do not apply) is dropped;
        the full section still goes to the manifest and to MLflow params.
        """
        out: dict[str, Any] = {}
        for name, field in type(self).model_fields.items():
            marks = field.metadata
            if any(isinstance(m, Execution) for m in marks):
                continue
            if any(isinstance(m, ReadWhen) and not m.applies(self) for m in marks):
                continue
            value = getattr(self, name)
            out[name] = (
                value.hashed()
                if isinstance(value, Section)
                else self.model_dump(mode="json", include={name})[name]
            )
        return out


class SyntheticConfig(Section):
    """The built-in dataset: bouncing shapes with their true trajectories in the metadata."""

    videos: dict[SplitName, int] = Field(default_factory=lambda: {"train": 32, "test": 8})
    frames: int = Field(24, ge=1, description="frames per generated video")
    fps: float = Field(8.0, gt=0)
    seed: int = 0
    # Hashed only when set, so the uncaptioned datasets' cache keys are what they were.
    caption_shapes: Annotated[int | None, ReadWhen(lambda s: s.caption_shapes is not None)] = Field(
        None,
        ge=1,
        le=3,
        description="captioned videos for text-to-video: 1..N shapes moving straight, a caption from the "
        "ground truth, held-out combinations only in the test split (data_prep/sources/synthetic.py)",
    )


def _for(*datasets: str) -> ReadWhen:
    return ReadWhen(lambda data: data.dataset in datasets)


# Exactly what `stages.shard.discover` passes to each dataset's discover(): taichi reads the
# fps only for folders of png frames (an mp4 carries its own).
_FRAME_FOLDERS = ReadWhen(
    lambda data: data.dataset == "sky_timelapse" or (data.dataset == "taichi" and data.taichi_format == "png")
)


class DataConfig(Section):
    dataset: DatasetName
    root: Annotated[str | None, _for("ucf101", "sky_timelapse", "taichi", "webvid", "captioned_table")] = (
        Field(
            None,
            description="dataset folder in its release layout: a local path or a URI (s3://bucket/ucf101)",
        )
    )
    splits: tuple[SplitName, ...] = ("train", "test")
    resolution: int = Field(256, ge=8, description="short side resize + centre crop, pixels")
    frames: int = Field(16, ge=1, description="frames per training clip")
    stride: int = Field(1, ge=1, description="frame step inside a clip")
    ucf101_split: Annotated[Literal[1, 2, 3], _for("ucf101")] = 1
    taichi_format: Annotated[Literal["mp4", "png"], _for("taichi")] = "mp4"
    webvid_csv: Annotated[dict[SplitName, str], _for("webvid")] = Field(
        default_factory=lambda: {"train": "results_2M_train.csv", "test": "results_2M_val.csv"}
    )
    captions_table: Annotated[dict[SplitName, str], _for("captioned_table")] = Field(
        default_factory=lambda: {"train": "train.csv", "test": "test.csv"},
        description="per split, a .csv/.jsonl/.parquet table of path, caption[, start, end] under data.root",
    )
    frame_folder_fps: Annotated[float, _FRAME_FOLDERS] = Field(
        25.0, gt=0, description="fps recorded for folders of frames"
    )
    synthetic: Annotated[SyntheticConfig, _for("synthetic")] = Field(default_factory=SyntheticConfig)
    # What one video may cost to decode (a hostile or huge file is a counted skip, not a worker
    # killed for memory); a resource guard of the machine, kept out of the cache keys.
    max_decode_pixels: Annotated[int, EXECUTION] = Field(
        2**29, ge=1, description="width x height x frames of one video (frames at least resolution²)"
    )
    max_file_mib: Annotated[int, EXECUTION] = Field(
        1024, ge=1, description="stored size of one video or frame, MiB"
    )

    @field_validator("resolution")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even (H.264 yuv420p needs even sizes); got {value}")
        return value

    @field_validator("root", mode="before")
    @classmethod
    def _root_location(cls, value: Any) -> Any:
        # A URI stays as written (`Path` would fold `s3://b/x` into `s3:/b/x`); a local path is
        # spelled as `Path` spells it, so the cache keys of existing runs are unchanged.
        if not isinstance(value, (str, Path)):
            return value  # None, or a wrong type for the error to name
        text = str(value)
        if "://" in text:
            from data_prep.storage import local, refuse_credentials

            refuse_credentials(text)  # s3://KEY:SECRET@bucket: the message points to AWS_*
            if text.startswith("file://"):
                local(text)  # file://host/path is refused here, naming the fix
                return text
            return text.rstrip("/")
        return str(Path(text))

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
    upsample: Literal["transposed", "nearest"] = Field(
        "transposed", description="decoder upsampling: the release's transposed conv, or nearest + conv"
    )

    @model_validator(mode="after")
    def _builds(self) -> AutoencoderModelSection:
        """The library's own checks (fs/ft powers of 2, one multiplier per level, norm_groups
        dividing every level's channels), here when the YAML is read, not in a worker."""
        from lvdm.autoencoder import AutoencoderConfig

        _library_check(AutoencoderConfig, self.model_dump())
        return self


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
    """What every Ray Train stage shares: the step budget, the optimiser, the workers.

    `Execution` fields are out of the cache key: a stage resumes from its checkpoint after a
    change of cluster size. `batch_size` is per worker and is kept, so the global batch is
    `batch_size * num_workers` and grows with the cluster (as in DDP). `checkpoint_every`
    stays in the key: it fixes which data each checkpoint interval replays.
    """

    steps: int = Field(1000, ge=1)
    batch_size: int = Field(1, ge=1, description="clips per worker per step")
    lr: float = Field(1e-4, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast: auto = bf16 where the GPU or CPU computes it natively, else fp32"
    )
    num_workers: Annotated[int, EXECUTION] = Field(1, ge=1, description="Ray Train workers (one per GPU)")
    use_gpu: Annotated[bool, EXECUTION] = False
    compile: Annotated[bool, EXECUTION] = Field(
        False,
        description="torch.compile the trained network's forward in place (weights files unchanged); "
        "off by default: on CPU the demo UNet's step is ~4x faster but its first compile costs minutes",
    )
    cpus_per_worker: Annotated[int, EXECUTION] = Field(
        1, ge=1, description="CPU cores (and torch threads) per Ray Train worker"
    )
    loader_workers: Annotated[int, EXECUTION] = Field(
        2, ge=0, description="DataLoader processes per Ray Train worker"
    )
    checkpoint_every: int = Field(500, ge=1)
    log_every: Annotated[int, EXECUTION] = Field(10, ge=1)
    preview_every: Annotated[int, EXECUTION] = Field(
        500, ge=1, description="held-out preview mp4 + metrics every N steps"
    )
    heldout_clips: Annotated[int, EXECUTION] = Field(4, ge=1, description="held-out clips in each preview")
    max_failures: Annotated[int, EXECUTION] = Field(
        2, ge=0, description="Ray Train retries from the last checkpoint"
    )
    seed: int = 0


class AutoencoderTrainSection(TrainSection):
    lr: float = Field(3.6e-5, gt=0)
    betas: tuple[float, float] = Field((0.5, 0.9), description="AdamW betas; official videoae (0.5, 0.9)")
    sample_posterior: bool = Field(
        True, description="decode a posterior sample in training (official); false: the mean"
    )
    normalisation_clips: int = Field(32, ge=1, description="clips encoded to compute the latent scale/shift")
    latent_normalisation: Literal["scalar", "channel"] = Field(
        "scalar",
        description="one scale/shift for all latent channels (the release) or one per channel "
        "(the small models' choice: see lvdm.autoencoder.latent_normalisation)",
    )


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
    stride_aware: bool = Field(
        True,
        description="train on windows at stride 1 and at latent_stride, told which (a stride embedding), "
        "so autoregressive videos move at the data's pace and hierarchical keys at the keys' pace; "
        "false: the release's model, keys only",
    )
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
    ddim_last_step: Literal["x0", "release"] = Field(
        "release",
        description="DDIM's last jump: to ᾱ_0 as the release's sampler (default: closer to the data with "
        "an exact denoiser, benchmarks/bench_ddim_last_step.py) or to x̂_0",
    )


class CacheLatentsSection(Section):
    batch_size: Annotated[int, EXECUTION] = Field(
        4, ge=1, description="clip windows encoded per forward pass"
    )
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="encoder autocast, as training")
    use_gpu: Annotated[bool, EXECUTION] = Field(False, description="one GPU per encoding task")
    engine: Annotated[Literal["tasks", "ray_data"], EXECUTION] = Field(
        "tasks",
        description="tasks: one Ray task per shard (decode + encode), faster on small CPU clusters; "
        "ray_data: streaming decode (CPU tasks) -> encode (actor pool) -> write, for GPU clusters",
    )
    concurrency: Annotated[int, EXECUTION] = Field(
        1, ge=1, description="ray_data engine: encoder actors (one GPU each with use_gpu)"
    )


class SampleSection(Section):
    """Long videos from the trained models (LVDM §3.3), per strategy and sampling setting."""

    videos: int = Field(4, ge=1, description="videos per strategy and setting")
    frames: int = Field(1024, ge=1, description="frames per video (1,024 and more work; memory stays flat)")
    strategies: tuple[Literal["autoregressive", "hierarchical"], ...] = Field(
        ("autoregressive", "hierarchical"), min_length=1
    )
    settings: tuple[Literal["default", "no_perturbation", "no_guidance", "neither"], ...] = Field(
        ("default",),
        min_length=1,
        description="the paper's Fig. 7 ablation: default = the sampling section's s and w; "
        "no_perturbation: s=0; no_guidance: w=0; neither: both off",
    )
    fps: float = Field(8.0, gt=0)
    contact_columns: int = Field(8, ge=2, description="frames per row of the contact sheet, evenly spaced")
    seed: int = 0
    max_batch: Annotated[int, EXECUTION] = Field(
        16, ge=1, description="clips per sampler call (memory bound)"
    )
    decode_window: int = Field(8, ge=1, description="latents decoded per window (plus overlap)")
    precision: Literal["fp32", "auto", "bf16"] = Field(
        "fp32",
        description="autocast while sampling: auto = bf16 where the GPU or CPU computes it natively "
        "(1.8x faster per UNet forward on an AVX512-BF16 CPU); fp32 by default, as the release samples",
    )
    use_gpu: Annotated[bool, EXECUTION] = Field(False, description="one GPU per sampling task")
    # Read by `sample_t2v` only; hashed only when set, so `sample`'s cache keys are unchanged.
    prompts: Annotated[tuple[str, ...], ReadWhen(lambda s: bool(s.prompts))] = Field(
        (), description="sample_t2v: the captions to generate `videos` videos of, each"
    )


class EvaluateSection(Section):
    """FVD/KVD (I3D) on every non-overlapping window of the sampled videos, the real-vs-real
    floor, and for the synthetic dataset the ground-truth motion metrics."""

    window: int = Field(16, ge=1, description="frames per FVD clip / window (FVD16)")
    fvd_every: int = Field(
        1, ge=1, description="FVD on windows 0, k, 2k, … only (I3D is the slow part); exact metrics on all"
    )
    real_clips: int = Field(2048, ge=2, description="real clips (test split) for the statistics and floor")
    batch_size: Annotated[int, EXECUTION] = Field(8, ge=1, description="I3D clips per forward pass")
    i3d: Path | None = Field(None, description="community i3d_torchscript.pt instead of the cached weights")
    # A TorchScript `i3d` is code: loaded only with its sha256 pinned here, or vouched for.
    i3d_sha256: Annotated[str | None, EXECUTION] = Field(None, description="the sha256 `i3d` must have")
    trust_i3d: Annotated[bool, EXECUTION] = Field(False, description="load a TorchScript `i3d` unpinned")
    use_gpu: Annotated[bool, EXECUTION] = False


class MlflowConfig(Section):
    tracking_uri: str | None = Field(None, description="default: sqlite:///<workdir>/mlflow.db")
    experiment: str | None = Field(None, description="default: the pipeline name")


class RayConfig(Section):
    address: str | None = Field(None, description="None starts a local cluster")
    num_cpus: int | None = Field(None, ge=1, description="local cluster size; None = all cores")


class WeightsConfig(Section):
    home: Path | None = Field(None, description="pretrained weights cache; default $LVDM_HOME")


class RandomTextEncoderSection(Section):
    """A frozen, randomly initialised CLIP text transformer with CLIP's real BPE vocabulary
    (`lvdm/random_clip.py`), built by `train_t2v` in its folder: for a dataset whose captions
    are a small fixed grammar (the synthetic demo), where no pretrained CLIP is at hand."""

    width: int = Field(64, ge=8, description="hidden width = diffusion.unet.context_dim")
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    seed: int = 0


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
    cache_batch_frames: Annotated[int, EXECUTION] = Field(16, ge=1, description="frames per VAE call")
    use_gpu: Annotated[bool, EXECUTION] = False
    train: DiffusionTrainSection = Field(default_factory=DiffusionTrainSection)
    random_text_encoder: Annotated[
        RandomTextEncoderSection | None, ReadWhen(lambda s: s.random_text_encoder is not None)
    ] = Field(None, description="no pretrained text encoder: a frozen random CLIP of this size (demo)")


class T2VLatentsView(Section):
    """What `cache_t2v_latents` reads of `t2v`: its cache key holds the VAE folder alone, so
    changing a training setting never re-encodes the dataset."""

    stable_diffusion: Path | None
    cache_batch_frames: Annotated[int, EXECUTION]
    use_gpu: Annotated[bool, EXECUTION]


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
    t2v: T2VSection = Field(default_factory=T2VSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    weights: WeightsConfig = Field(default_factory=WeightsConfig)

    def section(self, name: str) -> Section:
        return getattr(self, name)

    @property
    def t2v_latents(self) -> T2VLatentsView:
        t2v = self.t2v
        return T2VLatentsView(
            stable_diffusion=t2v.stable_diffusion,
            cache_batch_frames=t2v.cache_batch_frames,
            use_gpu=t2v.use_gpu,
        )

    @model_validator(mode="after")
    def _sections_agree(self) -> PipelineConfig:
        """Checks across sections, for the stages this pipeline runs: each would otherwise fail
        inside a Ray worker, the discriminator's only at `disc_start` (step 50,001 in the
        paper's configs)."""
        data, model = self.data, self.autoencoder.model
        problems: list[str] = []
        if {"train_autoencoder", "cache_latents"} & set(self.stages):
            if data.resolution % model.fs:
                problems.append(
                    f"data.resolution={data.resolution} is not divisible by autoencoder.model.fs={model.fs} "
                    f"(the encoder halves the frame log2(fs) times): set data.resolution to a multiple of "
                    f"{model.fs}, e.g. {_multiple(data.resolution, model.fs)}"
                )
            if data.frames % model.ft:
                problems.append(
                    f"data.frames={data.frames} is not divisible by autoencoder.model.ft={model.ft} "
                    f"(the encoder halves the clip log2(ft) times): set data.frames to a multiple of "
                    f"{model.ft}, e.g. {_multiple(data.frames, model.ft)}"
                )
        if "cache_t2v_latents" in self.stages and self.t2v.stable_diffusion is None:
            problems.append(
                "the text-to-video stages (cache_t2v_latents, train_t2v) need t2v.stable_diffusion: set it "
                "to a local Stable Diffusion 1.x folder in the diffusers layout (vae/, unet/, text_encoder/)"
            )
        t2v = self.t2v
        if "train_t2v" in self.stages and "cache_t2v_latents" not in self.stages:
            if t2v.text_encoder is None and t2v.random_text_encoder is None and t2v.stable_diffusion is None:
                problems.append(
                    "train_t2v on the pipeline's own latents (cache_latents) needs a text encoder: set "
                    "t2v.text_encoder to a CLIP folder, or t2v.random_text_encoder for a frozen random one"
                )
        if "sample_t2v" in self.stages and not self.sample.prompts:
            problems.append(
                'sample_t2v needs sample.prompts: a list of captions, e.g. ["a red circle moving left"]'
            )
        if "train_autoencoder" in self.stages:
            problem = _discriminator_problem(self.autoencoder.loss, data)
            if problem:
                problems.append(problem)
        diffusion_stages = {"train_uncond", "train_pred", "train_interp"} & set(self.stages)
        if diffusion_stages:
            unet = self.diffusion.unet
            for key in ("in_channels", "out_channels"):
                if getattr(unet, key) != model.latent_channels:
                    problems.append(
                        f"diffusion.unet.{key}={getattr(unet, key)} differs from "
                        f"autoencoder.model.latent_channels={model.latent_channels}: the UNet denoises the "
                        f"autoencoder's latents; set diffusion.unet.{key}={model.latent_channels}"
                    )
            from lvdm.unet import UNet3DConfig

            latent, factor = data.resolution // model.fs, UNet3DConfig(**unet.model_dump()).spatial_factor
            if data.resolution % model.fs == 0 and latent % factor:
                problems.append(
                    f"the latent frames are {latent}x{latent} (data.resolution={data.resolution} / "
                    f"autoencoder.model.fs={model.fs}), not divisible by the UNet's downsampling {factor} "
                    f"(2 ** (len(diffusion.unet.channel_mult) - 1), channel_mult="
                    f"{list(unet.channel_mult)}): use fewer levels in diffusion.unet.channel_mult or a "
                    f"data.resolution whose latent size is a multiple of {factor}"
                )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self


def _multiple(value: int, factor: int) -> int:
    """The nearest positive multiple of `factor` to `value`, for an error's suggested fix."""
    return max(factor, round(value / factor) * factor)


def _library_check(config_class: type, fields: dict[str, Any]) -> None:
    """Build the library's config dataclass from a section's fields: its `__post_init__` is the
    one place each architecture rule lives. Its message names the class; say the key instead."""
    try:
        config_class(**fields)
    except ValueError as err:
        name = config_class.__name__
        raise ValueError(str(err).replace(f"{name}.", "").replace(f"{name}: ", "")) from None


def _discriminator_problem(loss: AutoencoderLossSection, data: DataConfig) -> str | None:
    """Run the discriminator on an empty (meta-device) clip of the pipeline's size: its own size
    check, without a forward pass's cost. None when it accepts the size."""
    import torch

    from lvdm.discriminator import build_discriminator

    with torch.device("meta"):
        disc = build_discriminator(loss.discriminator, base_channels=1, num_layers=loss.disc_layers)
        clip = torch.empty(1, 3, data.frames, data.resolution, data.resolution)
        try:
            disc(clip)
        except (ValueError, RuntimeError) as err:
            return (
                f"autoencoder.loss.disc_layers={loss.disc_layers} is too deep for "
                f"data.resolution={data.resolution} ({err}): lower autoencoder.loss.disc_layers or "
                "raise data.resolution"
            )
    return None


def load_pipeline(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Read a pipeline file (a local path, or a run's recorded config on object storage),
    apply `key.path=value` overrides, validate."""
    from data_prep import storage

    if not storage.is_file(path):
        raise ConfigError(f"pipeline file {path} does not exist (default: pipelines/demo.yaml)")
    try:
        raw = yaml.safe_load(storage.read_bytes(path)) or {}
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_problem(path, err)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate(raw, source=str(path) + (" (with --set overrides)" if overrides else ""))


def _yaml_problem(path: str | Path, err: yaml.YAMLError) -> str:
    """Where the YAML breaks (1-based line and column, as editors count) and what to do about it."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
    problem = getattr(err, "problem", None) or str(err)
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark:
        problem += f" ({context} at line {context_mark.line + 1}, column {context_mark.column + 1})"
    return (
        f"{where}: not valid YAML: {problem}. Fix the syntax there: a bracket or quote left open, a "
        "missing ':' after a key, or tabs in the indentation (YAML indents with spaces)"
    )


def validate(raw: dict[str, Any], source: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: invalid pipeline config:\n" + describe_errors(err)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """`a.b.c=value`, the value parsed as YAML so numbers, booleans and lists work.

    Every mapping on the path is copied before it is changed: a YAML alias (`train:
    *diffusion_train`) makes several sections one object, and `--set train_uncond.train.steps=9`
    must change `train_uncond` only, not every section that shares the anchor.
    """
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. --set data.root=/data/UCF101")
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {part!r} is a value, not a section")
        node[part] = child = dict(child)
        node = child
    node[leaf] = yaml.safe_load(text) if text else None


def to_yaml(config: PipelineConfig) -> str:
    """The config as recorded (`config.yaml`, the MLflow artifact, a submitted job's env): URLs
    without their `user:password@` (an MLflow server's basic auth), which are never written down.
    A resume or a job reads them from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD."""
    from lvdm.credentials import strip_userinfo

    return strip_userinfo(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))


def describe_errors(err: ValidationError) -> str:
    lines = []
    for error in err.errors():
        path = ".".join(str(p) for p in error["loc"]) or "<top level>"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), allowed or [], n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            listed = ", ".join(allowed) if allowed else "(see the pipeline file reference in README.md)"
            lines.append(
                f"  {path}: unknown key (given {error['input']!r}); {hint}allowed keys here: {listed}"
            )
        elif error["type"] == "missing":
            lines.append(f"  {path}: required key is missing; add it to the file or --set {path}=...")
        elif error["type"] == "value_error" and isinstance(error["input"], dict):
            # A check over a whole section (or across sections): its message names the keys.
            message = error["msg"].removeprefix("Value error, ")
            lines.append(f"  {message}" if not error["loc"] else f"  {path}: {message}")
        else:
            message = error["msg"].removeprefix("Value error, ")  # a validator's own words
            lines.append(f"  {path}: given {_shown(error['input'])}; {message}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    """A given value as an error repeats it; never a URL's credentials (the part before its '@' may
    hold a secret with a raw '/', so such a URL is not shown at all)."""
    if isinstance(value, str) and "://" in value and "@" in value:
        return "a URI with credentials in it (not shown)"
    return repr(value)


def _allowed_keys(loc: tuple) -> list[str] | None:
    """The keys of the section at `loc`; None where the section's type is not one model."""
    model: Any = PipelineConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return list(model.model_fields)
