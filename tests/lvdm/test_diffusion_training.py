"""DiffusionTrainer: it learns, it resumes exactly, its EMA is what sampling gets."""

import copy

import pytest
import torch

from lvdm.diffusion.masks import prediction_mask
from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion_training import DiffusionTrainer, TimestepBuckets
from lvdm.ema import EMA
from lvdm.precision import autocast_dtype
from lvdm.unet import UNet3D
from tests.lvdm.conftest import TINY_UNET as TINY


def _trainer(conditional: bool = False, seed: int = 0, **kwargs) -> DiffusionTrainer:
    torch.manual_seed(seed)
    unet = UNet3D(in_channels=5 if conditional else 4, max_noise_level=20 if conditional else 0, **TINY)
    sampler = (lambda b, t, g: prediction_mask(b, t, k=1, p=0.5, generator=g)) if conditional else None
    return DiffusionTrainer(
        unet,
        NoiseSchedule.linear(),
        mask_sampler=sampler,
        max_noise_level=20 if conditional else 0,
        seed=seed,
        **kwargs,
    )


def test_a_tiny_model_overfits_one_latent_clip():
    clip = torch.randn(1, 4, 2, 4, 4).repeat(4, 1, 1, 1, 1)
    trainer = _trainer(lr=3e-3, loss_type="l2", ema_decay=0.9)
    losses = [trainer.step(clip)["loss"] for _ in range(60)]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < first / 3, (first, last)


@pytest.mark.parametrize("conditional", [False, True])
def test_a_resumed_trainer_has_the_next_loss_of_the_uninterrupted_one(conditional):
    batches = [torch.randn(2, 4, 4, 8, 8) for _ in range(4)]
    straight = _trainer(conditional)
    losses = [straight.step(b)["loss"] for b in batches]

    first = _trainer(conditional)
    for b in batches[:2]:
        first.step(b)
    state = copy.deepcopy(first.state_dict())
    resumed = _trainer(conditional, seed=99)  # other init and seed: everything must come from the state
    resumed.load_state_dict(state)
    assert [resumed.step(b)["loss"] for b in batches[2:]] == losses[2:]
    for a, b in zip(resumed.ema.model.parameters(), straight.ema.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_ema_warms_up_then_tracks_slowly():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.999)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    assert ema.current_decay() == pytest.approx(2 / 11)  # LitEma warm-up: (1+n)/(10+n)
    expected = model.weight * (1 - 2 / 11) + (model.weight - 1.0) * (2 / 11)
    assert torch.allclose(ema.model.weight, expected)
    ema.num_updates = 10**6
    assert ema.current_decay() == 0.999


def test_timestep_buckets_average_per_range_and_reset():
    buckets = TimestepBuckets(1000, buckets=4)
    buckets.add(torch.tensor([0, 249, 250, 999]), torch.tensor([1.0, 3.0, 5.0, 7.0]))
    assert buckets.pop() == {"loss/t0-249": 2.0, "loss/t250-499": 5.0, "loss/t750-999": 7.0}
    assert buckets.pop() == {}


def test_precision_auto_is_bf16_only_where_native():
    from lvdm.precision import cpu_has_native_bf16

    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert autocast_dtype("fp32", cpu) is None and autocast_dtype("bf16", cpu) == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        autocast_dtype("fp16", cpu)


def test_bf16_autocast_training_step_runs_and_keeps_fp32_weights():
    trainer = _trainer(True, autocast_dtype=torch.bfloat16)
    logs = trainer.step(torch.randn(2, 4, 4, 8, 8))
    assert torch.isfinite(torch.tensor(logs["loss"]))
    assert all(p.dtype == torch.float32 for p in trainer.network.parameters())


def test_a_shared_network_draws_every_role_cuts_its_window_and_resumes_the_same_draws():
    """`roles`: each step one of §3.3's roles, uniformly, from the trainer's own generator; a
    role takes its window from the front of the batch's span (strided where it has strides)."""
    from lvdm.diffusion.masks import interpolation_mask
    from lvdm.diffusion_training import WindowRole

    seen: list[tuple[str, int]] = []

    def role(name: str, frames: int, strides=None) -> WindowRole:
        def sampler(b: int, t: int, g: torch.Generator) -> torch.Tensor:
            seen.append((name, t))
            if name == "interp":
                return interpolation_mask(b, t, p=1.0, generator=g)
            if name == "pred":
                return prediction_mask(b, t, k=1, p=1.0, generator=g)
            return torch.zeros(b, t, dtype=torch.bool)

        return WindowRole(frames, sampler, strides)

    def trainer(seed: int = 0) -> DiffusionTrainer:
        torch.manual_seed(seed)
        unet = UNet3D(in_channels=5, max_noise_level=20, max_stride=2, **TINY)
        roles = [role("uncond", 2, (1, 2)), role("pred", 2, (1, 2)), role("interp", 3)]
        return DiffusionTrainer(unet, NoiseSchedule.linear(), roles=roles, max_noise_level=20, seed=seed)

    assert [r.span for r in trainer().roles] == [3, 3, 3]
    batches = [torch.randn(2, 4, 3, 8, 8) for _ in range(24)]
    straight = trainer()
    losses = [straight.step(b)["loss"] for b in batches]
    assert {name for name, _ in seen} == {"uncond", "pred", "interp"}
    assert all(frames == (3 if name == "interp" else 2) for name, frames in seen)
    draws = [name for name, _ in seen]

    seen.clear()
    first = trainer()
    for b in batches[:12]:
        first.step(b)
    resumed = trainer(seed=5)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    seen.clear()
    assert [resumed.step(b)["loss"] for b in batches[12:]] == losses[12:]
    assert [name for name, _ in seen] == draws[12:]

    with pytest.raises(ValueError, match="this role needs 3"):
        straight.roles = [role("interp", 3)]
        straight.step(torch.randn(2, 4, 2, 8, 8))
    with pytest.raises(ValueError, match="no mask_sampler or strides beside them"):
        DiffusionTrainer(UNet3D(in_channels=5, **TINY), NoiseSchedule.linear(), roles=[], max_noise_level=0)
