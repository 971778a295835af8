"""The temporal attention's two relative-key conventions against a direct loop over the formulas."""

from __future__ import annotations

import math

import pytest
import torch

from lvdm.attention import Attention
from lvdm.unet import UNet3D, UNet3DConfig

HEADS, HEAD_WIDTH, FRAMES, MAX_DISTANCE = 2, 4, 7, 2  # 7 frames > 2L+1: clipping is exercised


def _clip_row(distance: int) -> int:
    return max(-MAX_DISTANCE, min(MAX_DISTANCE, distance)) + MAX_DISTANCE


def loop_attention(attention: Attention, x: torch.Tensor, convention: str) -> torch.Tensor:
    """`x: n c` (one sequence) through the formulas, one (i, j) pair at a time, float64.

    standard: logit(i, j) = (q_i·k_j + q_i·r_k[clip(j − i)]) / √d
    official: logit(i, j) = (q_i·k_j) / √d + (q_j·r_k[clip(i − j)]) / d^(1/4)
    both:     out_i = Σ_j a_ij (v_j + r_v[clip(j − i)])
    """
    d = HEAD_WIDTH
    q, k, v = attention.to_q(x), attention.to_k(x), attention.to_v(x)
    r_k, r_v = attention.relative_key, attention.relative_value
    heads_out = []
    for h in range(HEADS):
        part = slice(h * d, (h + 1) * d)
        qh, kh, vh = q[:, part], k[:, part], v[:, part]
        logits = torch.zeros(FRAMES, FRAMES, dtype=x.dtype)
        for i in range(FRAMES):
            for j in range(FRAMES):
                if convention == "standard":
                    logits[i, j] = (qh[i] @ kh[j] + qh[i] @ r_k[_clip_row(j - i)]) / math.sqrt(d)
                else:
                    logits[i, j] = qh[i] @ kh[j] / math.sqrt(d) + qh[j] @ r_k[_clip_row(i - j)] / d**0.25
        weights = logits.softmax(dim=-1)
        out = torch.zeros(FRAMES, d, dtype=x.dtype)
        for i in range(FRAMES):
            for j in range(FRAMES):
                out[i] += weights[i, j] * (vh[j] + r_v[_clip_row(j - i)])
        heads_out.append(out)
    return attention.to_out(torch.cat(heads_out, dim=-1))


@pytest.mark.parametrize("convention", ["standard", "official"])
def test_relative_attention_equals_the_loop_over_its_formula(convention):
    torch.manual_seed(0)
    attention = Attention(
        HEADS * HEAD_WIDTH, HEADS, max_distance=MAX_DISTANCE, relative_key=convention
    ).double()
    x = torch.randn(3, FRAMES, HEADS * HEAD_WIDTH, dtype=torch.float64)
    with torch.no_grad():
        fast = attention(x)
        expected = torch.stack([loop_attention(attention, sequence, convention) for sequence in x])
    assert (fast - expected).abs().max().item() < 1e-12


def test_the_two_conventions_compute_different_functions():
    torch.manual_seed(0)
    standard = Attention(8, 2, max_distance=2).double()
    official = Attention(8, 2, max_distance=2, relative_key="official").double()
    official.load_state_dict(standard.state_dict())  # same weights: no mapping turns one into the other
    x = torch.randn(2, 5, 8, dtype=torch.float64)
    with torch.no_grad():
        assert (standard(x) - official(x)).abs().max().item() > 1e-3


def test_unet_passes_its_relative_key_to_every_temporal_attention_and_defaults_to_standard():
    tiny = dict(
        model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,), norm_groups=8
    )
    assert UNet3DConfig().relative_key == "standard"  # older unet.pt files carry no relative_key
    for convention in ("standard", "official"):
        model = UNet3D(**tiny, num_heads=2, relative_key=convention)
        temporal = [m for name, m in model.named_modules() if name.endswith("temporal.attention")]
        assert temporal and all(m.key_convention == convention for m in temporal)
    with pytest.raises(ValueError, match="relative_key='shaw'.*official"):
        UNet3DConfig(relative_key="shaw")
