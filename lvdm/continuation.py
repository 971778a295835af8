"""Continuations of given latents, for checks that score a model's future against the true one.

`continue_latents` extends given latents with the prediction model (§3.3) the way the long-video
loop does: each `sample_latents` call conditions on the last `k` latents and yields the next
`clip − k`. `decode_still` decodes latents that are not consecutive in
the codec's time (keys of a strided prediction model), one at a time, each as a still clip of
`clip_latents` copies, so the decoder sees the clip length it was trained on and no
neighbour it would wrongly blend with.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn

from lvdm.autoencoder import VideoAutoencoder
from lvdm.diffusion.masks import frames_mask
from lvdm.diffusion.renormalise import anchor_of, renormalise_sampled
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.long_video import SamplingSettings


@torch.no_grad()
def continue_latents(
    model: nn.Module,
    given: Tensor,
    schedule: NoiseSchedule,
    *,
    clip: int,
    latents: int,
    sampling: SamplingSettings,
    generator: torch.Generator | None = None,
    stride: int | None = None,
) -> Tensor:
    """`given (b c k h w)` extended to `(b c latents h w)` by the prediction model; the first k
    latents come back unchanged.

    Args:
        model: conditional network (mask channel) trained on clips of `clip` latents with k
            given; k = given.shape[2] < clip.
        latents: total latents to return (≥ k).
        sampling: sampler, steps, η, s (perturbation of the given latents), w (guidance).
        stride: for a stride-aware network, the latent stride of the clips it samples
            (`sample_latents`' `stride`); None for a network without the stride embedding.
    """
    b, c, k, h, w = given.shape
    if not 1 <= k < clip:
        raise ValueError(f"{k} given latents: need 1 <= given < clip = {clip} to predict anything")
    video = given
    mask = frames_mask(b, clip, range(k)).to(given.device)
    anchor = anchor_of(given) if sampling.renormalise else None  # each video held at its given latents
    while video.shape[2] < latents:
        z_cond = torch.zeros(b, c, clip, h, w, device=given.device, dtype=given.dtype)
        z_cond[:, :, :k] = video[:, :, -k:]
        sampled = sample_latents(
            model,
            (b, c, clip, h, w),
            schedule,
            sampler=sampling.sampler,
            steps=sampling.steps,
            eta=sampling.eta,
            ddim_last_step=sampling.ddim_last_step,
            z_cond=z_cond,
            mask=mask,
            noise_level=sampling.noise_level,
            guidance_weight=sampling.guidance_weight,
            generator=generator,
            stride=stride,
        )
        if anchor is not None:
            sampled = renormalise_sampled(sampled, mask, anchor)
        video = torch.cat([video, sampled[:, :, k:]], dim=2)
    return video[:, :, :latents]


@torch.no_grad()
def decode_still(autoencoder: VideoAutoencoder, latents: Tensor, clip_latents: int) -> Tensor:
    """Latents `(b c n h w)` (un-normalised) -> frames `(b c n·ft h w)`: latent i decoded alone,
    as a clip of `clip_latents` copies of itself, its first ft frames kept."""
    b, _, n, _, _ = latents.shape
    still = repeat(latents, "b c n h w -> (b n) c l h w", l=clip_latents)
    decoded = autoencoder.decode(still)
    ft = decoded.shape[2] // clip_latents
    return rearrange(decoded[:, :, :ft], "(b n) c t h w -> b c (n t) h w", b=b, n=n)
