"""The text-to-video blocks of lvdm/unet.py: the release's T2V UNet, temporal layers starting as identity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from lvdm.t2v_blocks import FrameGroupNorm, SpatioTemporalTransformer
from lvdm.unet import UNet3D

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"
TINY_T2V = dict(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(1, 2),
    num_heads=2,
    norm_groups=8,
    context_dim=12,
    temporal_length=4,
    use_scale_shift_norm=False,
    temporal_transformer=True,
)


def test_webvid_t2v_unet_has_the_releases_958_924_964_parameters() -> None:
    section = yaml.safe_load((PIPELINES / "webvid_t2v.yaml").read_text())["diffusion"]["unet"]
    with torch.device("meta"):
        model = UNet3D(**section)
    assert sum(p.numel() for p in model.parameters()) == 958_924_964


def _randomise_all_but_temporal_outputs(model: UNet3D) -> None:
    """Random weights everywhere (a trained SD) except the temporal output projections (zero at init)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not (".temporal" in name and ".to_out." in name):
                p.normal_(0, 0.2)


def _clip_vs_frames(model: UNet3D) -> float:
    """Largest difference between the clip's output and each frame run alone."""
    torch.manual_seed(1)
    x, t, context = torch.randn(2, 4, 3, 8, 8), torch.tensor([3, 900]), torch.randn(2, 5, 12)
    with torch.no_grad():
        clip = model(x, t, context=context)
        frames = torch.cat([model(x[:, :, f : f + 1], t, context=context) for f in range(3)], dim=2)
    return (clip - frames).abs().max().item()


def test_fresh_temporal_layers_leave_every_frame_to_itself() -> None:
    model = UNet3D(**TINY_T2V, frame_group_norm=True).eval()
    assert sum(isinstance(m, SpatioTemporalTransformer) for m in model.modules()) == 7
    assert all(isinstance(m, FrameGroupNorm) for m in model.modules() if isinstance(m, torch.nn.GroupNorm))
    _randomise_all_but_temporal_outputs(model)
    assert _clip_vs_frames(model) <= 1e-5
    with torch.no_grad():
        model.middle_block[1].blocks[0].temporal2.attention.to_out.weight.normal_(0, 0.5)
    assert _clip_vs_frames(model) > 1e-3


def test_release_group_norm_spans_the_clip() -> None:
    """Without frame_group_norm (the release's numerics) frames meet in every GroupNorm."""
    model = UNet3D(**TINY_T2V).eval()
    _randomise_all_but_temporal_outputs(model)
    assert _clip_vs_frames(model) > 1e-3


def test_temporal_output_projections_learn_from_step_zero() -> None:
    model = UNet3D(**TINY_T2V)
    _randomise_all_but_temporal_outputs(model)
    x, t, context = torch.randn(1, 4, 3, 8, 8), torch.tensor([5]), torch.randn(1, 5, 12)
    model(x, t, context=context).square().mean().backward()
    to_out = model.input_blocks[1][1].blocks[0].temporal1.attention.to_out.weight
    assert to_out.grad is not None and to_out.grad.abs().max() > 0


def test_text_changes_the_output() -> None:
    model = UNet3D(**TINY_T2V).eval()
    _randomise_all_but_temporal_outputs(model)
    x, t = torch.randn(1, 4, 2, 8, 8), torch.tensor([5])
    with torch.no_grad():
        a, b = (model(x, t, context=torch.randn(1, 5, 12)) for _ in range(2))
    assert (a - b).abs().max() > 1e-3


def test_temporal_transformer_needs_text_width() -> None:
    with pytest.raises(ValueError, match="temporal_transformer=true needs context_dim"):
        UNet3D(**{**TINY_T2V, "context_dim": None})
