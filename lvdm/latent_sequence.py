"""Videos longer than one clip as latent *sequences* (for the latent cache and long videos).

The autoencoder sees fixed-length clips; a long video is cut into non-overlapping windows
of `window` frames, each encoded on its own, and the latents are concatenated in time. With
replicate padding the codec is temporally shift-equivariant (LVDM §3.1), so window borders
cost little, and decoding a latent sequence window by window is the exact inverse layout.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor

from lvdm.autoencoder import VideoAutoencoder


@torch.no_grad()
def encode_sequence(model: VideoAutoencoder, video: Tensor, window: int, batch_size: int = 4) -> Tensor:
    """`video (c t h w)` in [-1, 1] -> posterior means `(c_z l h_z w_z)`, l = (t // window) * window / ft.

    Trailing frames that do not fill a window are dropped, like a clip that runs past the end.
    """
    if video.ndim != 4:
        raise ValueError(f"encode_sequence expects one video (c t h w), got shape {tuple(video.shape)}")
    windows = video.shape[1] // window
    if windows == 0:
        raise ValueError(f"video of {video.shape[1]} frames is shorter than one window of {window} frames")
    clips = rearrange(video[:, : windows * window], "c (n t) h w -> n c t h w", t=window)
    latents = torch.cat([model.encode(part).mode() for part in clips.split(batch_size)])
    return rearrange(latents, "n c l h w -> c (n l) h w")


@torch.no_grad()
def decode_sequence(model: VideoAutoencoder, latents: Tensor, window: int, batch_size: int = 4) -> Tensor:
    """`latents (c l h w)` -> video `(c t h w)`, decoding `window` latent frames at a time."""
    if latents.shape[1] % window:
        raise ValueError(f"{latents.shape[1]} latent frames do not split into windows of {window}")
    parts = rearrange(latents, "c (n l) h w -> n c l h w", l=window)
    video = torch.cat([model.decode(part) for part in parts.split(batch_size)])
    return rearrange(video, "n c t h w -> c (n t) h w")
