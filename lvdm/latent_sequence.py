"""Videos longer than one clip as latent *sequences* (for the latent cache and long videos).

The autoencoder sees fixed-length clips; a long video is cut into non-overlapping windows
of `window` frames, each encoded on its own, and the latents are concatenated in time. With
replicate padding the codec is temporally shift-equivariant (LVDM §3.1), so window borders
cost little, and decoding a latent sequence window by window is the exact inverse layout.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from copy import deepcopy

import torch
from einops import rearrange
from torch import Tensor, nn

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


# --- Seam-free decoding of long latent sequences ------------------------------------------
#
# `decode_sequence` above decodes non-overlapping windows: each window's first and last
# frames see replicate padding where the true neighbours should be, so every window border
# shows as a seam. Long videos (§3.3, 1,024+ frames) are decoded instead in windows that
# carry `context` extra latents on each side, the decoder's temporal reach, and keep only
# the frames of their own core: those frames see exactly the latents they would see in a
# one-piece decode. The decoder has one path that reaches farther, its GroupNorm statistics,
# which span whatever clip it is given; windows of a fixed length keep those statistics close
# to the short clips the codec was trained on, which a one-piece decode of 1,024 frames
# would not.


class _FramewiseGroupNorm(nn.Module):
    """The same GroupNorm (same weights), with statistics per frame instead of per clip."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(
            self.norm(rearrange(x, "b c t h w -> (b t) c h w")), "(b t) c h w -> b c t h w", b=x.shape[0]
        )


def with_framewise_norms(model: VideoAutoencoder) -> VideoAutoencoder:
    """A copy of `model` whose GroupNorms normalise each frame on its own.

    What is left reaches across time only through its convolutions: the copy has the decoder's
    *conv-path* temporal receptive field and nothing farther, which is what
    `decoder_reach` measures and what the windowed decoder's overlap has to cover.
    """
    copy = deepcopy(model)
    for module in list(copy.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.GroupNorm):
                setattr(module, name, _FramewiseGroupNorm(child))
    return copy


def decoder_reach(model: VideoAutoencoder) -> tuple[int, int]:
    """`(before, after)`: how many latents before and after latent j the decoded frames of j
    depend on, i.e. the decoder's temporal receptive field in latents.

    Measured, so that it follows whatever the decoder is built of: one backward pass from the
    frames of the middle latent of a probe sequence; the latents whose gradient is not exactly
    zero are the ones those frames depend on. Gradients, not the size of a perturbation's
    effect: at the cone's edge a latent's effect can be ~1e-7 of the centre's, below any
    float32 threshold, while replicate padding in its place still changes those frames by
    ~1e-3. Run on `with_framewise_norms(model)` (GroupNorm statistics excluded, see above),
    with 1x1 latents; the probe grows until the dependence stays clear of its ends. Paper
    autoencoder (fs 8, ft 4, transposed-conv upsampling): 6 latents each way.
    """
    probe = with_framewise_norms(model).float().requires_grad_(False)
    ft, channels = model.config.ft, model.config.latent_channels
    device = next(probe.parameters()).device
    generator = torch.Generator().manual_seed(0)
    latents = 9
    while True:
        middle = latents // 2
        # Drawn on the CPU (the same probe whatever the device), then put where the decoder is.
        z = torch.randn(1, channels, latents, 1, 1, generator=generator).to(device).requires_grad_(True)
        with torch.enable_grad():
            probe.decode(z)[:, :, middle * ft : (middle + 1) * ft].sum().backward()
        touched = torch.nonzero(z.grad.abs().amax(dim=(0, 1, 3, 4))).flatten()  # (latents) -> indices
        first, last = int(touched[0]), int(touched[-1])
        if first > 0 and last < latents - 1:
            return middle - first, last - middle
        latents = 2 * latents + 1


def decoder_context(model: VideoAutoencoder) -> int:
    """Latents of context each side of a window so that its core frames decode as in one piece:
    the decoder's reach (`decoder_reach`), the larger side."""
    return max(decoder_reach(model))


@torch.no_grad()
def decode_stream(
    model: VideoAutoencoder,
    chunks: Iterable[Tensor],
    *,
    window: int = 8,
    context: int | None = None,
    batch_size: int | None = None,
) -> Iterator[Tensor]:
    """Decode latent chunks `(b c l h w)` (consecutive in time, any lengths) into video chunks
    `(b c t h w)`, t = window·ft (the last one may be shorter), without seams, with memory
    bounded by `window + 2·context` latents, whatever the sequence length.

    Each window decodes its `window` core latents with `context` latents on either side (fewer
    at the sequence ends, where the decoder's replicate padding is what a one-piece decode
    sees too) and keeps the core's frames. `context=None` measures it (`decoder_context`).
    `batch_size` bounds the videos decoded per call (None: all b at once).
    """
    if window < 1:
        raise ValueError(f"window must be >= 1 latent, got {window}")
    context = decoder_context(model) if context is None else context
    if context < 0:
        raise ValueError(f"context must be >= 0 latents, got {context}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    ft = model.config.ft

    def decode(latents: Tensor) -> Tensor:
        if batch_size is None:
            return model.decode(latents)
        return torch.cat([model.decode(part) for part in latents.split(batch_size)])

    pending: Tensor | None = None  # `left` context latents, then the core not yet decoded
    left = 0

    def next_window(core: int) -> Tensor:
        """Decode `core` latents after the left context (right context: what there is, up to
        `context`) and move on, keeping the last `context` latents decoded as left context."""
        nonlocal pending, left
        video = decode(pending[:, :, : left + core + context])
        frames = video[:, :, left * ft : (left + core) * ft]
        start = left + core - min(context, left + core)
        left = min(context, left + core)
        pending = pending[:, :, start:]
        return frames

    for chunk in chunks:
        if chunk.ndim != 5:
            raise ValueError(
                f"decode_stream expects latent chunks (b c l h w), got shape {tuple(chunk.shape)}"
            )
        pending = chunk if pending is None else torch.cat([pending, chunk], dim=2)
        while pending.shape[2] - left >= window + context:
            yield next_window(window)
    # The sequence has ended: the last windows' right context is whatever is left of it.
    while pending is not None and pending.shape[2] > left:
        yield next_window(min(window, pending.shape[2] - left))


@torch.no_grad()
def decode_sequence_overlapped(
    model: VideoAutoencoder, latents: Tensor, *, window: int = 8, context: int | None = None
) -> Tensor:
    """`latents (c l h w)` -> video `(c t h w)`, t = l·ft, by `decode_stream`: no window seams."""
    if latents.ndim != 4:
        raise ValueError(f"decode_sequence_overlapped expects (c l h w), got shape {tuple(latents.shape)}")
    parts = decode_stream(model, [latents[None]], window=window, context=context)
    return torch.cat(list(parts), dim=2)[0]
