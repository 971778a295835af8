"""Frame masks for the joint prediction / interpolation network (paper §3.3).

A mask is bool `(b, t)` over LATENT frames: True marks a frame given as condition. An
all-False row is the unconditional task, the first k True the prediction task, the first and
last True the interpolation task. The network sees it as one extra input channel
(`conditioning.masked_input`). Training draws masks per example, so one batch mixes
unconditional and conditional examples, which is what lets unconditional guidance
(`conditioning.unconditional_guidance`) reuse the same network.

Masks are drawn where the generator lives (CPU by default); move them with `.to(device)`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from lvdm.diffusion.draws import uniform


def _check(batch: int, frames: int, p: float) -> None:
    if batch < 1 or frames < 1:
        raise ValueError(f"batch and frames must be positive, got batch={batch}, frames={frames}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p is a probability, got p={p}")


def prediction_mask(
    batch: int, frames: int, *, k: int = 1, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`(b, t)`: the first `k` frames conditioned with probability `p`, else all False.

    Official prediction config: `p_pred 0.5`, `n_prevs [1]` (k = 1).
    """
    _check(batch, frames, p)
    if not 0 < k < frames:
        raise ValueError(f"k must be in [1, frames) = [1, {frames}) so a frame is left to predict, got k={k}")
    conditioned = uniform(batch, generator=generator) < p
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    mask[:, :k] = conditioned[:, None]
    return mask


def interpolation_mask(
    batch: int, frames: int, *, p: float = 0.9, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`(b, t)`: the first and last frames conditioned with probability `p`, else all False.

    Official interpolation config: `p_interp 0.9` over 5 latent frames.
    """
    _check(batch, frames, p)
    if frames < 3:
        raise ValueError(f"interpolation needs at least 3 frames (2 given, 1 to fill), got frames={frames}")
    conditioned = uniform(batch, generator=generator) < p
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    mask[:, 0] = conditioned
    mask[:, -1] = conditioned
    return mask


def frames_mask(
    batch: int, frames: int, indices: Iterable[int], *, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """`(b, t)`: the same given frame `indices` conditioned in every example, for sampling.

    Negative indices count from the end (`[0, -1]` is interpolation); `[]` is unconditional.
    """
    _check(batch, frames, 0.0)
    mask = torch.zeros(batch, frames, dtype=torch.bool, device=device)
    for index in indices:
        if not -frames <= index < frames:
            raise ValueError(f"frame index {index} is outside a clip of {frames} latent frames")
        mask[:, index] = True
    return mask
