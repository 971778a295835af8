"""Pipeline files: YAML validated once, here, into frozen typed config.

Everything below this module takes plain, already-valid values. A wrong key, type or value
is reported with the file, the dotted key path, what was given and what is allowed, because
the person reading the error is editing that YAML file.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

# The sections live in the modules below, by what they hold; importers keep importing them from here.
from pipelines.config_base import EXECUTION, Execution, ReadWhen, Section, TrainSection
from pipelines.config_data import (
    AutoencoderLossSection,
    AutoencoderModelSection,
    AutoencoderSection,
    AutoencoderTrainSection,
    CacheLatentsSection,
    DataConfig,
    DatasetName,
    ShardConfig,
    SplitName,
    SyntheticConfig,
)
from pipelines.config_diffusion import (
    ConditionalTrainSection,
    DiffusionSection,
    DiffusionTrainSection,
    RandomTextEncoderSection,
    ScheduleSection,
    T2VLatentsView,
    T2VSection,
    TrainInterpSection,
    TrainPredSection,
    TrainUncondSection,
    UNetSection,
)
from pipelines.config_sampling import EvaluateSection, SampleSection, SamplingSection, ZeroShotSection

__all__ = [
    "EXECUTION",
    "AutoencoderLossSection",
    "AutoencoderModelSection",
    "AutoencoderSection",
    "AutoencoderTrainSection",
    "CacheLatentsSection",
    "ConditionalTrainSection",
    "ConfigError",
    "DataConfig",
    "DatasetName",
    "DiffusionSection",
    "DiffusionTrainSection",
    "EvaluateSection",
    "Execution",
    "MlflowConfig",
    "PipelineConfig",
    "RandomTextEncoderSection",
    "RayConfig",
    "ReadWhen",
    "SampleSection",
    "SamplingSection",
    "ScheduleSection",
    "Section",
    "ShardConfig",
    "SplitName",
    "SyntheticConfig",
    "T2VLatentsView",
    "T2VSection",
    "TrainInterpSection",
    "TrainPredSection",
    "TrainSection",
    "TrainUncondSection",
    "UNetSection",
    "WeightsConfig",
    "ZeroShotSection",
    "apply_override",
    "describe_errors",
    "load_pipeline",
    "to_yaml",
    "validate",
]


class ConfigError(ValueError):
    """A pipeline file (or a --set override) that does not validate."""


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
    t2v: T2VSection = Field(default_factory=T2VSection)
    sampling: SamplingSection = Field(default_factory=SamplingSection)
    sample: SampleSection = Field(default_factory=SampleSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    zero_shot: ZeroShotSection = Field(default_factory=ZeroShotSection)
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
        if "evaluate_t2v_zero_shot" in self.stages and self.zero_shot.root is None:
            problems.append(
                "evaluate_t2v_zero_shot needs zero_shot.root: the UCF-101 folder holding UCF-101/ and "
                "ucfTrainTestlist/ (--set zero_shot.root=/data/UCF101)"
            )
        if "train_autoencoder" in self.stages:
            problem = _discriminator_problem(self.autoencoder.loss, data)
            if problem:
                problems.append(problem)
        shared_fills = "interp" in self.train_pred.roles
        if "sample" in self.stages and "train_interp" not in self.stages and not shared_fills:
            problems.append(
                "sample needs an interpolation network for hierarchical videos: list train_interp in "
                "`stages`, or train a shared network with train_pred.roles=[uncond, pred, interp]"
            )
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
