"""lvdm/diffusion/masks.py, conditioning.py and loss.py (paper §3.3)."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from lvdm.diffusion import (
    NoiseSchedule,
    conditional_latent_perturbation,
    diffusion_loss,
    frames_mask,
    interpolation_mask,
    masked_input,
    prediction_mask,
    unconditional_guidance,
)

SCHEDULE = NoiseSchedule.linear()


def test_prediction_mask_conditions_the_first_k_frames_with_probability_p() -> None:
    mask = prediction_mask(20_000, 5, k=2, p=0.3, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (20_000, 5) and mask.dtype == torch.bool
    conditioned = mask[:, 0]
    assert bool((mask[:, 1] == conditioned).all()) and not bool(mask[:, 2:].any())
    assert conditioned.float().mean().item() == pytest.approx(0.3, abs=0.015)


def test_interpolation_mask_conditions_first_and_last_with_probability_p() -> None:
    mask = interpolation_mask(20_000, 5, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (20_000, 5)
    assert bool((mask[:, 0] == mask[:, -1]).all()) and not bool(mask[:, 1:-1].any())
    assert mask[:, 0].float().mean().item() == pytest.approx(0.9, abs=0.01)


def test_masks_are_reproducible_from_the_generator() -> None:
    draw = lambda: prediction_mask(64, 4, generator=torch.Generator().manual_seed(7))  # noqa: E731
    assert torch.equal(draw(), draw())


def test_frames_mask_takes_negative_indices_and_rejects_outside_ones() -> None:
    mask = frames_mask(2, 5, [0, -1])
    assert mask.tolist() == [[True, False, False, False, True]] * 2
    assert not bool(frames_mask(2, 5, []).any())
    with pytest.raises(ValueError, match="frame index 5"):
        frames_mask(2, 5, [5])


def test_perturbation_at_level_zero_is_the_identity_and_level_s_is_q_sample_at_s_minus_1() -> None:
    z = torch.randn(3, 4, 2, 4, 4)
    noise = torch.randn_like(z)
    s = torch.tensor([0, 1, 250])
    z_s = conditional_latent_perturbation(z, s, SCHEDULE, noise)
    assert torch.equal(z_s[0], z[0])
    torch.testing.assert_close(z_s[1:], SCHEDULE.q_sample(z[1:], s[1:] - 1, noise[1:]))
    assert torch.equal(
        conditional_latent_perturbation(z, torch.zeros(3, dtype=torch.long), SCHEDULE, noise), z
    )


def test_masked_input_replaces_masked_frames_and_appends_the_mask_channel() -> None:
    x_t, z = torch.randn(2, 2, 3, 4, 3, 3)
    mask = torch.tensor([[True, False, False, True], [False, False, False, False]])
    model_input = masked_input(x_t, z, mask)
    assert model_input.shape == (2, 4, 4, 3, 3)
    assert torch.equal(model_input[0, :3, 0], z[0, :, 0]) and torch.equal(model_input[0, :3, 1], x_t[0, :, 1])
    assert torch.equal(model_input[1, :3], x_t[1])
    channel = rearrange(mask.float(), "b t -> b 1 t 1 1").expand(2, 1, 4, 3, 3)
    assert torch.equal(model_input[:, 3:], channel)


def test_unconditional_guidance_is_one_plus_w_eps_c_minus_w_eps_u() -> None:
    eps_c, eps_u = torch.randn(2, 5)
    torch.testing.assert_close(unconditional_guidance(eps_c, eps_u, 2.0), 3 * eps_c - 2 * eps_u)
    assert torch.equal(unconditional_guidance(eps_c, eps_u, 0.0), eps_c)


class MaskAwareNet(torch.nn.Module):
    """ε̂ = conv(x) + `masked_offset` at the masked frames (read from the mask channel)."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(channels + 1, channels, 1)
        self.masked_offset = 0.0
        self.noise_levels: list[torch.Tensor | None] = []

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, *, noise_level: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.noise_levels.append(noise_level)
        return self.conv(x) + self.masked_offset * x[:, -1:]


def test_loss_ignores_the_model_output_at_masked_frames() -> None:
    model = MaskAwareNet()
    x0 = torch.randn(4, 2, 4, 3, 3)
    mask = frames_mask(4, 4, [0])

    def loss(offset: float) -> torch.Tensor:
        model.masked_offset = offset
        generator = torch.Generator().manual_seed(3)
        return diffusion_loss(model, x0, SCHEDULE, mask=mask, max_noise_level=250, generator=generator).loss

    assert torch.equal(loss(0.0), loss(100.0))
    assert all(s is not None and 0 <= int(s.min()) and int(s.max()) <= 250 for s in model.noise_levels)


def test_loss_is_the_mean_error_over_unmasked_frames_in_the_documented_draw_order() -> None:
    x0 = torch.randn(3, 2, 4, 3, 3)
    mask = torch.tensor([[True, False, False, False], [False] * 4, [True] * 4])
    zero = lambda x, t: torch.zeros(x.shape[0], 2, *x.shape[2:])  # noqa: E731
    for loss_type, error in (("l1", torch.abs), ("l2", torch.square)):
        result = diffusion_loss(
            zero, x0, SCHEDULE, mask=mask, loss_type=loss_type, generator=torch.Generator().manual_seed(5)
        )
        replay = torch.Generator().manual_seed(5)
        t = torch.randint(0, 1000, (3,), generator=replay)
        noise = torch.randn(x0.shape, generator=replay)
        assert torch.equal(result.t, t)
        expected = [error(noise[0, :, 1:]).mean(), error(noise[1]).mean()]
        torch.testing.assert_close(result.per_example, torch.stack([*expected, torch.tensor(0.0)]))
        torch.testing.assert_close(
            result.loss, (expected[0] + expected[1]) / 2
        )  # the all-masked example: no weight


def test_loss_of_fully_masked_batch_is_finite_and_backpropagates() -> None:
    model = MaskAwareNet()
    x0 = torch.randn(2, 2, 3, 2, 2)
    result = diffusion_loss(model, x0, SCHEDULE, mask=torch.ones(2, 3, dtype=torch.bool))
    assert torch.isfinite(result.loss) and result.loss.item() == 0.0
    result.loss.backward()


def test_unconditional_loss_calls_the_model_without_mask_or_noise_level() -> None:
    seen: list[tuple[torch.Size, dict]] = []

    def model(x: torch.Tensor, t: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        seen.append((x.shape, kwargs))
        return x

    x0 = torch.randn(2, 4, 3, 2, 2)
    result = diffusion_loss(model, x0, SCHEDULE, loss_type="l2", generator=torch.Generator().manual_seed(0))
    assert (
        seen == [(x0.shape, {})] and result.per_example.shape == (2,) and not result.per_example.requires_grad
    )
    again = diffusion_loss(model, x0, SCHEDULE, loss_type="l2", generator=torch.Generator().manual_seed(0))
    assert torch.equal(result.loss, again.loss)  # a resumed run that restores the generator reproduces it
    with pytest.raises(ValueError, match="pass a mask"):
        diffusion_loss(model, x0, SCHEDULE, max_noise_level=10)
