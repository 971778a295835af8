"""Pipeline-file sections of generation and measurement: how samples are drawn, the long videos
and their evaluation. Re-exported by `pipelines/config.py`, which importers use."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from pipelines.config_base import EXECUTION, ReadWhen, Section


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
