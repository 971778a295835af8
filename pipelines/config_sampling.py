"""Pipeline-file sections of generation and measurement: how samples are drawn, the long videos
and their evaluation. Re-exported by `pipelines/config.py`, which importers use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from pipelines.config_base import EXECUTION, ReadWhen, Section
from pipelines.config_data import DataConfig


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
    renormalise: bool = Field(
        False,
        description="not in the paper: a restoring force against fading long videos. The first clip "
        "is put at the data's per-channel mean 0 / std 1 (pooled over the videos), every later chunk "
        "at its own video's first-clip mean/std (lvdm/diffusion/renormalise.py)",
    )
    renormalise_first_clip: Literal["pooled", "as_sampled"] = Field(
        "pooled",
        description="with renormalise: `pooled` puts the first clip at mean 0 / std 1 pooled over the "
        "videos; `as_sampled` leaves it as the network drew it and only holds later chunks at it "
        "(benchmarks/bench_sampling_goals.py measures both)",
    )
    first_clip_sampler: Literal["ddim", "ddpm", "dpmpp"] | None = Field(
        None,
        description="the sampler of clips with nothing given (each long video's first clip); "
        "default: `sampler`",
    )
    first_clip_steps: int | None = Field(None, ge=1, description="its steps; default: `steps`")


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


class ZeroShotSection(Section):
    """evaluate_t2v_zero_shot: the zero-shot UCF-101 protocol of text-to-video papers (LVDM-T2V:
    FVD 641.80). UCF-101 class names become prompts; its own dataset root, since `data` is the
    captioned training set."""

    root: str | None = Field(
        None, description="UCF-101 folder holding UCF-101/<Class>/*.avi and ucfTrainTestlist/ (path or URI)"
    )
    split: Literal[1, 2, 3] = Field(1, description="official split: the real clips are testlist0<split>.txt")
    classes: tuple[str, ...] = Field((), description="classInd.txt names to evaluate; () = all 101")
    videos_per_class: int = Field(100, ge=1, description="generated videos per class (100 x 101 = 10,100)")
    prompt_file: str | None = Field(
        None,
        description="YAML/JSON mapping class -> prompt; classes it leaves out use the CamelCase rule. "
        "Its content is part of the cache key",
    )
    window: int = Field(16, ge=1, description="frames per generated video and real clip (FVD16)")
    stride: int | None = Field(None, ge=1, description="real clips' frame step; None = data.stride")
    real_clips: int | None = Field(None, ge=2, description="seeded subset of the test clips; None = all")
    guidance_scale: float | None = Field(None, ge=0, description="None = the trained model's")
    seed: int = 0
    fps: float = Field(8.0, gt=0, description="of the written mp4s")
    i3d: Path | None = Field(None, description="community i3d_torchscript.pt instead of the cached weights")
    i3d_sha256: Annotated[str | None, EXECUTION] = Field(None, description="the sha256 `i3d` must have")
    trust_i3d: Annotated[bool, EXECUTION] = Field(False, description="load a TorchScript `i3d` unpinned")
    max_batch: Annotated[int, EXECUTION] = Field(4, ge=1, description="videos per sampler call")
    batch_size: Annotated[int, EXECUTION] = Field(8, ge=1, description="I3D clips per forward pass")
    workers: Annotated[int, EXECUTION] = Field(
        1, ge=1, description="generation tasks side by side (one GPU each with use_gpu); classes striped"
    )
    use_gpu: Annotated[bool, EXECUTION] = False

    @field_validator("root", "prompt_file", mode="before")
    @classmethod
    def _location(cls, value: Any) -> Any:
        return DataConfig._root_location(value)  # a URI as written, credentials refused

    def hashed(self) -> dict:
        """The section's key view plus the prompt file's sha256: an edited file is another protocol."""
        out = super().hashed()
        if self.prompt_file is not None:
            import hashlib

            from data_prep import storage

            if storage.is_file(self.prompt_file):
                out["prompt_file_sha256"] = hashlib.sha256(storage.read_bytes(self.prompt_file)).hexdigest()
        return out
