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


def _tiny_trainer(seed: int = 0):
    from lvdm.diffusion.schedule import NoiseSchedule
    from lvdm.diffusion_training import DiffusionTrainer
    from lvdm.unet import UNet3D

    torch.manual_seed(seed)
    # One level, no attention: Dynamo's tracing time grows with the graph, and the prefix
    # question does not depend on the network's size.
    unet = UNet3D(
        model_channels=8, channel_mult=(1,), num_res_blocks=1, attention_resolutions=(), norm_groups=4
    )
    return DiffusionTrainer(unet, NoiseSchedule.linear(), seed=seed)


def test_a_compiled_network_checkpoints_without_orig_mod_prefixes_and_steps_the_same(one_thread):
    from stages.ray_training import compile_network

    batch = torch.randn(2, 4, 2, 4, 4)
    plain, compiled = _tiny_trainer(), _tiny_trainer()
    # Dynamo traces for real; the eager backend skips Inductor's minutes of C++ codegen on CPU.
    compile_network(compiled.model, {"compile": True}, backend="eager")
    assert compiled.model._compiled_call_impl is not None, "train.compile did not compile"
    assert compiled.ema.model._compiled_call_impl is None, "the EMA copy must run its own weights"
    losses = [(plain.step(batch, i)["loss"], compiled.step(batch, i)["loss"]) for i in range(1)]
    assert all(a == pytest.approx(b, rel=1e-5) for a, b in losses), losses
    saved, expected = compiled.state_dict(), plain.state_dict()
    for part in ("model", "ema"):
        keys = saved[part]["model"].keys() if part == "ema" else saved[part].keys()
        assert not [k for k in keys if "_orig_mod" in k]
    assert saved["model"].keys() == expected["model"].keys()
    assert saved["ema"]["model"].keys() == expected["ema"]["model"].keys()
    compile_network(plain.model, {"compile": False})
    assert plain.model._compiled_call_impl is None


def test_throughput_gives_mfu_only_where_the_peak_is_known():
    from lvdm.mfu import peak_flops
    from stages.ray_training import throughput

    assert throughput(None, 10, 1.0, None) == {}
    assert throughput(int(2e12), 10, 2.0, None) == {"tflops_per_worker": pytest.approx(10.0)}
    card, peak = peak_flops("NVIDIA H100 80GB HBM3", torch.bfloat16)
    assert card == "H100 SXM" and peak == pytest.approx(989.4e12)
    logs = throughput(int(98.94e12), 10, 2.0, (card, peak))
    assert logs["mfu"] == pytest.approx(0.5)
    assert peak_flops("NVIDIA H100 PCIe", None) == ("H100 PCIe", pytest.approx(51.2e12))
    assert peak_flops("NVIDIA H200", torch.bfloat16)[0] == "H200 SXM"
    assert peak_flops("NVIDIA A100-SXM4-80GB", torch.bfloat16)[1] == pytest.approx(312e12)
    assert peak_flops("NVIDIA L4", torch.bfloat16)[0] == "L4"
    assert peak_flops("NVIDIA L40S", torch.bfloat16)[0] == "L40S"
    assert peak_flops("cpu", None) is None
