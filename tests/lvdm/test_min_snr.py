"""Min-SNR-γ loss weighting (Hang et al. 2023): closed-form weights, the weighted loss, refusals."""

from __future__ import annotations

import pytest
import torch

from lvdm.diffusion.loss import diffusion_loss, min_snr_weights
from lvdm.diffusion.parameterisation import v_target
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion_training import DiffusionTrainer
from lvdm.unet import UNet3D
from tests.lvdm.conftest import TINY_UNET

SCHEDULE = NoiseSchedule.linear()


def _snr(t: torch.Tensor) -> torch.Tensor:
    alpha = SCHEDULE.alphas_cumprod[t]
    return alpha / (1 - alpha)


def test_weights_make_the_x0_weight_min_snr_gamma_for_eps_and_v() -> None:
    t = torch.tensor([0, 50, 100, 400, 999])
    snr = _snr(t)
    for prediction, target_weight in (("eps", snr), ("v", snr + 1)):
        weights = min_snr_weights(t, SCHEDULE, prediction, gamma=5.0)
        # The target's error is the x0 error weighted by target_weight: the product is min(SNR, γ).
        torch.testing.assert_close(weights * target_weight, snr.clamp(max=5.0))
    eps = min_snr_weights(t, SCHEDULE, "eps", gamma=5.0)
    assert eps[0] < 0.01 and torch.equal(
        eps[snr <= 5.0], torch.ones(int((snr <= 5.0).sum()), dtype=eps.dtype)
    )


def test_weighted_loss_is_the_weighted_mean_of_the_unweighted_per_example_errors() -> None:
    x0 = torch.randn(6, 2, 3, 2, 2)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731

    def run(weighting: str):
        generator = torch.Generator().manual_seed(4)
        return diffusion_loss(
            zero, x0, SCHEDULE, loss_type="l2", generator=generator, prediction="v", weighting=weighting
        )

    plain, weighted = run("none"), run("min_snr")
    assert torch.equal(plain.t, weighted.t) and torch.equal(plain.per_example, weighted.per_example)
    replay = torch.Generator().manual_seed(4)
    t = torch.randint(0, 1000, (6,), generator=replay)
    noise = torch.randn(x0.shape, generator=replay)
    errors = v_target(x0, noise, t, SCHEDULE).square().mean(dim=(1, 2, 3, 4))
    expected = (errors * min_snr_weights(t, SCHEDULE, "v", 5.0).float()).mean()
    torch.testing.assert_close(weighted.loss, expected)
    torch.testing.assert_close(plain.loss, errors.mean())


def test_trainer_steps_with_min_snr_and_refuses_bad_settings() -> None:
    torch.manual_seed(0)
    network = UNet3D(**TINY_UNET)
    trainer = DiffusionTrainer(network, SCHEDULE, loss_type="l2", loss_weighting="min_snr", min_snr_gamma=1.0)
    logs = trainer.step(torch.randn(2, 4, 2, 8, 8))
    assert torch.isfinite(torch.tensor(logs["loss"]))
    with pytest.raises(ValueError, match="loss_weighting"):
        DiffusionTrainer(network, SCHEDULE, loss_weighting="snr")
    with pytest.raises(ValueError, match="min_snr_gamma"):
        DiffusionTrainer(network, SCHEDULE, loss_weighting="min_snr", min_snr_gamma=0.0)
    with pytest.raises(ValueError, match="weighting"):
        diffusion_loss(lambda x, t: x, torch.zeros(1, 1, 1, 1, 1), SCHEDULE, weighting="max_snr")
