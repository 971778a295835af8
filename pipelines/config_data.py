"""Pipeline-file sections of the data side: the dataset, its shards, the video autoencoder and the
latent cache. Re-exported by `pipelines/config.py`, which importers use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.config_base import EXECUTION, ReadWhen, Section, TrainSection, _library_check

DatasetName = Literal["synthetic", "ucf101", "sky_timelapse", "taichi", "webvid", "captioned_table"]


SplitName = Literal["train", "test"]


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
