"""Text conditioning of the diffusion model (LVDM §5): caption dropout and classifier-free guidance.

- `drop_captions` (training): each example's text tokens become the empty caption's with
  probability p (default 0.1, as AnimateDiff, Open-Sora and VGen train), so the one network
  also learns ε(x_t, ∅), the unconditional prediction guidance needs.
- `text_guided` (sampling): wraps the network as a denoiser that runs the caption and the
  empty caption in ONE forward over a doubled batch and returns
  ε̃ = ε_∅ + s · (ε_c − ε_∅) (the release's `unconditional_guidance_scale`, 15 by default).
  It is a model wrapper, so `sample_latents`' own mask guidance (§3.3) composes with it:
  the long-video models get text and frame guidance jointly. It carries the network's
  `config`, so the long-video loops (`lvdm.long_video`, `lvdm.continuation`), which read the
  mask channel, the noise-level embedding and the output parameterisation from there, take
  it as the network itself: a text model with a mask channel continues its windows through
  them, conditioned on its last latents and the caption together.
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


class TextGuided:
    """A network with its captions fixed: `(x, t, **kw) -> ε̃` (`text_guided` builds it).

    A class rather than a closure for one reason: `config` is the wrapped network's, so code
    that decides how to call a network from its config (`sample_latents`: the noise level and
    ε or v; `lvdm.long_video`: whether it has a mask channel) treats the wrapper as that network.
    A v network's wrapper returns the guided v, which `sample_latents` turns into ε like the
    network's own output (guidance is affine, the same in either space: `parameterisation`).
    """

    def __init__(
        self, model: Callable[..., Tensor], context: Tensor, null_context: Tensor, guidance_scale: float
    ) -> None:
        if guidance_scale < 1.0:
            raise ValueError(f"guidance_scale={guidance_scale}: use >= 1 (1 = no guidance)")
        self.model = model
        self.context = context
        null_context = null_context.reshape(context.shape[1:])
        self.null_context = null_context.to(device=context.device, dtype=context.dtype)
        self.guidance_scale = guidance_scale

    @property
    def config(self) -> object | None:
        """The wrapped network's config (None for a plain callable)."""
        return getattr(self.model, "config", None)

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Tensor) -> Tensor:
        # `x` may already be a doubled batch (the mask guidance of `sample_latents`): repeat the
        # captions to its size.
        repeats = x.shape[0] // self.context.shape[0]
        if repeats * self.context.shape[0] != x.shape[0]:
            raise ValueError(
                f"a batch of {x.shape[0]} latents for {self.context.shape[0]} captions: sample all of "
                "the captions' videos in one call (a whole multiple of them)"
            )
        cond = self.context.repeat(repeats, 1, 1)
        if self.guidance_scale == 1.0:
            return self.model(x, t, context=cond, **kwargs)
        b = x.shape[0]
        doubled = {
            k: torch.cat([v, v]) if isinstance(v, Tensor) and v.ndim and v.shape[0] == b else v
            for k, v in kwargs.items()
        }
        both = torch.cat([cond, self.null_context.expand_as(cond)])
        eps_c, eps_u = self.model(torch.cat([x, x]), torch.cat([t, t]), context=both, **doubled).chunk(2)
        return eps_u + self.guidance_scale * (eps_c - eps_u)


def text_guided(
    model: Callable[..., Tensor], context: Tensor, null_context: Tensor, guidance_scale: float
) -> TextGuided:
    """`model(x, t, *, context, **kw)` -> a callable `(x, t, **kw) -> ε̃` with the text fixed.

    `context: b m d` the captions' tokens; `null_context: m d` the empty caption's. Scale 1 is
    plain conditional sampling (one forward of batch b); above 1 one forward of batch 2b.
    Tensor keyword arguments with a batch axis (`noise_level: b`) are doubled alongside x;
    0-d ones (a broadcast stride) pass as they are.
    """
    return TextGuided(model, context, null_context, guidance_scale)
