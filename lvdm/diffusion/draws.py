"""Random draws from a caller's `torch.Generator`, on any device.

Every random number of training and sampling comes from here, so that one generator argument
makes a run reproducible: a resumed training run that restores the generator's state draws
the same t, noise, masks and noise levels as the run it replaces.

`torch.randn(..., generator=g, device=d)` refuses a generator that lives on another device,
so we draw where the generator lives and move the result. A CPU generator driving CUDA
training costs one host-to-device copy per draw, but gives the same numbers on every device.
"""

from __future__ import annotations

import torch


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def standard_normal(
    shape: tuple[int, ...] | torch.Size,
    *,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """N(0, I) of `shape`, drawn from `generator` (torch's global one when None)."""
    device = torch.device(device)
    draw = torch.randn(shape, generator=generator, device=_draw_device(generator, device), dtype=dtype)
    return draw.to(device)


def uniform_integers(
    low: int,
    high: int,
    size: int,
    *,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """`(size,)` long, uniform in [low, high) (half-open, like `torch.randint`)."""
    device = torch.device(device)
    draw = torch.randint(low, high, (size,), generator=generator, device=_draw_device(generator, device))
    return draw.to(device)


def uniform(
    size: int, *, generator: torch.Generator | None, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """`(size,)` float32, uniform in [0, 1)."""
    device = torch.device(device)
    return torch.rand((size,), generator=generator, device=_draw_device(generator, device)).to(device)
