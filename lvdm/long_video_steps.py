"""One sampling call of the long-video loops (`lvdm.long_video`): the settings every clip is
sampled with, the batched `sample_latents` call (with the optional restoring force of
`sampling.renormalise`), one round of interpolation fills, and the argument checks the loops
share. Kept apart so the loops in `long_video` read as the strategies they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor, nn

from lvdm.diffusion.masks import frames_mask
from lvdm.diffusion.renormalise import Anchor, renormalise_sampled
from lvdm.diffusion.sampling import SamplerName, model_takes_noise_level, sample_latents
from lvdm.diffusion.schedule import NoiseSchedule

Model = Callable[..., Tensor]


@dataclass(frozen=True)
class SamplingSettings:
    """How every clip is sampled: `sample_latents`' options, the official values by default.

    The field names are the pipeline's `sampling` section, so
    `SamplingSettings(**config.sampling.model_dump())` carries it over.
    """

    sampler: SamplerName = "ddim"
    steps: int = 50
    eta: float = 1.0
    noise_level: int = 100  # s of the conditional latent perturbation
    guidance_weight: float = 0.1  # w of unconditional guidance
    # DDIM's last jump: "release" to ᾱ_0 as the release's sampler (measured closer to the data
    # than "x0", the jump to x̂_0, which under-disperses: benchmarks/bench_ddim_last_step.py).
    ddim_last_step: str = "release"
    # Put every sampled chunk back at the data's per-channel mean 0 / std 1 (not in the paper:
    # a restoring force against the fade of long videos; lvdm/diffusion/renormalise.py).
    renormalise: bool = False
    # With `renormalise`: "pooled" puts the first clip at mean 0 / std 1 pooled over the videos;
    # "as_sampled" keeps it as drawn and only holds later chunks at each video's first clip.
    renormalise_first_clip: str = "pooled"
    # Another sampler for clips with nothing given (a video's first clip); None: `sampler`,
    # `steps`. An ODE solver draws a first clip closer to the data's spread than few-step
    # DDIM at η = 1, which conditioned chunks may still prefer (benchmarks/bench_sampling_goals.py).
    first_clip_sampler: SamplerName | None = None
    first_clip_steps: int | None = None


def fill_between_keys(
    model: Model,
    keys: Tensor,
    schedule: NoiseSchedule,
    latent_stride: int,
    sampling: SamplingSettings,
    generator: torch.Generator | None,
    max_batch: int,
    anchor: Anchor | None = None,
) -> Tensor:
    """`keys (n c p+1 h w)` -> `(n c p·stride h w)`: each key followed by the fills after it.

    The fills go to the sampler pair-major, `(p n)`: every run of n rows is one pair of keys
    of all n videos, in the videos' order. A network with per-video inputs fixed in that order
    (`TextGuided`'s captions, tiled over a batch of a whole multiple of the videos) then sees
    each video's fills beside its own caption whatever `max_batch` splits them into.
    """
    n, c, count, h, w = keys.shape
    pairs = count - 1
    z_cond = keys.new_zeros(pairs, n, c, latent_stride + 1, h, w)
    z_cond[:, :, :, 0] = rearrange(keys[:, :, :-1], "n c p h w -> p n c h w")
    z_cond[:, :, :, -1] = rearrange(keys[:, :, 1:], "n c p h w -> p n c h w")
    z_cond = rearrange(z_cond, "p n c t h w -> (p n) c t h w")
    given = frames_mask(n * pairs, latent_stride + 1, [0, -1])
    clips = sample_clips(
        model,
        tuple(z_cond.shape),
        schedule,
        sampling,
        generator,
        keys.device,
        max_batch,
        given,
        z_cond,
        anchor=None if anchor is None else anchor.repeated(pairs),
    )
    return rearrange(clips[:, :, :-1], "(p n) c t h w -> n c (p t) h w", n=n)


def sample_clips(
    model: Model,
    shape: tuple[int, int, int, int, int],
    schedule: NoiseSchedule,
    sampling: SamplingSettings,
    generator: torch.Generator | None,
    device: torch.device,
    max_batch: int,
    mask: Tensor | None = None,
    z_cond: Tensor | None = None,
    stride: int | None = None,
    anchor: Anchor | None = None,
) -> Tensor:
    """`sample_latents` over `shape`, at most `max_batch` clips per call.

    Without a mask: an unconditional network. With an all-False mask: a conditional network's
    unconditional mode, which still gets the noise-level embedding of s (training gave every
    example one) but no guidance (ε_c = ε_u). Otherwise conditioned, perturbed to s, guided.
    """
    nothing_given = mask is None or not bool(mask.any())  # a video's first clip
    options = {
        "sampler": (nothing_given and sampling.first_clip_sampler) or sampling.sampler,
        "steps": (nothing_given and sampling.first_clip_steps) or sampling.steps,
        "eta": sampling.eta,
        "ddim_last_step": sampling.ddim_last_step,
    }
    if mask is not None:
        takes_level = model_takes_noise_level(model)
        options |= {
            "conditional": True,
            "noise_level": sampling.noise_level if takes_level else 0,
            "guidance_weight": sampling.guidance_weight if bool(mask.any()) else 0.0,
        }
    parts = []
    for start in range(0, shape[0], max_batch):
        part = slice(start, start + max_batch)
        b = len(range(shape[0])[part])
        parts.append(
            sample_latents(
                model,
                (b, *shape[1:]),
                schedule,
                z_cond=None if z_cond is None or not bool(mask.any()) else z_cond[part],
                mask=None if mask is None else mask[part],
                generator=generator,
                device=device,
                stride=stride,
                **options,
            )
        )
    video = torch.cat(parts)
    if sampling.renormalise and not (nothing_given and sampling.renormalise_first_clip == "as_sampled"):
        video = renormalise_sampled(video, mask, anchor)
    return video


def is_conditional(model: Model) -> bool:
    """A mask channel: `in_channels = out_channels + 1` (the conditional networks of §3.3)."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__} has no `config` (in_channels, out_channels): pass a UNet3D")
    return config.in_channels == config.out_channels + 1


def check_conditional(model: Model, name: str, sampling: SamplingSettings) -> None:
    if not is_conditional(model):
        raise ValueError(
            f"{name} has no mask channel (in_channels = out_channels): long videos condition on "
            "given latents, so pass the network trained by train_pred / train_interp"
        )
    max_level = getattr(model.config, "max_noise_level", 0)
    if max_level > 0 and not 0 <= sampling.noise_level <= max_level:
        raise ValueError(
            f"sampling.noise_level={sampling.noise_level} but {name} was trained with noise levels "
            f"0..{max_level} (max_noise_level): pick s in that range (official 100)"
        )
    if max_level == 0 and sampling.noise_level > 0:
        raise ValueError(
            f"sampling.noise_level={sampling.noise_level} but {name} has no noise-level embedding "
            "(max_noise_level=0): use noise_level=0"
        )


def check_counts(*, videos: int, latents: int, max_batch: int) -> None:
    if videos < 1:
        raise ValueError(f"videos must be >= 1, got {videos}")
    if latents < 1:
        raise ValueError(f"latents must be >= 1, got {latents}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")


def model_device(model: Model) -> torch.device:
    if isinstance(model, nn.Module):
        parameter = next(model.parameters(), None)
        if parameter is not None:
            return parameter.device
    return torch.device("cpu")
