"""DDIM's last jump: ours ends at x̂_0, the release's (`last_step="release"`) at ᾱ_0."""

from __future__ import annotations

import pytest
import torch

from lvdm.diffusion.samplers import ddim, ddim_timesteps
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule


def release_ddim_eta0(eps_fn, x: torch.Tensor, schedule: NoiseSchedule, steps: int) -> torch.Tensor:
    """The release's deterministic DDIM written out: grid `range(0, T, T // steps) + 1` and
    ᾱ_prev = [ᾱ_0, ᾱ of the grid but its last] (LDM's make_ddim_sampling_parameters)."""
    a = schedule.alphas_cumprod.double()
    grid = list(range(0, schedule.timesteps, schedule.timesteps // steps))
    grid = [g + 1 for g in grid]
    prev = [a[0].item()] + [a[g].item() for g in grid[:-1]]
    for index in reversed(range(len(grid))):
        t = torch.full((x.shape[0],), grid[index], dtype=torch.long)
        eps = eps_fn(x, t)
        a_t, a_prev = a[grid[index]].item(), prev[index]
        x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x


def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x) * (t.double()[:, None] / 1000)


def test_release_last_step_reproduces_the_release_ddim_and_the_default_ends_at_x0():
    schedule = NoiseSchedule.linear()
    x_T = torch.randn(3, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert ddim_timesteps(1000, 50)[-1] == 1
    release = release_ddim_eta0(eps_fn, x_T.clone(), schedule, 50)
    ours_release = ddim(eps_fn, x_T.clone(), schedule, steps=50, eta=0.0, last_step="release")
    assert (ours_release - release).abs().max().item() < 1e-12
    ours = ddim(eps_fn, x_T.clone(), schedule, steps=50, eta=0.0)
    assert (ours - release).abs().max().item() > 1e-4  # the default keeps its own last jump


def test_sample_latents_passes_the_last_step_and_checks_it():
    schedule = NoiseSchedule.linear()
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731  ε = 0: x̂_0 = x_t / √ᾱ_t
    kwargs = dict(steps=2, eta=0.0, generator=torch.Generator().manual_seed(0))
    x0 = sample_latents(model, (1, 2, 1, 2, 2), schedule, **kwargs)
    kwargs["generator"] = torch.Generator().manual_seed(0)
    released = sample_latents(model, (1, 2, 1, 2, 2), schedule, ddim_last_step="release", **kwargs)
    assert torch.allclose(released, x0 * schedule.alphas_cumprod[0].sqrt().float())
    with pytest.raises(ValueError, match="last_step"):
        ddim(model, torch.zeros(1, 2), schedule, steps=2, last_step="alpha_1")
