"""Text conditioning of the diffusion model (LVDM §5): caption dropout and classifier-free guidance.

- `drop_captions` (training): each example's text tokens become the empty caption's with
  probability p (default 0.1, as AnimateDiff, Open-Sora and VGen train), so the one network
  also learns ε(x_t, ∅), the unconditional prediction guidance needs.
- `text_guided` (sampling): wraps the network as a denoiser that runs the caption and the
  empty caption in ONE forward over a doubled batch and returns
  ε̃ = ε_∅ + s · (ε_c − ε_∅) (the release's `unconditional_guidance_scale`, 15 by default).
  It is a model wrapper, so `sample_latents`' own mask guidance (§3.3) composes with it:
  the long-video models get text and frame guidance jointly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

from lvdm.diffusion.draws import uniform

RELEASE_GUIDANCE_SCALE = 15.0  # scripts/sample_text2video.py's default


def drop_captions(
    context: Tensor, null_context: Tensor, p: float, generator: torch.Generator | None
) -> Tensor:
    """`context: b m d` with each example replaced by `null_context: m d` (or `1 m d`) with probability p."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"caption dropout p={p}: must be in [0, 1]")
    null_context = null_context.reshape(context.shape[1:]).to(device=context.device, dtype=context.dtype)
    drop = uniform(context.shape[0], generator=generator, device=context.device) < p
    return torch.where(rearrange(drop, "b -> b 1 1"), null_context, context)


def text_guided(
    model: Callable[..., Tensor], context: Tensor, null_context: Tensor, guidance_scale: float
) -> Callable[..., Tensor]:
    """`model(x, t, *, context, **kw)` -> a callable `(x, t, **kw) -> ε̃` with the text fixed.

    `context: b m d` the captions' tokens; `null_context: m d` the empty caption's. Scale 1 is
    plain conditional sampling (one forward of batch b); above 1 one forward of batch 2b.
    Tensor keyword arguments with a batch axis (`noise_level: b`) are doubled alongside x;
    0-d ones (a broadcast stride) pass as they are.
    """
    if guidance_scale < 1.0:
        raise ValueError(f"guidance_scale={guidance_scale}: use >= 1 (1 = no guidance)")
    null_context = null_context.reshape(context.shape[1:]).to(device=context.device, dtype=context.dtype)

    def denoise(x: Tensor, t: Tensor, **kwargs: Tensor) -> Tensor:
        # `x` may already be a doubled batch (the mask guidance of `sample_latents`): repeat the
        # captions to its size.
        repeats = x.shape[0] // context.shape[0]
        cond = context.repeat(repeats, 1, 1)
        if guidance_scale == 1.0:
            return model(x, t, context=cond, **kwargs)
        b = x.shape[0]
        doubled = {
            k: torch.cat([v, v]) if isinstance(v, Tensor) and v.ndim and v.shape[0] == b else v
            for k, v in kwargs.items()
        }
        both = torch.cat([cond, null_context.expand_as(cond)])
        eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), context=both, **doubled).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    return denoise
