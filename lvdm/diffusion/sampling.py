"""`sample_latents`: the one call stages and scripts use to sample a (conditional) LVDM.

It turns a network plus conditioning into a denoiser callable (mask channel, conditional
latent perturbation, unconditional guidance; paper §3.3) and hands it to a sampler from
`samplers`. Everything random comes from one `generator`, in a fixed order: x_T, then the
perturbation noise, then the sampler's own draws.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
from einops import rearrange

from lvdm.diffusion import samplers
from lvdm.diffusion.conditioning import (
    conditional_latent_perturbation,
    masked_input,
    unconditional_guidance,
)
from lvdm.diffusion.draws import standard_normal
from lvdm.diffusion.parameterisation import as_eps_model
from lvdm.diffusion.schedule import NoiseSchedule

SamplerName = Literal["ddpm", "ddim", "dpmpp"]


def model_takes_noise_level(model: Callable[..., torch.Tensor]) -> bool:
    """Whether `model` has a noise-level embedding: its `config.max_noise_level` is > 0.

    A model without a `config` (a plain callable) takes none.
    """
    return getattr(getattr(model, "config", None), "max_noise_level", 0) > 0


def model_takes_stride(model: Callable[..., torch.Tensor]) -> bool:
    """Whether `model` has a stride embedding (`config.max_stride` > 0), so it can be told its pace."""
    return getattr(getattr(model, "config", None), "max_stride", 0) > 0


def _default_device(model: Callable[..., torch.Tensor], z_cond: torch.Tensor | None) -> torch.device:
    if z_cond is not None:
        return z_cond.device
    if isinstance(model, torch.nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")


def sample_latents(
    model: Callable[..., torch.Tensor],
    shape: tuple[int, int, int, int, int],
    schedule: NoiseSchedule,
    *,
    sampler: SamplerName = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    ddim_last_step: str = "x0",
    z_cond: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    noise_level: int = 0,
    guidance_weight: float = 0.0,
    conditional: bool | None = None,
    takes_noise_level: bool | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
    stride: int | None = None,
    prediction: str | None = None,
) -> torch.Tensor:
    """Sample latents `(b, c, t, h, w)` of `shape` from `model`, under no_grad.

    Conditioning (§3.3): with a mask the model sees `masked_input(x_t, z_s, mask)` at every
    step, where z_s is `z_cond` perturbed to level `noise_level` once per call (the same z_s
    at every step, as the paper fixes s at sampling), and after every step the masked frames
    of x are set back to `z_cond`, so they come out exactly equal to it.

    Guidance (`guidance_weight` w > 0): ε̃ = (1 + w)·ε_c − w·ε_u, with ε_u from the all-False
    mask and ε_c, ε_u from one forward over a doubled batch. ε_u gets the SAME noise-level
    embedding as ε_c: training always gave the network one, so leaving it out (as the official
    sampler does) feeds the network an input it never saw. w = 0 skips the second half of the
    batch and is exactly conditional sampling.

    Args:
        model: `model(x, t, *, noise_level=None) -> ε̂`; called as `model(x, t)` when it takes
            no noise level. Eval mode is the caller's choice (use the EMA weights).
        shape: `(b, c, t, h, w)` of the latents to sample (c without the mask channel).
        schedule: the schedule the model was trained with.
        sampler: "ddim" (default), "ddpm" (all T steps; `steps` and `eta` ignored) or "dpmpp"
            (DPM-Solver++, needs the `samplers` extra; `eta` ignored).
        steps: sampler steps for ddim / dpmpp (official: 50).
        eta: DDIM's η: 0 deterministic (default), 1 DDPM-like. The official scripts use η = 1;
            with an exact denoiser (benchmarks/bench_samplers.py) η = 0 is 2-2.5x closer to
            the true distribution at 10, 20 and 50 steps, as in the DDIM paper's Table 1.
        ddim_last_step: "x0" (default) ends DDIM at x̂_0; "release" at ᾱ_0, as the release's
            sampler (`samplers.ddim`'s `last_step`).
        z_cond: `(b, c, t, h, w)` clean conditioning latents; only the masked frames are read.
        mask: `(b, t)` bool over latent frames (`masks.frames_mask`), True = given.
        noise_level: the perturbation level s ∈ [0, T] of z_cond (0 = clean).
        guidance_weight: w of unconditional guidance; 0 = off.
        conditional: whether the model takes the mask channel; default `mask is not None`. A
            conditional model with no mask samples unconditionally (all-False mask).
        takes_noise_level: whether the model takes `noise_level`; default
            `model_takes_noise_level(model)`.
        generator: source of every random draw.
        progress: show a progress bar.
        device: where to sample; default z_cond's device, else the model's, else the CPU.
        stride: for a stride-aware network (`UNet3D(max_stride=...)`), the latent stride of the
            clip to sample: 1 for consecutive latents, the key stride for hierarchical keys.
        prediction: what the model outputs, "eps" or "v" (`parameterisation`); default
            `model.config.prediction`, "eps" for a callable without a config.
    """
    if sampler not in ("ddpm", "ddim", "dpmpp"):
        raise ValueError(f"sampler must be 'ddpm', 'ddim' or 'dpmpp', got {sampler!r}")
    if len(shape) != 5:
        raise ValueError(f"shape must be (b, c, t, h, w), got {tuple(shape)}")
    b, _, frames, _, _ = shape
    conditional = mask is not None if conditional is None else conditional
    takes_noise_level = model_takes_noise_level(model) if takes_noise_level is None else takes_noise_level
    device = torch.device(device) if device is not None else _default_device(model, z_cond)
    model = as_eps_model(model, schedule, prediction)
    if stride is not None:
        # A 0-d tensor: the network broadcasts it over any batch, the guidance's doubled one too.
        model = functools.partial(model, stride=torch.tensor(stride, dtype=torch.long, device=device))

    if not conditional and (mask is not None or z_cond is not None):
        raise ValueError("mask / z_cond given but conditional=False: drop them, or set conditional=True")
    if guidance_weight < 0:
        raise ValueError(f"guidance_weight must be >= 0, got {guidance_weight}")
    if guidance_weight > 0 and not conditional:
        raise ValueError("unconditional guidance needs a conditional model: pass a mask (and z_cond)")
    if not 0 <= noise_level <= schedule.timesteps:
        raise ValueError(f"noise_level must be in [0, {schedule.timesteps}], got {noise_level}")
    if noise_level > 0 and not (conditional and takes_noise_level):
        raise ValueError(
            f"noise_level={noise_level} but the model takes no noise-level embedding: "
            "use noise_level=0, or pass takes_noise_level=True for a model trained with max_noise_level > 0"
        )

    x_T = standard_normal(shape, generator=generator, device=device)
    if not conditional:

        def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return model(x, t)

        after_step = None
    else:
        mask = torch.zeros(b, frames, dtype=torch.bool) if mask is None else mask
        if tuple(mask.shape) != (b, frames):
            raise ValueError(
                f"mask must be (b, t) = ({b}, {frames}) over latent frames, got {tuple(mask.shape)}"
            )
        mask = mask.to(device=device, dtype=torch.bool)
        if z_cond is None:
            if bool(mask.any()):
                raise ValueError("mask marks conditioning frames but z_cond is None: pass the latents")
            z_cond = torch.zeros(shape, device=device)
        if tuple(z_cond.shape) != tuple(shape):
            raise ValueError(f"z_cond must have the sample shape {tuple(shape)}, got {tuple(z_cond.shape)}")
        z_cond = z_cond.to(device=device, dtype=x_T.dtype)
        s = torch.full((b,), noise_level, dtype=torch.long, device=device)
        z_s = z_cond
        if noise_level > 0:
            noise_s = standard_normal(shape, generator=generator, device=device)
            z_s = conditional_latent_perturbation(z_cond, s, schedule, noise_s)
        denoiser = _conditional_denoiser(model, z_s, mask, s if takes_noise_level else None, guidance_weight)
        keep = rearrange(mask, "b t -> b 1 t 1 1")

        def after_step(x: torch.Tensor) -> torch.Tensor:
            return torch.where(keep, z_cond, x)

    with torch.no_grad():
        if sampler == "ddpm":
            return samplers.ddpm(
                denoiser, x_T, schedule, generator=generator, progress=progress, after_step=after_step
            )
        if sampler == "ddim":
            return samplers.ddim(
                denoiser,
                x_T,
                schedule,
                steps=steps,
                eta=eta,
                generator=generator,
                progress=progress,
                after_step=after_step,
                last_step=ddim_last_step,
            )
        return samplers.dpmpp(denoiser, x_T, schedule, steps=steps, progress=progress, after_step=after_step)


def _conditional_denoiser(
    model: Callable[..., torch.Tensor],
    z_s: torch.Tensor,
    mask: torch.Tensor,
    noise_level: torch.Tensor | None,
    guidance_weight: float,
) -> samplers.Denoiser:
    """Wrap `model` as `eps = denoiser(x_t, t)`: mask channel, z_s, noise level, guidance."""

    def call(x: torch.Tensor, t: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        return model(x, t) if s is None else model(x, t, noise_level=s)

    if guidance_weight == 0:
        return lambda x_t, t: call(masked_input(x_t, z_s, mask), t, noise_level)

    unconditional = torch.zeros_like(mask)
    doubled_s = None if noise_level is None else torch.cat([noise_level, noise_level])

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = torch.cat([masked_input(x_t, z_s, mask), masked_input(x_t, z_s, unconditional)])
        eps_c, eps_u = call(both, torch.cat([t, t]), doubled_s).chunk(2)
        return unconditional_guidance(eps_c, eps_u, guidance_weight)

    return guided
