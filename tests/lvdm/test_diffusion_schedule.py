"""lvdm/diffusion/schedule.py against the DDPM closed forms, computed independently in numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lvdm.diffusion import NoiseSchedule


def numpy_linear_betas(timesteps: int = 1000, start: float = 0.0015, end: float = 0.0155) -> np.ndarray:
    return np.linspace(start**0.5, end**0.5, timesteps, dtype=np.float64) ** 2


def test_linear_schedule_matches_official_endpoints_and_formula() -> None:
    schedule = NoiseSchedule.linear()
    assert schedule.timesteps == 1000
    assert schedule.betas.dtype == torch.float64
    assert schedule.betas[0].item() == pytest.approx(0.0015, rel=1e-12)
    assert schedule.betas[-1].item() == pytest.approx(0.0155, rel=1e-12)
    np.testing.assert_allclose(schedule.betas.numpy(), numpy_linear_betas(), rtol=1e-12)
    assert bool((schedule.betas.diff() > 0).all())
    assert schedule.alphas_cumprod[-1].item() < 1e-3  # x_T is nearly pure noise


def test_q_sample_has_the_closed_form_mean_and_standard_deviation() -> None:
    schedule = NoiseSchedule.linear()
    alphas_cumprod = np.cumprod(1.0 - numpy_linear_betas())
    t = torch.tensor([0, 1, 250, 999])
    x0 = torch.randn(4, 2, 3, 4, 4, dtype=torch.float64)
    noise = torch.randn_like(x0)
    a = torch.from_numpy(alphas_cumprod[t.numpy()]).reshape(4, 1, 1, 1, 1)
    # q_sample is affine in the noise: at ε = 0 it is the mean, its ε slope the std.
    torch.testing.assert_close(schedule.q_sample(x0, t, torch.zeros_like(x0)), a.sqrt() * x0)
    torch.testing.assert_close(schedule.q_sample(torch.zeros_like(x0), t, noise), (1 - a).sqrt() * noise)


def test_q_sample_statistics_match_the_marginal() -> None:
    schedule = NoiseSchedule.linear()
    x0 = torch.full((20_000,), 1.5)
    t = torch.full((20_000,), 300)
    noise = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    x_t = schedule.q_sample(x0, t, noise)
    a = np.cumprod(1.0 - numpy_linear_betas())[300]
    assert x_t.mean().item() == pytest.approx(a**0.5 * 1.5, abs=0.02)
    assert x_t.var().item() == pytest.approx(1 - a, rel=0.03)


def test_posterior_matches_bayes_rule_for_gaussians() -> None:
    """q(x_{t-1}|x_t,x_0) ∝ N(x_t; √α_t x_{t-1}, β_t) · N(x_{t-1}; √ᾱ_{t-1} x_0, 1-ᾱ_{t-1})."""
    schedule = NoiseSchedule.linear()
    betas = numpy_linear_betas()
    alphas_cumprod = np.cumprod(1.0 - betas)
    t = torch.tensor([1, 2, 500, 999])
    x0, x_t = torch.randn(2, 4, 3, 2, 2, 2, dtype=torch.float64)
    mean, variance, log_variance = schedule.posterior(x0, x_t, t)

    b, a_prev = betas[t.numpy()], alphas_cumprod[t.numpy() - 1]
    precision = 1 / (1 - a_prev) + (1 - b) / b
    expected_variance = torch.from_numpy(1 / precision).reshape(4, 1, 1, 1, 1)
    x0_term = torch.from_numpy(np.sqrt(a_prev) / (1 - a_prev)).reshape(4, 1, 1, 1, 1) * x0
    xt_term = torch.from_numpy(np.sqrt(1 - b) / b).reshape(4, 1, 1, 1, 1) * x_t
    torch.testing.assert_close(variance, expected_variance)
    torch.testing.assert_close(log_variance, expected_variance.log())
    torch.testing.assert_close(mean, expected_variance * (x0_term + xt_term))


def test_posterior_at_the_first_step_returns_x0() -> None:
    schedule = NoiseSchedule.linear()
    x0, x_t = torch.randn(2, 3, 4, 1, 2, 2, dtype=torch.float64)
    mean, variance, log_variance = schedule.posterior(x0, x_t, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert bool((variance == 0).all())
    assert bool(torch.isfinite(log_variance).all())  # clipped to the t = 1 value


def test_predict_x0_inverts_q_sample_in_the_data_dtype() -> None:
    schedule = NoiseSchedule.linear()
    x0 = torch.randn(3, 4, 2, 8, 8)
    noise = torch.randn_like(x0)
    t = torch.tensor([5, 400, 900], dtype=torch.int32)  # any integer dtype
    x_t = schedule.q_sample(x0, t, noise)
    assert x_t.dtype == torch.float32
    torch.testing.assert_close(schedule.predict_x0(x_t, t, noise), x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(schedule.predict_eps(x_t, t, x0), noise, atol=2e-4, rtol=1e-4)


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="linear_start"):
        NoiseSchedule.linear(linear_start=0.02, linear_end=0.01)
    with pytest.raises(ValueError, match=r"t must have shape \(b,\)"):
        NoiseSchedule.linear().q_sample(
            torch.zeros(2, 3), torch.zeros(3, dtype=torch.long), torch.zeros(2, 3)
        )
