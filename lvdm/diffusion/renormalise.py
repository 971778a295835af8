"""A restoring force for long videos: sampled latents held at the data's statistics.

Not in the paper (issue 21 allows it as an option with figures). A small network's samples are
shrunk towards the mean: its x̂_0 is a posterior mean, and what it cannot predict it blurs.
One clip of that is a slightly faint video; a prediction loop that feeds each faint chunk back
as the next chunk's given latents compounds it, and the reference run's 1,024-frame videos
faded to the empty frame by frame ~130 (README, "Why long videos collapsed").

Two steps, because the data's statistics are known exactly only pooled over many clips:
- The first clip of a batch of videos is put at mean 0 / std 1 per channel *pooled over the
  videos* (`train_autoencoder` chose the latent scale/shift so that the training clips have
  exactly that), so one video may stay fainter than another, as in the data (the per-clip std
  of the reference run's training latents ranges 0.38–1.37, p10–p90).
- Every later chunk of a video is put at *that video's* first-clip mean and std per channel
  (its anchor). Pooling later chunks as well was measured to let half of the videos fade to
  black while the others brightened to keep the pooled figure (README).
Latents a chunk was given are left alone: they were restored when they were sampled, and the
seam must stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import repeat
from torch import Tensor

EPS = 1e-6


@dataclass(frozen=True)
class Anchor:
    """Per video and channel, `(n c)`: the mean and std later chunks are held at."""

    mean: Tensor
    std: Tensor

    def repeated(self, times: int) -> Anchor:
        """For a batch of `(times n)` rows, pair-major (`fill_between_keys`'s fills of n videos)."""
        return Anchor(*(repeat(x, "n c -> (p n) c", p=times) for x in (self.mean, self.std)))


def anchor_of(latents: Tensor) -> Anchor:
    """Each video's per-channel mean and std over `(t h w)` of `latents (n c t h w)`."""
    return Anchor(latents.mean(dim=(2, 3, 4)), latents.std(dim=(2, 3, 4), unbiased=False))


def renormalise_sampled(latents: Tensor, given: Tensor | None = None, anchor: Anchor | None = None) -> Tensor:
    """`latents (n c t h w)` with its sampled latents restored.

    Args:
        latents: normalised latents as `sample_latents` returns them.
        given: `(n t)` bool, True where a latent was given (conditioning) and must stay as it
            is; None: every latent was sampled (an unconditional clip).
        anchor: None: mean 0 / std 1 per channel pooled over the videos (a first clip);
            else each video's sampled latents at its anchor's mean and std.
    """
    n, c, t, _, _ = latents.shape
    sampled = torch.ones(n, t, dtype=torch.bool, device=latents.device)
    if given is not None:
        if tuple(given.shape) != (n, t):
            raise ValueError(
                f"given mask has shape {tuple(given.shape)}, expected {(n, t)} for latents (n c t h w)"
            )
        sampled = ~given.to(latents.device)
    if not bool(sampled.any()):
        return latents
    if anchor is not None and tuple(anchor.mean.shape) != (n, c):
        raise ValueError(f"anchor is for {tuple(anchor.mean.shape)} (n c), latents have {(n, c)}")
    weight = sampled[:, None, :, None, None].to(latents.dtype).expand_as(latents)
    over = (2, 3, 4) if anchor is not None else (0, 2, 3, 4)
    count = weight.sum(dim=over, keepdim=True)
    mean = (latents * weight).sum(dim=over, keepdim=True) / count
    std = (((latents - mean).square() * weight).sum(dim=over, keepdim=True) / count).sqrt()
    standard = (latents - mean) / (std + EPS)
    if anchor is not None:
        target_mean, target_std = (x.to(latents)[:, :, None, None, None] for x in (anchor.mean, anchor.std))
        standard = target_mean + target_std * standard
    return torch.where(weight.bool(), standard, latents)
