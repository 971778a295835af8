"""The LVDM 3D UNet: shapes, the official parameter counts, training at batch 1, conditional init."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from lvdm.attention import Attention
from lvdm.unet import UNet3D, UNet3DConfig, init_from_unconditional
from lvdm.unet_blocks import ResBlock, SelfAttentionBlock, SpaceTimeAttention
from tests.lvdm.conftest import TINY_UNET as TINY

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every weight, zero-initialised ones included, so outputs depend on all of them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    return model


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("frames, height, width", [(1, 4, 4), (4, 8, 8), (3, 8, 12), (9, 4, 16)])
def test_output_has_input_shape_for_any_frame_count_and_size(frames, height, width):
    model = UNet3D(**TINY)
    x = torch.randn(2, 4, frames, height, width)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_fresh_temporal_attention_is_identity():
    block = SelfAttentionBlock(16, heads=2, norm_groups=8, axis="time", max_distance=4)
    x = torch.randn(2, 16, 5, 3, 3)
    torch.testing.assert_close(block(x), x)


def test_permuting_the_batch_permutes_the_output():
    model = randomised(UNet3D(**TINY)).eval()
    x, t = torch.randn(3, 4, 4, 8, 8), torch.tensor([10, 500, 900])
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(model(x[perm], t[perm]), model(x, t)[perm], atol=1e-5, rtol=1e-4)


def test_parameter_counts_match_the_official_release():
    with torch.device("meta"):
        assert count(UNet3D()) == 548_904_580
        assert count(UNet3D(in_channels=5, max_noise_level=250)) == 549_163_908
        assert count(UNet3D(in_channels=5, max_noise_level=250, temporal_length=5)) == 549_181_060
        model, config = UNet3D(), UNet3DConfig()
        assert count(ResBlock(256, 256, 1024, 32, 0.0)) == 1_705_984
        assert count(ResBlock(1024, 1024, 1024, 32, 0.0)) == 20_979_712
        assert [count(SpaceTimeAttention(c, config)) for c in (512, 768, 1024)] == [
            2_105_600,
            4_731_264,
            8_405_504,
        ]
    modules = list(model.modules())
    assert sum(count(m) for m in modules if isinstance(m, ResBlock)) == 407_104_256
    assert sum(count(m) for m in modules if isinstance(m, SpaceTimeAttention)) == 115_102_080
    assert sum(p.numel() for name, p in model.named_parameters() if "relative" in name) == 77_184
    assert (count(model.input_blocks), count(model.middle_block), count(model.output_blocks)) == (
        171_957_120,
        50_364_928,
        325_260_032,
    )


@pytest.mark.parametrize("use_checkpoint", [False, True])
def test_training_step_at_batch_size_one(use_checkpoint):
    """The release's in-place `x += out` makes this backward fail; ours must not."""
    model = randomised(UNet3D(**TINY, use_checkpoint=use_checkpoint)).train()
    x = torch.randn(1, 4, 4, 8, 8, requires_grad=True)
    model(x, torch.tensor([3])).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_checkpointing_gives_the_same_gradients():
    plain = randomised(UNet3D(**TINY)).train()
    checkpointed = UNet3D(**TINY, use_checkpoint=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x, t = torch.randn(2, 4, 3, 8, 8), torch.tensor([7, 700])
    for model in (plain, checkpointed):
        model(x, t).square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_missing_noise_level_is_a_clear_error():
    model = UNet3D(**{**TINY, "in_channels": 5}, max_noise_level=250)
    with pytest.raises(ValueError, match="pass noise_level"):
        model(torch.randn(1, 5, 2, 8, 8), torch.tensor([1]))
    assert model(torch.randn(1, 5, 2, 8, 8), torch.tensor([1]), noise_level=torch.tensor([250])).shape[1] == 4


def test_cross_attention_path_gives_the_input_shape():
    model = randomised(UNet3D(**TINY, context_dim=12, transformer_depth=2))
    x = torch.randn(2, 4, 3, 8, 8)
    assert model(x, torch.tensor([1, 2]), context=torch.randn(2, 7, 12)).shape == x.shape
    with pytest.raises(ValueError, match="context"):
        model(x, torch.tensor([1, 2]))


def test_conditional_model_from_unconditional_weights_equals_the_unconditional_model():
    """§4.1: prediction/interpolation start from the unconditional model. With the mask channel
    zero, the conditional model computes the same function at any noise level, including for
    distances beyond the old temporal_length (7 frames: distances up to 6 > 5 > 4)."""
    unconditional = randomised(UNet3D(**TINY)).eval()
    conditional = UNet3D(**{**TINY, "in_channels": 5}, max_noise_level=250, temporal_length=5).eval()
    init_from_unconditional(conditional, unconditional.state_dict())
    latents, t = torch.randn(2, 4, 7, 8, 8), torch.tensor([100, 900])
    with_mask = torch.cat([latents, torch.zeros(2, 1, 7, 8, 8)], dim=1)
    expected = unconditional(latents, t)
    for level in (torch.tensor([0, 0]), torch.tensor([37, 250])):
        torch.testing.assert_close(
            conditional(with_mask, t, noise_level=level), expected, atol=1e-5, rtol=1e-4
        )


def test_init_from_unconditional_rejects_other_mismatches():
    conditional = UNet3D(**{**TINY, "in_channels": 5}, max_noise_level=250)
    with pytest.raises(ValueError, match="cannot become"):
        init_from_unconditional(conditional, UNet3D(**{**TINY, "model_channels": 8}).state_dict())
    with pytest.raises(ValueError, match="not in the model"):
        init_from_unconditional(UNet3D(**TINY), conditional.state_dict())


def reference_relative_attention(attention: Attention, x: torch.Tensor) -> torch.Tensor:
    """Shaw et al.'s relative attention, pair by pair, single-headed per head."""
    b, n, dim = x.shape
    heads, d, r = attention.heads, attention.head_width, attention.max_distance
    q, k, v = (proj(x).reshape(b, n, heads, d) for proj in (attention.to_q, attention.to_k, attention.to_v))
    out = torch.zeros(b, n, heads, d)
    for i in range(n):
        rows = [min(max(j - i, -r), r) + r for j in range(n)]
        r_k, r_v = attention.relative_key[rows], attention.relative_value[rows]  # j d
        logits = ((q[:, i, :, None, :] * (k.transpose(1, 2) + r_k)).sum(-1)) / d**0.5  # b heads j
        weights = logits.softmax(-1)
        out[:, i] = (weights[..., None] * (v.transpose(1, 2) + r_v)).sum(-2)
    return attention.to_out(out.reshape(b, n, dim))


def test_relative_position_tables_match_the_pairwise_definition_and_change_the_output():
    torch.manual_seed(0)
    attention = Attention(8, heads=2, max_distance=2)
    x = torch.randn(3, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(attention(x), reference_relative_attention(attention, x))
        for table in (attention.relative_key, attention.relative_value):
            before = attention(x)
            saved = table.clone()
            table.zero_()
            assert not torch.allclose(attention(x), before, atol=1e-4)
            table.copy_(saved)


def test_constructor_takes_exactly_the_config_fields_and_yaml_lists():
    parameters = inspect.signature(UNet3D).parameters
    fields = {f.name: f.default for f in dataclasses.fields(UNet3DConfig)}
    assert {name: p.default for name, p in parameters.items()} == fields
    yaml_section = {**TINY, "channel_mult": [1, 2], "attention_resolutions": [2]}
    assert UNet3D(**yaml_section).config.channel_mult == (1, 2)


@pytest.mark.parametrize(
    "override, key",
    [
        ({"norm_groups": 6}, "norm_groups"),
        ({"num_heads": 3}, "num_heads"),
        ({"attention_resolutions": (4,)}, "attention_resolutions"),
        ({"temporal_attention_resolutions": (4,)}, "temporal_attention_resolutions"),
        ({"temporal_attention_resolutions": (2,)}, "temporal_attention_resolutions repeats"),
    ],
)
def test_invalid_config_names_the_key(override, key):
    with pytest.raises(ValueError, match=key):
        UNet3DConfig(**{**TINY, **override})


def test_spatial_size_not_divisible_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible by 2"):
        UNet3D(**TINY)(torch.randn(1, 4, 2, 6, 7), torch.tensor([0]))


def _frame_reach(model: UNet3D) -> float:
    """How much the last frame's output at full resolution moves when only the first frame's
    input is mirrored, through the top level's block alone (its output is the skip the decoder's
    last block takes). Without temporal attention only the GroupNorm statistics, which span t,
    carry anything across frames."""
    top = model.input_blocks[1]
    x = torch.randn(1, TINY["model_channels"], 4, 8, 8)
    moved = x.clone()
    moved[:, :, 0] = x[:, :, 0].flip(-1)
    emb = torch.zeros(1, model.config.time_embed_dim)
    with torch.no_grad():
        return float((top(moved, emb, None, False) - top(x, emb, None, False))[:, :, -1].abs().max())


def test_temporal_attention_only_levels_let_frames_see_each_other():
    """Frame-wise convolutions never mix time: without attention a level's last frame barely
    notices the first (measured 0.02-0.04 against 0.15-0.24 with it, seeds 0-2); with
    `temporal_attention_resolutions` it reads it, and no spatial attention is added."""
    plain = randomised(UNet3D(**{**TINY, "attention_resolutions": (2,)}))
    timed = randomised(UNet3D(**{**TINY, "temporal_attention_resolutions": (1,)}))
    assert _frame_reach(timed) > 3 * _frame_reach(plain)
    added = [m for m in timed.input_blocks[1] if isinstance(m, SelfAttentionBlock)]
    assert len(added) == 1 and not any(isinstance(m, SpaceTimeAttention) for m in timed.input_blocks[1])
    assert set(plain.state_dict()) < set(timed.state_dict())
