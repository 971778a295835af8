"""Stride-aware prediction (issue 21): windows at several paces and the network's stride embedding."""

from __future__ import annotations

import pytest
import torch

from lvdm.diffusion.schedule import NoiseSchedule
from lvdm.diffusion.strides import strided_windows, window_span
from lvdm.diffusion_training import DiffusionTrainer
from lvdm.unet import UNet3D, init_from_unconditional
from tests.lvdm.conftest import TINY_UNET as TINY
from tests.lvdm.test_unet import randomised

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def numbered(b: int, span: int) -> torch.Tensor:
    """`b 1 span 1 1` sequences whose value is the latent's position, so a window shows its indices."""
    return torch.arange(span, dtype=torch.float32).repeat(b, 1)[:, None, :, None, None]


def test_window_span_counts_the_latents_a_strided_window_covers():
    assert window_span(4, 1) == 4
    assert window_span(4, 2) == 7
    assert window_span(1, 5) == 1


def test_each_window_is_evenly_spaced_at_its_own_stride_inside_the_span():
    generator = torch.Generator().manual_seed(0)
    windows, stride = strided_windows(numbered(256, 7), 4, [1, 2], generator=generator)
    positions = windows[:, 0, :, 0, 0]
    steps = positions.diff(dim=1)
    assert torch.equal(steps, stride[:, None].float().expand_as(steps))
    assert positions.min() >= 0 and positions.max() <= 6
    assert set(stride.tolist()) == {1, 2}
    # Stride 1 starts anywhere a window fits (0..3), not only at the beginning of the span.
    assert set(positions[stride == 1, 0].long().tolist()) == {0, 1, 2, 3}
    assert set(positions[stride == 2, 0].long().tolist()) == {0}


def test_a_span_too_short_for_the_largest_stride_is_refused():
    with pytest.raises(ValueError, match="needs 7 consecutive latents"):
        strided_windows(numbered(2, 6), 4, [1, 2])


def test_the_stride_changes_the_output_and_none_means_stride_one():
    torch.manual_seed(0)
    model = randomised(UNet3D(**TINY, max_stride=4)).eval()  # fresh stride rows are zero
    with torch.no_grad():
        x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([10, 500])
        one, two = (model(x, t, stride=torch.tensor([s, s])) for s in (1, 2))
        default = model(x, t)
    assert not torch.allclose(one, two)
    assert torch.equal(default, one)


def test_a_stride_outside_the_trained_range_or_without_an_embedding_is_an_error():
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([10])
    with pytest.raises(ValueError, match="outside 1..max_stride=2"):
        UNet3D(**TINY, max_stride=2)(x, t, stride=torch.tensor([3]))
    with pytest.raises(ValueError, match="max_stride=0"):
        UNet3D(**TINY)(x, t, stride=torch.tensor([1]))


def test_a_stride_aware_model_initialised_from_the_unconditional_one_computes_its_function():
    torch.manual_seed(0)
    unconditional = randomised(UNet3D(**TINY)).eval()
    model = UNet3D(**TINY, max_stride=2).eval()
    init_from_unconditional(model, unconditional.state_dict())
    x, t = torch.randn(1, 4, 3, 8, 8), torch.tensor([300])
    with torch.no_grad():
        assert torch.allclose(model(x, t, stride=torch.tensor([2])), unconditional(x, t))


def test_the_trainer_cuts_windows_at_mixed_strides_and_passes_the_stride():
    torch.manual_seed(0)
    model = UNet3D(**TINY, max_stride=2)
    trainer = DiffusionTrainer(
        model, NoiseSchedule.linear(timesteps=100), loss_type="l2", strides=[1, 2], frames=3
    )
    seen = []
    model.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs["stride"]), with_kwargs=True)
    logs = trainer.step(torch.randn(4, 4, window_span(3, 2), 8, 8))
    assert torch.isfinite(torch.tensor(logs["loss"]))
    assert seen[0].shape == (4,) and set(seen[0].tolist()) <= {1, 2}
