"""What the network's output means: the noise ε (the paper, LDM) or the velocity v.

v = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0 (Salimans & Ho 2022). Trained on v with L2, the error in x̂_0
counts with weight 1 + SNR(t) instead of ε's SNR(t): on the release's linear schedule the
near-pure-noise steps (SNR 0.010 at t = 800, 0.0014 at t = 950), where a sample's colours and
layout are decided and where a prediction network must read them off its given frames, get
100-700x more of the gradient. Issue 21 found why it matters for small budgets: an ε
prediction network had barely learned to read its given latent and its continuations changed
every object's colour within 2 frames (README, "What stopped the small models", point 4).

The samplers and guidance work on ε; `as_eps_model` turns a v network into an ε callable, so
nothing below `sampling.sample_latents` knows which one it runs. ε from v is affine in v with
coefficients of x_t and t only, so guidance gives the same result in either space.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from lvdm.diffusion.schedule import NoiseSchedule

Prediction = Literal["eps", "v"]
PREDICTIONS = ("eps", "v")


def model_prediction(model: Callable[..., torch.Tensor]) -> str:
    """`model.config.prediction` ("eps" or "v"); "eps" for a model without one (a plain callable)."""
    return getattr(getattr(model, "config", None), "prediction", "eps")


def v_target(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """v = √ᾱ_t · ε − √(1 − ᾱ_t) · x_0 for the x_t that `schedule.q_sample(x0, t, noise)` makes."""
    return (
        schedule.at(schedule.sqrt_alphas_cumprod, t, x0) * noise
        - schedule.at(schedule.sqrt_one_minus_alphas_cumprod, t, x0) * x0
    )


def eps_from_v(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule) -> torch.Tensor:
    """ε = √ᾱ_t · v + √(1 − ᾱ_t) · x_t, exact for x_t = √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε."""
    return (
        schedule.at(schedule.sqrt_alphas_cumprod, t, x_t) * v
        + schedule.at(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * x_t
    )


def as_eps_model(
    model: Callable[..., torch.Tensor], schedule: NoiseSchedule, prediction: str | None = None
) -> Callable[..., torch.Tensor]:
    """`model` as `model(x, t, **kw) -> ε̂`, whatever it outputs: an ε network as it is, a v
    network wrapped. `prediction` ("eps" or "v") defaults to `model_prediction(model)`.

    x may carry extra input channels after the latents (the mask channel of §3.3): x_t is its
    first channels, as many as v has. At a conditioning frame x holds z_s, not x_t; ε̂ is
    meaningless there, as with an ε network, and the sampler puts the condition back."""
    prediction = model_prediction(model) if prediction is None else prediction
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if prediction == "eps":
        return model

    def eps(x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        v = model(x, t, **kwargs)
        return eps_from_v(v, x[:, : v.shape[1]], t, schedule)

    return eps
