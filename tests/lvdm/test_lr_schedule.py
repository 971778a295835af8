"""The learning-rate schedule: closed-form values, and a trainer that sets them per step and
resumes onto the same rates (no scheduler state to lose)."""

import copy
import math

import pytest
import torch

from lvdm.lr_schedule import lr_factor
from pipelines.config import DiffusionTrainSection
from tests.lvdm.test_diffusion_training import _trainer


def test_cosine_decays_from_one_to_zero_through_a_half_at_the_middle():
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor("cosine", 100, 100) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor("cosine", 150, 100) == pytest.approx(0.0, abs=1e-12)  # resized past its end
    assert [lr_factor("constant", s, 100) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]


def test_warmup_ramps_linearly_then_the_schedule_starts_from_one():
    assert [lr_factor("constant", s, 100, warmup_steps=4) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor("cosine", 4, 104, warmup_steps=4) == 1.0
    assert lr_factor("cosine", 54, 104, warmup_steps=4) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("schedule", "total", "warmup", "match"),
    [("linear", 10, 0, "use one of constant, cosine"), ("cosine", 10, 10, "warmup_steps < total_steps")],
)
def test_a_bad_schedule_is_refused_with_what_to_change(schedule, total, warmup, match):
    with pytest.raises(ValueError, match=match):
        lr_factor(schedule, 0, total, warmup)


def test_the_trainer_steps_at_the_scheduled_rate_and_resumes_onto_it():
    batches = [torch.randn(2, 4, 4, 8, 8) for _ in range(4)]
    options = dict(lr=1e-3, lr_schedule="cosine", total_steps=4)
    straight = _trainer(**options)
    logs = [straight.step(b, step) for step, b in enumerate(batches)]
    assert [log["lr"] for log in logs] == pytest.approx([1e-3 * lr_factor("cosine", s, 4) for s in range(4)])
    assert straight.optimiser.param_groups[0]["lr"] == pytest.approx(1e-3 * lr_factor("cosine", 3, 4))

    first = _trainer(**options)
    for step, b in enumerate(batches[:2]):
        first.step(b, step)
    resumed = _trainer(seed=99, **options)
    resumed.load_state_dict(copy.deepcopy(first.state_dict()))
    assert [resumed.step(b, step)["loss"] for step, b in enumerate(batches[2:], start=2)] == [
        log["loss"] for log in logs[2:]
    ]
    # A constant run is not touched: the optimiser keeps the rate it was built with.
    assert _trainer(lr=1e-3).step(batches[0], 3)["lr"] == 1e-3


def test_a_schedule_without_its_length_is_refused():
    with pytest.raises(ValueError, match="needs total_steps"):
        _trainer(lr_schedule="cosine")


def test_the_config_hashes_the_schedule_only_when_it_is_not_constant_and_checks_warmup():
    constant = DiffusionTrainSection(steps=100)
    assert "lr_schedule" not in constant.hashed() and "warmup_steps" not in constant.hashed()
    cosine = DiffusionTrainSection(steps=100, lr_schedule="cosine")
    assert cosine.hashed()["lr_schedule"] == "cosine"
    with pytest.raises(ValueError, match=r"train.warmup_steps=100 must be fewer than train.steps=100"):
        DiffusionTrainSection(steps=100, warmup_steps=100)
