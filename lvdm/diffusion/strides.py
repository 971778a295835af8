"""Windows at several paces for one stride-aware prediction network (issue 21, LVDM §3.3).

The hierarchical strategy predicts *keys* `latent_stride` latents apart; the autoregressive
strategy predicts consecutive latents. One network trained on keys only runs an
autoregressive video `latent_stride`× too fast; one trained on consecutive latents cannot
make keys. So the prediction network is trained on a mix of strides and told which one it
sees (`UNet3D(max_stride=...)`, `stride=` in its forward), as later video models condition
on frame rate.

The loader hands over windows that span `window_span(frames, max(strides))` consecutive
latents; `strided_windows` picks, per example, a stride and a start inside that span and
gathers the `frames` latents. Every draw comes from the caller's generator, so a resumed
run draws the same strides.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lvdm.diffusion.draws import uniform_integers


def window_span(frames: int, stride: int) -> int:
    """Consecutive latents a window of `frames` latents at `stride` covers: (frames − 1)·stride + 1."""
    if frames < 1 or stride < 1:
        raise ValueError(f"frames and stride must be >= 1, got frames={frames}, stride={stride}")
    return (frames - 1) * stride + 1


def strided_windows(
    sequence: Tensor, frames: int, strides: Sequence[int], *, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """`(windows: b c frames h w, stride: b)` from consecutive latents `sequence: b c span h w`.

    Each example draws its stride uniformly from `strides`, then a start uniformly among the
    positions where a window at that stride fits in the span; a short stride therefore sees
    every part of the span, not only its beginning.
    """
    if not strides or min(strides) < 1:
        raise ValueError(f"strides must be a non-empty list of positive integers, got {list(strides)}")
    b, _, span, _, _ = sequence.shape
    needed = window_span(frames, max(strides))
    if span < needed:
        raise ValueError(
            f"a window of {frames} latents at stride {max(strides)} needs {needed} consecutive latents, "
            f"the sequence has {span}"
        )
    choice = uniform_integers(0, len(strides), b, generator=generator)
    stride = torch.as_tensor(list(strides), dtype=torch.long)[choice]
    room = span - (frames - 1) * stride  # start positions that fit, per example (>= 1)
    start = (torch.rand(b, generator=generator, device=_device(generator)).cpu() * room).long()
    index = start[:, None] + stride[:, None] * torch.arange(frames)[None, :]  # b frames
    gather = index.to(sequence.device)[:, None, :, None, None].expand(
        -1, sequence.shape[1], -1, *sequence.shape[3:]
    )
    return sequence.gather(2, gather), stride.to(sequence.device)


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")
