"""Samplers: plain functions `(denoiser, x_T, schedule, ...) -> x_0` (as in k-diffusion).

A denoiser is any callable `eps = denoiser(x_t, t)`, x_t `(b, ...)`, t `(b,)` long. Masks,
the conditional latent perturbation and guidance are wrapped around the network before it
gets here (`sampling.sample_latents`), so these functions know nothing about conditioning.
`after_step(x) -> x` runs after every step, the last included: the glue uses it to put the
conditioning frames back.

No x̂_0 clipping anywhere: latents are unbounded (LDM samples latents unclipped too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from lvdm.diffusion.draws import standard_normal
from lvdm.diffusion.schedule import NoiseSchedule

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# DDIM's last jump: to ᾱ = 1 (x̂_0, ours) or to ᾱ_0 (the release's sampler).
DDIM_LAST_STEPS = ("x0", "release")
AfterStep = Callable[[torch.Tensor], torch.Tensor]


def _progress(steps: Iterable[int], total: int, progress: bool, name: str) -> Iterable[int]:
    return tqdm(steps, total=total, desc=name, disable=not progress, leave=False)


def _timestep(i: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)


def ddpm(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """Ancestral sampling through all T steps (DDPM, Ho et al. 2020, Algorithm 2).

    Each step draws x_{t−1} ~ q(x_{t−1} | x_t, x̂_0) with the posterior's clipped log-variance
    (the "fixed small" variance of the official code); the last step (t = 0) returns the mean,
    which is x̂_0 itself.
    """
    x = x_T
    for i in _progress(reversed(range(schedule.timesteps)), schedule.timesteps, progress, "DDPM"):
        t = _timestep(i, x)
        x0 = schedule.predict_x0(x, t, denoiser(x, t))
        mean, _, log_variance = schedule.posterior(x0, x, t)
        if i > 0:
            noise = standard_normal(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + (0.5 * log_variance).exp() * noise
        else:
            x = mean
        if after_step is not None:
            x = after_step(x)
    return x


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """The `steps` timesteps a few-step sampler visits, high to low: ⌊k·T/steps⌋ + 1.

    The official LDM/LVDM grid (`range(0, T, T // steps) + 1`: 981, 961, …, 1 for 50 of
    1000), kept because bench_samplers.py measured it better than starting at T − 1
    ("trailing", Lin et al. 2024) at 10, 20 and 50 steps for this schedule: the last jump,
    from timestep 1 to x̂_0, is almost exact, while trailing's last jump (from T/steps − 1)
    blurs the samples; and ᾱ is ~0 above the first step anyway (ᾱ_981 ≈ 1e-3). The +1 is
    dropped where it would leave [0, T) (steps close to T), so steps = T visits every timestep.
    """
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be in [1, T] = [1, {timesteps}], got steps={steps}")
    grid = [k * timesteps // steps for k in range(steps)]  # strictly increasing: T / steps >= 1
    offset = 1 if grid[-1] < timesteps - 1 else 0
    return [i + offset for i in reversed(grid)]


def ddim(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int = 50,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    after_step: AfterStep | None = None,
    last_step: str = "x0",
) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over `ddim_timesteps(T, steps)`.

    η = 0 is the deterministic sampler (the probability-flow ODE discretised); η = 1 has the
    DDPM posterior's variance at each jump, and with steps = T it is DDPM exactly. The
    official scripts sample with 50 steps and η = 1 (our defaults). The final jump goes to
    ᾱ = 1, i.e. returns x̂_0 and draws no noise; the official sampler jumps to ᾱ_0 < 1 instead,
    which leaves one forward step of noise (std √β_0 ≈ 0.04) in every sample.
    `last_step="release"` makes that last jump the release's (ᾱ_prev of the first grid point
    is ᾱ_0, `make_ddim_sampling_parameters` of LVDM/LDM), so with the same network and x_T
    this function reproduces the release's DDIM number for number; "x0" (this function's
    default) is ours. With an exact denoiser the release's jump measured closer to the data
    (benchmarks/bench_ddim_last_step.py: x̂_0 = E[x_0 | x_1] under-disperses), so the
    pipelines' `sampling.ddim_last_step` defaults to "release".
    """
    if last_step not in DDIM_LAST_STEPS:
        raise ValueError(f"last_step must be one of {DDIM_LAST_STEPS}, got {last_step!r}")
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0: deterministic, 1: DDPM-like), got eta={eta}")
    visited = ddim_timesteps(schedule.timesteps, steps)
    alphas_cumprod = schedule.alphas_cumprod
    x = x_T
    for index, i in enumerate(_progress(visited, len(visited), progress, "DDIM")):
        t = _timestep(i, x)
        eps = denoiser(x, t)
        x0 = schedule.predict_x0(x, t, eps)
        a_t = alphas_cumprod[i].item()
        if index + 1 < len(visited):
            a_prev = alphas_cumprod[visited[index + 1]].item()
        else:
            a_prev = alphas_cumprod[0].item() if last_step == "release" else 1.0
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)) ** 0.5
        x = a_prev**0.5 * x0 + max(1 - a_prev - sigma**2, 0.0) ** 0.5 * eps
        if sigma > 0:
            x = x + sigma * standard_normal(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if after_step is not None:
            x = after_step(x)
    return x


def dpmpp(
    denoiser: Denoiser,
    x_T: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    steps: int = 20,
    order: int = 2,
    progress: bool = False,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """DPM-Solver++ multistep (Lu et al. 2022), deterministic, via diffusers' scheduler.

    Optional: needs `pip install 'lvdm-pipeline[samplers]'` (diffusers), imported only here so
    `lvdm` itself needs torch and einops alone. Our float64 betas go in as `trained_betas`
    (diffusers casts them to float32), so the solver integrates the ODE of the schedule the
    network was trained with. Timesteps use diffusers' "trailing" spacing (999, …, T/steps − 1,
    then σ = 0): on `ddim_timesteps`' grid its last jump, from timestep 1 to σ = 0, is an
    infinite log-SNR step, and bench_samplers.py measured it 2x worse at 10 steps.
    """
    try:
        from diffusers import DPMSolverMultistepScheduler
    except ImportError as error:
        raise ImportError(
            "the dpmpp sampler needs diffusers: pip install 'lvdm-pipeline[samplers]', or use sampler='ddim'"
        ) from error
    if not 1 <= steps <= schedule.timesteps:
        raise ValueError(f"steps must be in [1, T] = [1, {schedule.timesteps}], got steps={steps}")
    scheduler = DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.timesteps,
        trained_betas=schedule.betas.numpy(),
        algorithm_type="dpmsolver++",
        solver_order=order,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        lower_order_final=True,
        final_sigmas_type="zero",
    )
    scheduler.set_timesteps(steps, device=x_T.device)
    x = x_T * scheduler.init_noise_sigma
    for timestep in _progress(scheduler.timesteps, len(scheduler.timesteps), progress, "DPM-Solver++"):
        t = _timestep(int(timestep), x)
        x = scheduler.step(denoiser(x, t), timestep, x).prev_sample
        if after_step is not None:
            x = after_step(x)
    return x
