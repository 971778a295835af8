"""Checkpoints are read without unpickling objects: a shared workdir must not run code."""

import pytest
import torch

from stages.ray_training import load_state


class Payload:
    """Anything not a tensor or a plain container; a real attack would use __reduce__."""


def test_a_checkpoint_carrying_a_pickled_object_is_refused(tmp_path):
    path = tmp_path / "trainer.pt"
    torch.save({"step": 3, "trainer": {"extra": Payload()}}, path)
    with pytest.raises(ValueError, match="pickled objects") as err:
        load_state(path)
    assert str(path) in str(err.value) and "rerun" in str(err.value)


def test_a_truncated_checkpoint_is_named_and_plain_ones_load(tmp_path):
    path = tmp_path / "trainer.pt"
    torch.save({"step": 3, "trainer": {"w": torch.ones(2)}, "scale": 0.5}, path)
    assert load_state(path)["step"] == 3
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="unreadable") as err:
        load_state(path)
    assert str(path) in str(err.value)
