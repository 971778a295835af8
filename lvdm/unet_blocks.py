"""The building blocks of `lvdm.unet.UNet3D` (LVDM §3.2): frame-wise convolutions, ResBlocks with
adaptive group norm, and attention along space or time.

Every convolution here has kernel 1x3x3, so it acts on each frame alone; frames exchange
information only through the temporal attention blocks. `EmbedSequential` runs a block's
layers, handing each what it takes. The text-to-video variants subclass these in
`lvdm.t2v_blocks`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lvdm.attention import Attention
from lvdm.unet_config import UNet3DConfig


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """`(b,)` timesteps -> `(b, dim)` sinusoids, cos half first, as in ADM and the official release."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(embedding, (0, dim % 2))


def frame_conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv3d:
    """1x3x3 convolution: mixes space within a frame, never time (the official `kernel_size_t 1`)."""
    return nn.Conv3d(in_channels, out_channels, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1))


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter: a residual branch ending in it starts as the identity (ADM)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """ADM's residual block with adaptive group norm: `GN(h)·(1 + scale) + shift` from the embedding.

    `x: b c t h w`, `emb: b e` -> `b c_out t h w`. The second convolution starts at zero, so a
    fresh block is its skip path (identity, or a 1x1x1 convolution when channels change).
    """

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, norm_groups: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(norm_groups, in_channels), nn.SiLU(), frame_conv(in_channels, out_channels)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = nn.GroupNorm(norm_groups, out_channels)
        self.out_layers = nn.Sequential(
            nn.SiLU(), nn.Dropout(dropout), zero_module(frame_conv(out_channels, out_channels))
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv3d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.in_layers(x)
        scale, shift = rearrange(self.emb_layers(emb), "b (two c) -> two b c 1 1 1", two=2)
        h = self.out_layers(self.out_norm(h) * (1 + scale) + shift)
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided 1x3x3 convolution: halves h and w, keeps t."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = frame_conv(channels, channels, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest 2x in h and w (not t), then a 1x3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = frame_conv(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


# How each attention axis lays `b c t h w` out as sequences for GroupNorm (`B c n`), and back
# from the attention's `B n c`. The norm sees one sequence at a time, as in the release: a
# frame for spatial attention, a pixel's t values for temporal attention.
_AXES = {
    "space": ("b c t h w -> (b t) c (h w)", "(b t) (h w) c -> b c t h w"),
    "time": ("b c t h w -> (b h w) c t", "(b h w) t c -> b c t h w"),
}


class SelfAttentionBlock(nn.Module):
    """GroupNorm -> multi-head self-attention along one axis -> zero-initialised projection -> residual.

    `axis="space"`: tokens are the h·w positions of each frame; `axis="time"`: the t frames of
    each position, with relative position tables (`max_distance` = temporal_length). The
    residual add is out of place: the release's `x += out` modifies a tensor that autograd
    saved (at batch 1 the `(b t) c (h w)` rearrange is a view of `x`) and backward fails.
    """

    def __init__(
        self,
        channels: int,
        heads: int,
        norm_groups: int,
        axis: str,
        max_distance: int | None = None,
        relative_key: str = "standard",
    ):
        super().__init__()
        self.to_tokens, self.from_tokens = _AXES[axis]
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.attention = Attention(channels, heads, max_distance=max_distance, relative_key=relative_key)
        zero_module(self.attention.to_out)

    def forward(self, x: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        tokens = self.norm(rearrange(x, self.to_tokens))
        out = self.attention(rearrange(tokens, "B c n -> B n c"))
        return x + rearrange(out, self.from_tokens, b=b, t=t, h=h, w=w)


class FeedForward(nn.Module):
    """Stable Diffusion's GEGLU feed-forward: c -> 2 x 4c (value, gate) -> 4c -> c."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.proj_in = nn.Linear(dim, 8 * dim)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(4 * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(value * F.gelu(gate)))


class TransformerBlock(nn.Module):
    """SD's BasicTransformerBlock on `B n c` tokens: self-attention, cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, context_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attention = Attention(dim, heads, bias=False)
        self.cross_attention = Attention(dim, heads, context_dim=context_dim, bias=False)
        self.feed_forward = FeedForward(dim, dropout)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.self_attention(self.norm1(x))
        x = x + self.cross_attention(self.norm2(x), context)
        return x + self.feed_forward(self.norm3(x))


class SpatialTransformer(nn.Module):
    """SD's spatial transformer applied to each frame: `b c t h w` attends to `context: b m d`.

    The text-to-video variant of the release (and SD) uses it in place of the spatial
    self-attention; the projections in and out are Linear layers (SD 1.x's 1x1 Conv2d weights
    load after dropping their two trailing unit dimensions).
    """

    def __init__(
        self, channels: int, heads: int, norm_groups: int, context_dim: int, depth: int, dropout: float
    ):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, heads, context_dim, dropout) for _ in range(depth)
        )
        self.proj_out = zero_module(nn.Linear(channels, channels))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, _, t, h, w = x.shape
        tokens = rearrange(self.norm(rearrange(x, "b c t h w -> (b t) c h w")), "B c h w -> B (h w) c")
        tokens = self.proj_in(tokens)
        context = repeat(context, "b m d -> (b t) m d", t=t)
        for block in self.blocks:
            tokens = block(tokens, context)
        return x + rearrange(self.proj_out(tokens), "(b t) (h w) c -> b c t h w", b=b, h=h)


class SpaceTimeAttention(nn.Module):
    """The release's space-time attention block: attention within each frame, then across frames.

    The spatial half is self-attention, or SD's spatial transformer when `context_dim` is set;
    the temporal half is self-attention over t with relative positions, non-causal.
    """

    def __init__(self, channels: int, config: UNet3DConfig):
        super().__init__()
        heads, groups = config.num_heads, config.norm_groups
        if config.context_dim is None:
            self.spatial = SelfAttentionBlock(channels, heads, groups, "space")
        else:
            self.spatial = SpatialTransformer(
                channels, heads, groups, config.context_dim, config.transformer_depth, config.dropout
            )
        self.temporal = SelfAttentionBlock(
            channels,
            heads,
            groups,
            "time",
            max_distance=config.temporal_length,
            relative_key=config.relative_key,
        )

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = self.spatial(x) if context is None else self.spatial(x, context)
        return self.temporal(x)


class EmbedSequential(nn.ModuleList):
    """Layers run in order, each given what it takes: ResBlocks the embedding, attention the context.

    With `use_checkpoint`, each ResBlock and attention block recomputes its activations in
    backward instead of storing them (non-reentrant checkpointing, which handles keyword
    arguments, None inputs and frozen parameters).
    """

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None, use_checkpoint: bool) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                args = (x, emb)
            elif isinstance(layer, SpaceTimeAttention):
                args = (x, context)
            else:
                x = layer(x)
                continue
            x = checkpoint(layer, *args, use_reentrant=False) if use_checkpoint else layer(*args)
        return x
