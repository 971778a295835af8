"""lvdm/diffusion/samplers.py and sampling.py: correctness with an exact denoiser, and the glue."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from einops import rearrange

from lvdm.diffusion import (
    NoiseSchedule,
    ddim,
    ddim_timesteps,
    ddpm,
    dpmpp,
    frames_mask,
    masked_input,
    sample_latents,
)

SCHEDULE = NoiseSchedule.linear()
# DDPM runs every step: a 250-step schedule with the same ᾱ_T range keeps the test fast.
SHORT = NoiseSchedule.linear(250, 0.006, 0.062)
MU, SIGMA = 0.5, 1.0  # latents are scaled to unit variance


def gaussian_eps(schedule: NoiseSchedule):
    """The exact ε-predictor for x0 ~ N(μ, σ²): q(x_t) = N(aμ, a²σ² + s²), ε* = s (x − aμ) / (a²σ² + s²)."""

    def eps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = schedule.at(schedule.sqrt_alphas_cumprod, t, x)
        s = schedule.at(schedule.sqrt_one_minus_alphas_cumprod, t, x)
        return s * (x - a * MU) / (a**2 * SIGMA**2 + s**2)

    return eps


def noise(n: int = 10_000, seed: int = 0) -> tuple[torch.Tensor, torch.Generator]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, generator=generator), generator


@pytest.mark.parametrize(
    "run",
    [
        pytest.param(lambda x, g: ddpm(gaussian_eps(SHORT), x[:4000], SHORT, generator=g), id="ddpm"),
        pytest.param(
            lambda x, g: ddim(gaussian_eps(SCHEDULE), x, SCHEDULE, steps=200, eta=0.0), id="ddim-eta0"
        ),
        pytest.param(
            lambda x, g: ddim(gaussian_eps(SCHEDULE), x, SCHEDULE, steps=200, eta=1.0, generator=g),
            id="ddim-eta1",
        ),
    ],
)
def test_samplers_with_the_exact_denoiser_reproduce_the_data_distribution(run) -> None:
    """200 DDIM steps: at 50 the std is 3% (η=0) to 6% (η=1) low, see bench_samplers.py.

    The mean tolerance covers x_T's prior mismatch: q(x_T) has mean √ᾱ_T·μ ≈ 0.013, not 0.
    """
    x_T, generator = noise()
    x = run(x_T, generator)
    assert x.mean().item() == pytest.approx(MU, abs=0.04)
    assert x.std().item() == pytest.approx(SIGMA, rel=0.03)


def test_a_wrong_denoiser_is_caught_by_the_same_check() -> None:
    """The check above has teeth: predicting ε for the wrong σ shifts the sample std."""
    global SIGMA
    x_T, _ = noise()
    true_sigma, SIGMA = SIGMA, 1.6
    try:
        x = ddim(gaussian_eps(SCHEDULE), x_T, SCHEDULE, steps=200, eta=0.0)
    finally:
        SIGMA = true_sigma
    assert abs(x.std().item() - true_sigma) > 0.2


def test_dpmpp_with_the_exact_denoiser_reproduces_the_data_distribution() -> None:
    pytest.importorskip("diffusers")
    x_T, _ = noise()
    x = dpmpp(gaussian_eps(SCHEDULE), x_T, SCHEDULE, steps=50)
    assert x.mean().item() == pytest.approx(MU, abs=0.04)
    assert x.std().item() == pytest.approx(SIGMA, rel=0.03)


def test_ddim_eta0_is_deterministic_and_eta1_depends_on_the_seed() -> None:
    eps = gaussian_eps(SCHEDULE)
    x_T, _ = noise(64)
    first = ddim(eps, x_T, SCHEDULE, steps=10, eta=0.0, generator=torch.Generator().manual_seed(1))
    second = ddim(eps, x_T, SCHEDULE, steps=10, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, second)
    seeded = [
        ddim(eps, x_T, SCHEDULE, steps=10, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)
    ]
    assert torch.equal(seeded[0], seeded[1]) and not torch.allclose(seeded[0], seeded[2])


def test_ddim_with_all_steps_and_eta1_is_ddpm() -> None:
    schedule = NoiseSchedule.linear(timesteps=50, linear_start=0.001, linear_end=0.2)
    x_T, _ = noise(256)
    eps = gaussian_eps(schedule)
    a = ddpm(eps, x_T, schedule, generator=torch.Generator().manual_seed(4))
    b = ddim(eps, x_T, schedule, steps=50, eta=1.0, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


class StandIn(torch.nn.Module):
    """Same call signature as UNet3D: `model(x, t, *, noise_level=None)`, x with the mask channel."""

    def __init__(self, channels: int = 2, max_noise_level: int = 0) -> None:
        super().__init__()
        self.config = SimpleNamespace(max_noise_level=max_noise_level)
        self.conv = torch.nn.Conv3d(channels + 1, channels, (1, 3, 3), padding=(0, 1, 1))
        self.time = torch.nn.Embedding(1000, channels)
        self.level = torch.nn.Embedding(max_noise_level + 1, channels) if max_noise_level else None
        self.calls: list[tuple[int, torch.Tensor | None]] = []

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, *, noise_level: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.calls.append((x.shape[0], noise_level))
        h = self.conv(x) + rearrange(self.time(t), "b c -> b c 1 1 1")
        if noise_level is not None:
            h = h + rearrange(self.level(noise_level), "b c -> b c 1 1 1")
        return 0.1 * h


SHAPE = (2, 2, 4, 4, 4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_conditioning_frames_come_out_exactly_equal_to_z_cond(sampler: str) -> None:
    model = StandIn(max_noise_level=250).eval()
    z_cond = torch.randn(SHAPE)
    mask = frames_mask(2, 4, [0, -1])
    x = sample_latents(
        model, SHAPE, SHORT, sampler=sampler, steps=10, z_cond=z_cond, mask=mask,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.equal(x[:, :, [0, 3]], z_cond[:, :, [0, 3]])
    assert not torch.allclose(x[:, :, 1:3], z_cond[:, :, 1:3])
    assert all(int(level.max()) == 0 for _, level in model.calls)  # s = 0 still reaches the embedding


def test_noise_level_perturbs_what_the_model_sees_but_not_the_output_frames() -> None:
    model = StandIn(max_noise_level=250)
    z_cond = torch.randn(SHAPE)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0][:, :2, 0]))
    x = sample_latents(
        model, SHAPE, SCHEDULE, steps=5, z_cond=z_cond, mask=frames_mask(2, 4, [0]), noise_level=100,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.equal(x[:, :, 0], z_cond[:, :, 0])
    assert all(torch.equal(frame, seen[0]) for frame in seen)  # z_s drawn once per call
    assert not torch.allclose(seen[0], z_cond[:, :, 0])
    assert all(level.tolist() == [100, 100] for _, level in model.calls)


def test_guidance_weight_zero_is_plain_conditional_sampling() -> None:
    model = StandIn(max_noise_level=250)
    z_cond = torch.randn(SHAPE)
    mask = frames_mask(2, 4, [0])
    x = sample_latents(
        model, SHAPE, SCHEDULE, steps=8, eta=1.0, z_cond=z_cond, mask=mask, guidance_weight=0.0,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(3)
    x_T = torch.randn(SHAPE, generator=generator)
    s = torch.zeros(2, dtype=torch.long)
    keep = rearrange(mask, "b t -> b 1 t 1 1")
    with torch.no_grad():
        expected = ddim(
            lambda x_t, t: model(masked_input(x_t, z_cond, mask), t, noise_level=s), x_T, SCHEDULE, steps=8,
            eta=1.0, generator=generator, after_step=lambda x_t: torch.where(keep, z_cond, x_t),
        )  # fmt: skip
    assert torch.equal(x, expected)


def test_guidance_is_one_batched_forward_per_step_with_the_same_noise_level() -> None:
    model = StandIn(max_noise_level=250)
    z_cond = torch.randn(SHAPE)
    x = sample_latents(
        model, SHAPE, SCHEDULE, steps=6, z_cond=z_cond, mask=frames_mask(2, 4, [0]), noise_level=50,
        guidance_weight=2.0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert len(model.calls) == 6
    assert all(batch == 4 and level.tolist() == [50] * 4 for batch, level in model.calls)
    assert torch.equal(x[:, :, 0], z_cond[:, :, 0])


def test_guidance_combines_conditional_and_unconditional_predictions() -> None:
    """With ε independent of x_t, one DDIM η=0 step gives x̂_0 from ε̃, so ε̃ can be checked."""
    schedule = NoiseSchedule.linear(timesteps=10)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 1.0 + 2.0 * x[:, -1:].expand(-1, 2, -1, -1, -1)  # ε_c = 3 at masked frames, ε_u = 1

    shape = (1, 2, 3, 1, 1)
    z_cond = torch.zeros(shape)
    mask = frames_mask(1, 3, [0])
    x = sample_latents(
        model, shape, schedule, steps=1, z_cond=z_cond, mask=mask, guidance_weight=0.5,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(ddim_timesteps(10, 1))
    guided = torch.tensor([1.0, 1.0, 1.0]).reshape(1, 1, 3, 1, 1).expand(shape).clone()
    guided[:, :, 0] = 1.5 * 3.0 - 0.5 * 1.0
    expected = schedule.predict_x0(x_T, t, guided)
    torch.testing.assert_close(x[:, :, 1:], expected[:, :, 1:])


def test_unconditional_sampling_calls_the_model_with_x_t_alone() -> None:
    seen: list[torch.Size] = []

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape)
        return torch.zeros_like(x)

    x = sample_latents(model, SHAPE, SCHEDULE, steps=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == SHAPE and seen == [torch.Size(SHAPE)] * 3


def test_sample_latents_errors_name_the_argument() -> None:
    model = StandIn()
    with pytest.raises(ValueError, match="z_cond is None"):
        sample_latents(model, SHAPE, SCHEDULE, mask=frames_mask(2, 4, [0]))
    with pytest.raises(ValueError, match="noise_level=5 but the model takes no noise-level"):
        sample_latents(model, SHAPE, SCHEDULE, mask=frames_mask(2, 4, []), noise_level=5)
    with pytest.raises(ValueError, match="unconditional guidance needs a conditional model"):
        sample_latents(lambda x, t: x, SHAPE, SCHEDULE, guidance_weight=1.0)
    with pytest.raises(ValueError, match="sampler must be"):
        sample_latents(model, SHAPE, SCHEDULE, sampler="euler")


def test_dpmpp_without_diffusers_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ImportError, match=r"pip install 'lvdm-pipeline\[samplers\]'"):
        dpmpp(lambda x, t: x, torch.zeros(1, 1), SCHEDULE)


def test_lvdm_diffusion_imports_without_diffusers() -> None:
    code = "import sys, lvdm.diffusion; assert 'diffusers' not in sys.modules, 'diffusers imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)
