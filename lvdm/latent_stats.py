"""Latent statistics of a long video over time: where generation leaves the data's range.

A long video that collapses into noise (issue 21: coloured noise from frame ~250 on) shows it
in its latents before the decoder turns it into pixels: the per-channel mean drifts and the
standard deviation grows or shrinks away from the data's. The normalised training latents
have mean ~0 and std ~1 per channel (`latent_normalisation(per_channel=True)`), so every
window of a generated video can be held against that directly.

`WindowedLatentStats` consumes the normalised latent chunks `(n c l h w)` of a batch of videos
as they stream by (memory flat in length) and reports, per window of `window` latents and
per channel, the mean and standard deviation over every video, pixel and latent of the window.
"""

from __future__ import annotations

import torch
from torch import Tensor


class WindowedLatentStats:
    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 latent, got {window}")
        self.window = window
        self.sums: list[Tensor] = []  # per window: (c,) sum, (c,) sum of squares, count
        self.squares: list[Tensor] = []
        self.counts: list[int] = []
        self.position = 0  # latents seen so far, per video

    def add(self, chunk: Tensor) -> None:
        """Take the next latents `(n c l h w)` of the videos, consecutive in time."""
        values = chunk.detach().double().cpu()
        for offset in range(values.shape[2]):
            index = (self.position + offset) // self.window
            while len(self.sums) <= index:
                self.sums.append(torch.zeros(values.shape[1], dtype=torch.float64))
                self.squares.append(torch.zeros(values.shape[1], dtype=torch.float64))
                self.counts.append(0)
            frame = values[:, :, offset]  # n c h w
            self.sums[index] += frame.sum(dim=(0, 2, 3))
            self.squares[index] += frame.square().sum(dim=(0, 2, 3))
            self.counts[index] += frame[:, 0].numel()
        self.position += values.shape[2]

    def windows(self) -> list[dict[str, list[float]]]:
        """`[{"mean": [c], "std": [c]}, ...]`, one entry per window of latents, in order."""
        out = []
        for total, squares, count in zip(self.sums, self.squares, self.counts, strict=True):
            mean = total / count
            std = (squares / count - mean.square()).clamp_min(0).sqrt()
            out.append({"mean": mean.tolist(), "std": std.tolist()})
        return out


def out_of_range(
    windows: list[dict[str, list[float]]],
    *,
    max_mean: float = 0.5,
    std_range: tuple[float, float] = (0.5, 1.5),
) -> int | None:
    """Index of the first window whose channel mean or std leaves the normalised data's range
    (|mean| ≤ `max_mean`, std within `std_range` of the data's 1), or None if none does."""
    low, high = std_range
    for index, window in enumerate(windows):
        means, stds = window["mean"], window["std"]
        if any(abs(m) > max_mean for m in means) or any(not low <= s <= high for s in stds):
            return index
    return None
