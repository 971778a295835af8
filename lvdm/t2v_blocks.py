"""Text-to-video: the blocks that make `UNet3D` the network of LVDM §5: Stable Diffusion made 3D.

The release's T2V UNet (configs/lvdm_short/text2video.yaml, `openaimodel3d.UNetModel` with
`use_temporal_transformer`) is SD 1.x's UNet with three changes, which these classes make:
- ResBlocks add the timestep embedding (`h + emb`) instead of LVDM's adaptive group norm
  (`use_scale_shift_norm` false, SD's layout), so SD's ResBlock weights load as they are;
- every SD spatial transformer gains two temporal self-attentions with relative positions
  inside each transformer block, interleaved as the release's `BasicTransformerBlockST` does:
  spatial self-attention, temporal attention, spatial cross-attention to the text, temporal
  attention, feed-forward. Spatial layers act on each frame alone, temporal ones on each
  pixel's t tokens;
- the temporal attentions' output projections start at zero, so a fresh network computes
  SD's function on every frame (§5: "temporal layers initialised as identity"). The release
  zeroes q, k and v too; that adds nothing to the identity and leaves their gradients zero
  until the output projection has moved, so only the output projection is zeroed here.

`frame_wise_group_norm` makes every GroupNorm normalise each frame alone, as SD does on an
image. The release normalises a ResBlock's and a transformer's input over the whole clip (a
GroupNorm on `b c t h w`), which is close to SD per frame but not equal; the option gives the
exact identity an SD initialisation promises, at the cost of the release's numerics.
"""

from __future__ import annotations

import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from lvdm.attention import Attention
from lvdm.unet_blocks import ResBlock, SpaceTimeAttention, TransformerBlock, zero_module
from lvdm.unet_config import UNet3DConfig

TRANSFORMER_NORM_EPS = 1e-6


class AdditiveEmbeddingResBlock(ResBlock):
    """SD's (and the release's T2V) ResBlock: the embedding is added, `h + Linear(emb)`, not a scale/shift.

    `x: b c t h w`, `emb: b e` -> `b c_out t h w`; same layers and names as `ResBlock` but a
    `Linear(emb_dim, out_channels)` embedding projection.
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, norm_groups: int, dropout: float):
        super().__init__(in_channels, out_channels, emb_dim, norm_groups, dropout)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, out_channels))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x) + rearrange(self.emb_layers(emb), "b c -> b c 1 1 1")
        return self.skip(x) + self.out_layers(self.out_norm(h))


class TemporalAttention(nn.Module):
    """LayerNorm -> self-attention over the t tokens of each pixel, relative positions -> residual.

    Tokens `(b h w) t c`; the output projection starts at zero, so a fresh block is the identity.
    """

    def __init__(self, dim: int, heads: int, max_distance: int, relative_key: str):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        # No q/k/v bias, as the release's TemporalCrossAttention.
        self.attention = Attention(
            dim, heads, bias=False, max_distance=max_distance, relative_key=relative_key
        )
        zero_module(self.attention.to_out)

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens + self.attention(self.norm(tokens))


class SpatioTemporalTransformerBlock(TransformerBlock):
    """SD's transformer block with a temporal attention after its self- and its cross-attention.

    `x: b c t h w` (already projected in), `context: b m d` -> `b c t h w`. The SD parts keep
    `TransformerBlock`'s names (norm1-3, self_attention, cross_attention, feed_forward), so
    SD weights map onto them the same way.
    """

    def __init__(self, dim: int, heads: int, context_dim: int, dropout: float, config: UNet3DConfig):
        super().__init__(dim, heads, context_dim, dropout)
        self.temporal1, self.temporal2 = (
            TemporalAttention(dim, heads, config.temporal_length, config.relative_key) for _ in range(2)
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        frames = repeat(context, "b m d -> (b t) m d", t=t)
        space, time = "(b t) (h w) c", "(b h w) t c"

        x = rearrange(x, f"b c t h w -> {space}")
        x = x + self.self_attention(self.norm1(x))
        x = self.temporal1(rearrange(x, f"{space} -> {time}", b=b, h=h))
        x = rearrange(x, f"{time} -> {space}", b=b, h=h)
        x = x + self.cross_attention(self.norm2(x), frames)
        x = self.temporal2(rearrange(x, f"{space} -> {time}", b=b, h=h))
        # The feed-forward acts on each token alone: any layout will do.
        x = x + self.feed_forward(self.norm3(x))
        return rearrange(x, f"{time} -> b c t h w", b=b, h=h, w=w)


class SpatioTemporalTransformer(SpaceTimeAttention):
    """The release's `SpatialTemporalTransformer`: SD's spatial transformer with temporal attention inside.

    `x: b c t h w`, `context: b m d` -> `b c t h w`. A `SpaceTimeAttention` for the UNet's
    block dispatch (it takes the context), but its own layers: GroupNorm, a per-token
    projection in, `transformer_depth` blocks, a zero-initialised projection out, residual.
    The projections are Linear layers: SD 1.x's 1x1 Conv2d and the release's 1x1x1 Conv3d
    weights load after dropping their trailing unit dimensions.
    """

    def __init__(self, channels: int, config: UNet3DConfig):
        nn.Module.__init__(self)  # none of SpaceTimeAttention's layers: this block replaces them
        assert config.context_dim is not None, "UNet3DConfig checks temporal_transformer needs context_dim"
        self.norm = nn.GroupNorm(config.norm_groups, channels, eps=TRANSFORMER_NORM_EPS)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(
            SpatioTemporalTransformerBlock(
                channels, config.num_heads, config.context_dim, config.dropout, config
            )
            for _ in range(config.transformer_depth)
        )
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if context is None:
            raise ValueError("SpatioTemporalTransformer: context (b, m, context_dim) is required")
        h = self.proj_in(rearrange(self.norm(x), "b c t h w -> b t h w c"))
        h = rearrange(h, "b t h w c -> b c t h w")
        for block in self.blocks:
            h = block(h, context)
        out = self.proj_out(rearrange(h, "b c t h w -> b t h w c"))
        return x + rearrange(out, "b t h w c -> b c t h w")


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame of `b c t h w` alone (SD's norm on an image); other ranks as usual."""

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            return super().forward(x)
        b = x.shape[0]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return rearrange(out, "(b t) c h w -> b c t h w", b=b)


def frame_wise_group_norm(model: nn.Module) -> None:
    """Make every GroupNorm of `model` a `FrameGroupNorm` in place (same parameters, same names)."""
    for module in model.modules():
        if type(module) is nn.GroupNorm:
            module.__class__ = FrameGroupNorm
