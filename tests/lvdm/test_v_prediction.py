"""v-prediction (issue 21): the target, its inverse, the loss and the sampler agree in closed form."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lvdm.diffusion.loss import diffusion_loss
from lvdm.diffusion.parameterisation import eps_from_v, model_prediction, v_target
from lvdm.diffusion.sampling import sample_latents
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.unet import UNet3D
from tests.lvdm.conftest import TINY_UNET

SCHEDULE = NoiseSchedule.linear(timesteps=100)


class Oracle(torch.nn.Module):
    """The exact network for data that is always `x0`: from x_t and t it knows ε, hence v."""

    def __init__(self, x0: torch.Tensor, prediction: str) -> None:
        super().__init__()
        self.x0 = x0
        self.config = SimpleNamespace(prediction=prediction, max_noise_level=0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = SCHEDULE.predict_eps(x, t, self.x0.expand_as(x))
        return eps if self.config.prediction == "eps" else v_target(self.x0.expand_as(x), eps, t, SCHEDULE)


def test_eps_from_v_inverts_v_target_at_every_timestep():
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(100, 3, 2, 4, 4, generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.arange(100)
    x_t = SCHEDULE.q_sample(x0, t, eps)
    torch.testing.assert_close(eps_from_v(v_target(x0, eps, t, SCHEDULE), x_t, t, SCHEDULE), eps)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_exact_network_has_zero_loss_only_against_its_own_target(prediction):
    x0 = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    oracle = Oracle(x0, prediction)
    batch = x0.expand(8, -1, -1, -1, -1)
    other = "v" if prediction == "eps" else "eps"
    own = diffusion_loss(oracle, batch, SCHEDULE, loss_type="l2", prediction=prediction)
    wrong = diffusion_loss(oracle, batch, SCHEDULE, loss_type="l2", prediction=other)
    assert own.loss.item() < 1e-8
    assert wrong.loss.item() > 1e-3


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_sampling_reads_the_prediction_off_the_network(prediction):
    """DDIM with the exact network lands on the data whichever output it has, and read the other
    way it does not in one step from t = T (over many steps the last, small-t steps, where
    ε ≈ v, mend it for a single point of data)."""
    x0 = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    oracle = Oracle(x0, prediction)
    other = "v" if prediction == "eps" else "eps"
    for steps, read_as, lands in ((10, prediction, True), (1, prediction, True), (1, other, False)):
        sample = sample_latents(
            oracle,
            (2, 3, 2, 4, 4),
            SCHEDULE,
            steps=steps,
            generator=torch.Generator().manual_seed(3),
            prediction=read_as,
        )
        assert bool((sample - x0).abs().max() < 1e-3) == lands, (steps, read_as)


def test_the_unet_carries_its_prediction_and_rejects_others():
    assert model_prediction(UNet3D(**TINY_UNET)) == "eps"
    assert model_prediction(UNet3D(**TINY_UNET, prediction="v")) == "v"
    assert model_prediction(lambda x, t: x) == "eps"
    with pytest.raises(ValueError, match="prediction"):
        UNet3D(**TINY_UNET, prediction="x0")
