import copy
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lvdm.autoencoder import AutoencoderConfig, VideoAutoencoder
from lvdm.autoencoder_training import AutoencoderTrainer, psnr
from lvdm.discriminator import build_discriminator
from lvdm.losses.autoencoder_loss import AutoencoderLoss, AutoencoderLossConfig
from lvdm.resumable_generator import ResumableGenerator


class FeatureDistance(nn.Module):
    """A tiny stand-in for LPIPS: squared distance of fixed random conv features, `(b,)`."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.features(x) - self.features(y)).pow(2).mean(dim=(1, 2, 3))


def synthetic_clips(n: int, frames: int = 8, size: int = 16) -> torch.Tensor:
    """`n` distinct travelling colour waves, `n 3 t h w` in [-0.8, 0.8]."""
    t = torch.arange(frames).float().view(-1, 1, 1)
    y = torch.arange(size).float().view(1, -1, 1)
    x = torch.arange(size).float().view(1, 1, -1)
    clips = []
    for i in range(n):
        phase = 0.7 * i
        red = torch.sin(0.4 * x + 0.5 * t + phase) * torch.cos(0.3 * y)
        green = torch.cos(0.35 * y - 0.4 * t + phase).expand_as(red)
        blue = torch.sin(0.2 * (x + y) + phase).expand_as(red)
        clips.append(0.8 * torch.stack([red, green, blue]))
    return torch.stack(clips)


def tiny_trainer(
    disc_start: int = 1000, perceptual: nn.Module | None = None, kind: str = "frame", seed: int = 0, **kwargs
) -> AutoencoderTrainer:
    torch.manual_seed(seed)
    model = VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8))
    disc = build_discriminator(kind, base_channels=8, num_layers=2, norm="group")
    loss = AutoencoderLoss(
        AutoencoderLossConfig(
            reconstruction="mse",
            perceptual_weight=0.1 if perceptual is not None else 0.0,
            disc_start=disc_start,
        ),
        perceptual,
    )
    return AutoencoderTrainer(kwargs.pop("model", model), kwargs.pop("disc", disc), loss, lr=1e-3, **kwargs)


def test_tiny_autoencoder_overfits_a_few_clips(one_thread):
    clips = synthetic_clips(2)
    trainer = tiny_trainer()
    before = (trainer.reconstruct(clips) - clips).pow(2).mean().item()
    for step in range(50):
        trainer.step(clips, step)
    after = (trainer.reconstruct(clips) - clips).pow(2).mean().item()
    assert after < before / 5, f"reconstruction MSE {before:.4f} -> {after:.4f} in 50 steps"
    assert psnr(clips, trainer.reconstruct(clips)) > 16.0


def test_discriminator_switches_on_exactly_at_disc_start():
    clips = synthetic_clips(2)
    trainer = tiny_trainer(disc_start=2)
    disc_before = copy.deepcopy(trainer.discriminator.state_dict())
    for step in range(2):
        logs = trainer.step(clips, step)
        assert logs["ae/generator"] == 0.0 and logs["disc/active"] == 0.0
    assert not trainer.opt_disc.state, "discriminator optimiser stepped before disc_start"
    assert all(torch.equal(v, trainer.discriminator.state_dict()[k]) for k, v in disc_before.items())
    logs = trainer.step(clips, 2)
    assert logs["disc/active"] == 1.0
    assert logs["ae/generator"] != 0.0 and logs["ae/adaptive_weight"] > 0.0
    assert logs["disc/loss"] > 0.0 and logs["disc/grad_norm"] > 0.0
    assert trainer.opt_disc.state
    assert any(not torch.equal(v, trainer.discriminator.state_dict()[k]) for k, v in disc_before.items())


@pytest.mark.parametrize("kind", ["frame", "spacetime"])
def test_resumed_trainer_continues_exactly_like_the_uninterrupted_one(kind):
    clips = synthetic_clips(2)
    perceptual = FeatureDistance()
    run = tiny_trainer(disc_start=1, perceptual=perceptual, kind=kind)
    for step in range(3):
        run.step(clips, step)
    checkpoint = copy.deepcopy(run.state_dict())
    logs = run.step(clips, 3)

    resumed = tiny_trainer(disc_start=1, perceptual=perceptual, kind=kind, seed=123)
    resumed.load_state_dict(checkpoint)
    resumed_logs = resumed.step(clips, 3)
    assert resumed_logs == logs
    for a, b in zip(run.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(run.discriminator.parameters(), resumed.discriminator.parameters(), strict=True):
        assert torch.equal(a, b)
    assert resumed_logs["ae/perceptual"] > 0.0


def test_trainer_steps_models_wrapped_in_distributed_data_parallel(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        model = DistributedDataParallel(
            VideoAutoencoder(AutoencoderConfig(hidden=8, fs=4, ft=2, norm_groups=8))
        )
        disc = DistributedDataParallel(
            build_discriminator("frame", base_channels=8, num_layers=2, norm="group")
        )
        trainer = tiny_trainer(disc_start=1, model=model, disc=disc)
        clips = synthetic_clips(2)
        for step in range(3):
            logs = trainer.step(clips, step)
        assert logs["disc/active"] == 1.0 and logs["ae/adaptive_weight"] > 0.0
        assert set(trainer.state_dict()["model"]) == set(model.module.state_dict())
    finally:
        dist.destroy_process_group()


def test_bf16_autocast_step_runs_and_reports_finite_losses():
    trainer = tiny_trainer(disc_start=0, autocast_dtype=torch.bfloat16)
    logs = trainer.step(synthetic_clips(1), 0)
    assert all(math.isfinite(v) for v in logs.values())


def test_psnr_of_videos_in_minus_one_to_one():
    x = torch.zeros(2, 3, 4, 8, 8)
    # An error of 0.2 on [-1, 1] is 0.1 on [0, 1]: MSE 0.01, 20 dB.
    assert psnr(x, x + 0.2) == pytest.approx(20.0, abs=1e-4)
    assert psnr(x, x) == math.inf


def test_training_on_the_posterior_mean_does_not_depend_on_the_sampling_seed(one_thread):
    clips = synthetic_clips(2)
    mean_a, mean_b = (tiny_trainer(seed=0, sample_posterior=False) for _ in range(2))
    mean_b.generator = ResumableGenerator(99)  # another posterior-sampling generator: unused on the mean
    sampled = tiny_trainer(seed=0)
    for step in range(3):
        logs = [trainer.step(clips, step) for trainer in (mean_a, mean_b, sampled)]
    assert logs[0]["ae/loss"] == logs[1]["ae/loss"]
    assert logs[0]["ae/loss"] != logs[2]["ae/loss"]
