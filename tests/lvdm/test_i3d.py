from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lvdm.metrics.i3d import InceptionI3d, SameMaxPool3d, _same_pads, load_i3d
from lvdm.pretrained.cache import MissingWeightsError
from lvdm.pretrained.convert import I3D_PARAMETERS


@pytest.fixture(scope="module")
def random_i3d() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval().requires_grad_(False)


def test_same_padding_puts_the_odd_pixel_after_like_tensorflow():
    x = torch.zeros(1, 1, 16, 224, 224)
    # Conv3d_1a: k=7, s=2 on 224 -> 112 needs 5 pixels: 2 before, 3 after (PyTorch would do 3/3).
    assert _same_pads(x, (7, 7, 7), (2, 2, 2)) == (2, 3, 2, 3, 2, 3)
    # stride 1, odd kernel: symmetric.
    assert _same_pads(x, (3, 3, 3), (1, 1, 1)) == (1, 1, 1, 1, 1, 1)
    # MaxPool3d_5a: k=2, s=2 on an even size needs none.
    assert _same_pads(torch.zeros(1, 1, 4, 14, 14), (2, 2, 2), (2, 2, 2)) == (0, 0, 0, 0, 0, 0)


def test_max_pool_padding_never_wins_a_max():
    # All values negative: zero padding would make the padded window's max 0.
    x = -torch.arange(1.0, 17.0).reshape(1, 1, 1, 4, 4)
    out = SameMaxPool3d((1, 3, 3), (1, 2, 2))(x)
    # size 4, k 3, s 2 -> pad 0 before, 1 after: windows rows/cols {0,1,2} and {2,3}.
    expected = torch.tensor([[-1.0, -3.0], [-9.0, -11.0]])
    assert torch.equal(out[0, 0, 0], expected)


def test_architecture_has_the_release_parameter_count(random_i3d: InceptionI3d):
    assert sum(p.numel() for p in random_i3d.parameters()) == I3D_PARAMETERS


def test_forward_gives_400_logits_and_1024_features(random_i3d: InceptionI3d):
    video = torch.rand(1, 3, 9, 224, 224) * 2 - 1  # 9 frames: the fewest the logits pool accepts
    assert random_i3d(video).shape == (1, 400)
    assert random_i3d.features(video).shape == (1, 1024)


@pytest.mark.parametrize(
    ("video", "message"),
    [
        (torch.zeros(1, 16, 224, 224, 3), "channels-last"),
        (torch.zeros(1, 16, 3, 224, 224), "(b, t, c, h, w)"),
        (torch.zeros(1, 3, 16, 112, 112), "112x112"),
        (torch.zeros(1, 3, 8, 224, 224), "8 frames"),
        (torch.zeros(1, 3, 16, 224, 224, dtype=torch.uint8), "torch.uint8"),
        (torch.full((1, 3, 16, 224, 224), 255.0), "[0, 255]"),
        (torch.zeros(3, 16, 224, 224), "(3, 16, 224, 224)"),
    ],
)
def test_bad_video_is_refused_before_any_compute(random_i3d: InceptionI3d, video, message):
    calls = []
    hook = random_i3d.blocks["Conv3d_1a_7x7"].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match="expected \\(b, 3, t, 224, 224\\)") as info:
            random_i3d(video)
    finally:
        hook.remove()
    assert message in str(info.value)
    assert calls == []


def test_load_i3d_without_weights_says_run_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("LVDM_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="lvdm weights fetch") as info:
        load_i3d()
    assert str(tmp_path) in str(info.value)


def test_load_i3d_reads_a_safetensors_state_dict(tmp_path, random_i3d: InceptionI3d):
    file = tmp_path / "i3d.safetensors"
    save_file(random_i3d.state_dict(), file)
    loaded = load_i3d(file)
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    for key, value in random_i3d.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_i3d_refuses_other_formats(tmp_path):
    file = tmp_path / "i3d_torchscript.pt"
    file.write_bytes(b"not ours")
    with pytest.raises(ValueError, match="safetensors"):
        load_i3d(file)


@pytest.mark.pretrained
def test_i3d_logits_match_the_jax_reference(pretrained_home, jax_reference, reference_clips):
    model = load_i3d()
    with torch.no_grad():
        logits = model(reference_clips).numpy()
    expected = jax_reference["i3d_logits"]
    diff = np.abs(logits - expected).max()
    assert diff < 1e-4, f"max |torch - jax| = {diff}"
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert np.array_equal(top5, np.argsort(-expected, axis=1)[:, :5])
