import pytest
import torch

from lvdm.discriminator import build_discriminator


def test_frame_discriminator_is_the_taming_patchgan_applied_per_frame():
    disc = build_discriminator("frame")
    # taming's NLayerDiscriminator(input_nc=3, ndf=64, n_layers=3) has 2,765,633 weights.
    assert sum(p.numel() for p in disc.parameters()) == 2_765_633
    logits = disc(torch.zeros(2, 3, 5, 32, 32))
    assert logits.shape == (2 * 5, 1, 2, 2)


def test_spacetime_discriminator_gives_space_time_patch_logits():
    disc = build_discriminator("spacetime", base_channels=8, num_layers=2, norm="group")
    logits = disc(torch.zeros(2, 3, 8, 16, 16))
    assert logits.shape == (2, 1, 2, 2, 2)
    assert disc(torch.zeros(1, 3, 1, 16, 16)).shape[2] == 1


def test_only_the_spacetime_discriminator_sees_the_order_of_frames():
    torch.manual_seed(0)
    video = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    reversed_video = video.flip(2)
    frame = build_discriminator("frame", base_channels=8, num_layers=2, norm="group")
    spacetime = build_discriminator("spacetime", base_channels=8, num_layers=2, norm="group")
    with torch.no_grad():
        assert torch.allclose(frame(reversed_video), frame(video).flip(0), atol=1e-6)
        a, b = spacetime(video), spacetime(reversed_video)
    assert not torch.allclose(a, b.flip(2), atol=1e-3)


def test_bad_choices_and_small_frames_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="'frame', 'spacetime'"):
        build_discriminator("video")
    with pytest.raises(ValueError, match="norm="):
        build_discriminator("frame", norm="instance")
    with pytest.raises(ValueError, match="at least 24x24"):
        build_discriminator("frame")(torch.zeros(1, 3, 2, 16, 16))
