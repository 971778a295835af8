"""The training target: ε-prediction with L_simple (paper §3.2), masked for §3.3; or v.

One function over the network, so the training loop reads `diffusion_loss(...).loss.backward()`
and the schedule stays ignorant of the network (STYLE.md point 5).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange

from lvdm.diffusion.conditioning import conditional_latent_perturbation, masked_input
from lvdm.diffusion.draws import standard_normal, uniform_integers
from lvdm.diffusion.parameterisation import PREDICTIONS, v_target
from lvdm.diffusion.schedule import NoiseSchedule

LossType = Literal["l1", "l2"]
Weighting = Literal["none", "min_snr"]
WEIGHTINGS = ("none", "min_snr")


@dataclass(frozen=True)
class DiffusionLoss:
    """One training step's loss.

    Attributes:
        loss: scalar, the mean over examples that have a frame to predict; call `.backward()`.
        per_example: `(b,)` detached, each example's mean error over its unmasked frames
            (0 for an example with every frame masked).
        t: `(b,)` long, the timesteps drawn (for loss-by-timestep plots).
    """

    loss: torch.Tensor
    per_example: torch.Tensor
    t: torch.Tensor


def diffusion_loss(
    model: Callable[..., torch.Tensor],
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    *,
    mask: torch.Tensor | None = None,
    max_noise_level: int = 0,
    loss_type: LossType = "l1",
    generator: torch.Generator | None = None,
    stride: torch.Tensor | None = None,
    prediction: str = "eps",
    weighting: Weighting = "none",
    min_snr_gamma: float = 5.0,
) -> DiffusionLoss:
    """Draw t ~ U[0, T) and ε ~ N(0, I), and score the network's ε̂(x_t, t) against ε (or its
    v̂ against v, `prediction="v"`).

    Without a mask, the network sees `x_t` (the unconditional model). With a mask, it sees
    `masked_input(x_t, z_s, mask)`: the masked frames hold x0 itself diffused to a level s
    drawn per example uniformly in [0, max_noise_level] (conditional latent perturbation,
    §3.3), and s goes to the network as `noise_level` when max_noise_level > 0 (with 0 the
    network has no noise-level embedding and is called as `model(x, t)`; sampling follows the
    same rule, see `sampling.sample_latents`).

    The error is averaged over UNmasked frames only. At a masked frame the input holds z_s,
    not x_t, so the ε that made x_t there is not in the input at all: asking the network to
    predict it teaches nothing but noise, and those frames are overwritten by the condition
    at sampling anyway. (The official release scores them, against the perturbation noise.)
    An example with every frame masked has nothing to predict: it gets per-example loss 0
    and no weight in `loss`, never a 0/0 NaN.

    Args:
        model: `model(x, t, *, noise_level=None) -> ε̂`, x `(b, c[+1], t, h, w)`, t `(b,)` long.
        x0: `(b, c, t, h, w)` clean latents.
        schedule: the noise schedule.
        mask: `(b, t)` bool over latent frames (`masks.prediction_mask` etc.), or None.
        max_noise_level: s_max of the conditional latent perturbation (official: 250); 0 = off.
        loss_type: "l1" (the official configs) or "l2" (the paper's L_simple).
        generator: the source of every random draw (t, ε, s and the perturbation noise), in
            that order, so a resumed run that restores it reproduces the same batch loss.
        stride: `(b,)` long, the latent stride of each window, for a stride-aware network
            (`UNet3D(max_stride=...)`; `strides.strided_windows` draws it); None: not passed.
        prediction: what the network outputs, "eps" (scored against ε) or "v" (against
            v = √ᾱ·ε − √(1−ᾱ)·x0; `parameterisation`). Passed explicitly: a DDP-wrapped
            network hides its config.
        weighting: "none" (every timestep as the target's loss weighs it) or "min_snr"
            (`min_snr_weights`: Min-SNR-γ, Hang et al. 2023), which scales each example's
            loss; `per_example` stays unweighted, so loss-by-timestep plots stay comparable.
        min_snr_gamma: γ of "min_snr" (the paper's 5).
    """
    if loss_type not in ("l1", "l2"):
        raise ValueError(f"loss_type must be 'l1' or 'l2', got {loss_type!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    check_weighting(weighting, min_snr_gamma)
    if x0.ndim != 5:
        raise ValueError(f"x0 must be (b, c, t, h, w) latents, got shape {tuple(x0.shape)}")
    if not 0 <= max_noise_level <= schedule.timesteps:
        raise ValueError(f"max_noise_level must be in [0, {schedule.timesteps}], got {max_noise_level}")
    if max_noise_level > 0 and mask is None:
        raise ValueError(
            "max_noise_level > 0 perturbs conditioning frames: pass a mask, or max_noise_level=0"
        )
    b, _, frames, _, _ = x0.shape
    device = x0.device
    if stride is not None:
        model = functools.partial(model, stride=stride)

    t = uniform_integers(0, schedule.timesteps, b, generator=generator, device=device)
    noise = standard_normal(x0.shape, generator=generator, device=device, dtype=x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)

    if mask is None:
        output = model(x_t, t)
        mask = torch.zeros(b, frames, dtype=torch.bool, device=device)
    else:
        if tuple(mask.shape) != (b, frames):
            raise ValueError(
                f"mask must be (b, t) = ({b}, {frames}) over latent frames, got {tuple(mask.shape)}"
            )
        mask = mask.to(device=device, dtype=torch.bool)
        if max_noise_level > 0:
            s = uniform_integers(0, max_noise_level + 1, b, generator=generator, device=device)
            noise_s = standard_normal(x0.shape, generator=generator, device=device, dtype=x0.dtype)
            z_s = conditional_latent_perturbation(x0, s, schedule, noise_s)
            output = model(masked_input(x_t, z_s, mask), t, noise_level=s)
        else:
            output = model(masked_input(x_t, x0, mask), t)

    if output.shape != noise.shape:
        raise ValueError(
            f"the model must return ε (or v) of x0's shape {tuple(x0.shape)}, got {tuple(output.shape)}"
        )
    target = noise if prediction == "eps" else v_target(x0, noise, t, schedule)
    error = (output - target).abs() if loss_type == "l1" else (output - target).square()
    scored = rearrange(~mask, "b t -> b 1 t 1 1").to(error.dtype)
    elements_per_frame = error[:, :, 0].numel() // b
    counted = scored.sum(dim=(1, 2, 3, 4)) * elements_per_frame
    per_example = (error * scored).sum(dim=(1, 2, 3, 4)) / counted.clamp_min(1)
    has_target = (counted > 0).to(error.dtype)
    weight = has_target
    if weighting == "min_snr":
        weight = weight * min_snr_weights(t, schedule, prediction, min_snr_gamma).to(error)
    loss = (per_example * weight).sum() / has_target.sum().clamp_min(1)
    return DiffusionLoss(loss=loss, per_example=per_example.detach(), t=t)


def min_snr_weights(t: torch.Tensor, schedule: NoiseSchedule, prediction: str, gamma: float) -> torch.Tensor:
    """Per-example loss weights `(b,)` of Min-SNR-γ (Hang et al. 2023), float64.

    Each target's squared error is the error in x̂_0 weighted by SNR(t) (ε) or SNR(t) + 1 (v).
    Min-SNR-γ makes that weight min(SNR(t), γ): the nearly clean steps, where the error in x̂_0
    is tiny and a few pixels' worth of detail is decided, stop outweighing the noisy ones by up
    to 10⁵ (ε on the release's schedule), so the gradient is not spent on them; the paper
    reports converging about 3× faster. Against v it also lowers the pure-noise end (SNR ≪ 1),
    which v weighs about 1, by up to 1,000×; there a prediction network learns to read its given
    latents, and on the reference run's networks it found a fifth to two thirds as many shapes by
    colour with the weighting on (README, issue 21, "Min-SNR-γ weighting"). So it is off by
    default and kept as an option with its figures, as the issue asks.
    """
    check_weighting("min_snr", gamma)
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    alphas_cumprod = schedule.alphas_cumprod[t.cpu().long()]
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    target_weight = snr if prediction == "eps" else snr + 1.0
    return (snr.clamp(max=gamma) / target_weight).to(t.device)


def check_weighting(weighting: str, min_snr_gamma: float) -> None:
    """Refuses an unknown loss weighting or a γ ≤ 0: here once, for the loss and for a trainer
    that checks its settings when built rather than at its first step."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"loss_weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if min_snr_gamma <= 0:
        raise ValueError(f"min_snr_gamma must be > 0, got {min_snr_gamma}")
