"""Does the prediction model predict? Latent error of its continuations against baselines.

A prediction model that ignored its conditioning latents would still produce plausible
clips, and a preview by eye cannot tell. This compares, on held-out clips whose first
`cond_frames` latents are given, the latent MSE to the *true* continuation of:

- `prediction`: the prediction model conditioned on the given latents (guidance and
  perturbation as configured for sampling);
- `prediction_unconditioned`: the same network with an all-zero mask (its unconditional
  mode, trained jointly with probability 1 - p);
- `unconditional_model`: the separately trained unconditional model's samples;
- `repeat_last`: the last given latent repeated (a still frame);
- `mean`: the all-zero latent, i.e. the data mean of normalised latents.

A model that predicts beats both unconditional rows; beating `repeat_last` means it
predicts motion, not just appearance.
"""

from __future__ import annotations

import torch
from einops import repeat
from torch import Tensor, nn

from lvdm.diffusion.masks import frames_mask
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule


@torch.no_grad()
def continuation_errors(
    prediction_model: nn.Module,
    unconditional_model: nn.Module | None,
    clips: Tensor,
    schedule: NoiseSchedule,
    *,
    cond_frames: int,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 1.0,
    noise_level: int = 100,
    guidance_weight: float = 0.1,
    seed: int = 0,
    stride: int | None = None,
) -> dict[str, float]:
    """Mean latent MSE over the non-given frames of `clips (b c t h w)` (normalised latents).

    `stride`: the clips' latent stride, told to a stride-aware prediction model."""
    b, _, t, _, _ = clips.shape
    if not 0 < cond_frames < t:
        raise ValueError(f"cond_frames={cond_frames} must be in [1, {t - 1}] for clips of {t} latents")
    given = frames_mask(b, t, list(range(cond_frames))).to(clips.device)
    options = {"sampler": sampler, "steps": steps, "eta": eta}

    def generator() -> torch.Generator:
        return torch.Generator(clips.device).manual_seed(seed)

    def error(video: Tensor) -> float:
        return (video[:, :, cond_frames:] - clips[:, :, cond_frames:]).pow(2).mean().item()

    predicted = sample_latents(
        prediction_model,
        tuple(clips.shape),
        schedule,
        z_cond=clips,
        mask=given,
        noise_level=noise_level,
        guidance_weight=guidance_weight,
        generator=generator(),
        stride=stride,
        **options,
    )
    unconditioned = sample_latents(
        prediction_model,
        tuple(clips.shape),
        schedule,
        z_cond=clips,
        mask=torch.zeros_like(given),
        noise_level=noise_level,
        generator=generator(),
        stride=stride,
        **options,
    )
    errors = {
        "prediction": error(predicted),
        "prediction_unconditioned": error(unconditioned),
        "repeat_last": error(repeat(clips[:, :, cond_frames - 1], "b c h w -> b c t h w", t=t)),
        "mean": error(torch.zeros_like(clips)),
        "clips": float(b),
    }
    if unconditional_model is not None:
        free = sample_latents(
            unconditional_model, tuple(clips.shape), schedule, generator=generator(), **options
        )
        errors["unconditional_model"] = error(free)
    return errors
