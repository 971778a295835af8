"""The 3D UNet denoiser of LVDM (He et al. 2022, §3.2), as the official short-video release builds it.

The network is the ADM / latent-diffusion UNet made 3D in the cheapest way the paper found
to work: every convolution has kernel 1x3x3, so it acts on each frame alone, and frames
exchange information only through attention. At the levels listed in
`attention_resolutions` (downsampling factors) and in the middle, every ResBlock is followed
by a space-time attention block: self-attention over the h·w tokens of each frame, then over
the t tokens of each pixel with learned relative positions (§3.2, "temporal attention with
relative position encodings"). Resampling is spatial only: the autoencoder already
compressed time by 4, and a clip of 4 latent frames has little left to pool.

Timesteps (and, for the long-video models of §4.1, the noise level of the conditioning
latents) enter every ResBlock as an adaptive group norm `GN(h)·(1 + scale) + shift`.
With the defaults, the network is the official unconditional one, 548,904,580 parameters;
`in_channels=5, max_noise_level=250` gives the prediction model and adding
`temporal_length=5` the interpolation model. Where `context_dim` is set, the spatial
attention becomes Stable Diffusion's transformer (self-, cross-attention, feed-forward), so
text-to-video can reuse SD's spatial weights.

Departures from the release, each a defect it has: no in-place residual adds (its
`x += out` breaks backward at batch size 1), and one attention module for every kind of
attention (`lvdm/attention.py`). The function equals the release's (imported checkpoints,
`lvdm weights import`) with `relative_key="official"`, its temporal attention's key term.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lvdm.attention import RELATIVE_KEY_CONVENTIONS, Attention


@dataclass
class UNet3DConfig:
    """Architecture of `UNet3D`; the field names are the keys of the pipeline's `diffusion.unet`.

    The defaults are the official `lvdm_short` unconditional network (sky, UCF-101, TaiChi).
    """

    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 256
    # Level i has model_channels * channel_mult[i] channels; levels but the last end in a 2x
    # spatial downsampling.
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 3
    # Downsampling factors (1, 2, 4, ...) of the levels that get space-time attention; the
    # middle block always has it.
    attention_resolutions: tuple[int, ...] = (2, 4, 8)
    num_heads: int = 4
    # Largest relative distance with its own row in the temporal position tables; farther
    # frames share the outermost row, so any number of frames works.
    temporal_length: int = 4
    norm_groups: int = 32
    dropout: float = 0.0
    use_checkpoint: bool = False
    # > 0: the long-video models' noise-level embedding (§4.1, conditional latent
    # perturbation), nn.Embedding(max_noise_level + 1, 4 * model_channels).
    max_noise_level: int = 0
    # > 0: the stride embedding of the prediction model (issue 21): the distance in latents
    # between the frames of its window, 1..max_stride, embedded like the noise level, so one
    # network predicts at the data's pace (stride 1, autoregressive) and at the keys' pace
    # (the key stride, hierarchical), as later models condition on frame rate.
    max_stride: int = 0
    # Width of the text tokens for cross attention; None: no cross attention.
    context_dim: int | None = None
    transformer_depth: int = 1
    # How the temporal attention's relative key table enters the logits (lvdm/attention.py):
    # "official" is the release's term, which its checkpoints (and the paper pipelines,
    # ucf101/sky_timelapse/taichi.yaml) need; "standard" is Shaw et al.'s. The default stays
    # "standard" so unet.pt files written before this option load and compute what they were
    # trained to; the demo keeps it for the same reason (its trained models and cached stages
    # stay valid) — both conventions train equally from scratch.
    relative_key: str = "standard"
    # Text-to-video (§5, lvdm/t2v_blocks.py). False: SD's ResBlocks, which add the timestep
    # embedding instead of LVDM's scale/shift (the release's T2V `use_scale_shift_norm`).
    use_scale_shift_norm: bool = True
    # The release's `use_temporal_transformer`: SD's spatial transformer with temporal
    # attentions inside each block replaces the space-time attention; needs context_dim.
    temporal_transformer: bool = False
    # GroupNorm per frame (SD's norm on an image) instead of over the clip (the release):
    # an SD-initialised network then computes SD's function exactly on every frame.
    frame_group_norm: bool = False

    def __post_init__(self) -> None:
        # YAML gives lists; the config is immutable in spirit, so store tuples.
        self.channel_mult = tuple(self.channel_mult)
        self.attention_resolutions = tuple(self.attention_resolutions)
        for name in (
            "in_channels",
            "out_channels",
            "model_channels",
            "num_res_blocks",
            "num_heads",
            "temporal_length",
            "norm_groups",
            "transformer_depth",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"UNet3DConfig.{name}={getattr(self, name)}: must be >= 1")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(
                f"UNet3DConfig.channel_mult={self.channel_mult}: give one positive multiplier per level"
            )
        for channels in self.level_channels:
            if channels % self.norm_groups:
                raise ValueError(
                    f"UNet3DConfig.norm_groups={self.norm_groups} does not divide {channels} channels "
                    f"(model_channels={self.model_channels} x channel_mult={self.channel_mult}); "
                    "pick norm_groups dividing every level's channels"
                )
        reachable = tuple(2**level for level in range(len(self.channel_mult)))
        for factor in self.attention_resolutions:
            if factor not in reachable:
                raise ValueError(
                    f"UNet3DConfig.attention_resolutions contains {factor}, but with "
                    f"{len(self.channel_mult)} levels the downsampling factors are {reachable}; "
                    "remove it or add levels to channel_mult"
                )
        for channels in self.attention_channels:
            if channels % self.num_heads:
                raise ValueError(
                    f"UNet3DConfig.num_heads={self.num_heads} does not divide the {channels} channels "
                    "of an attention level; pick num_heads dividing model_channels x channel_mult "
                    "at every attention level and the last level"
                )
        if self.max_stride < 0:
            raise ValueError(f"UNet3DConfig.max_stride={self.max_stride}: 0 (no stride embedding) or more")
        if self.max_noise_level < 0:
            raise ValueError(
                f"UNet3DConfig.max_noise_level={self.max_noise_level}: 0 (no noise-level embedding) or more"
            )
        if self.context_dim is not None and self.context_dim < 1:
            raise ValueError(
                f"UNet3DConfig.context_dim={self.context_dim}: None (no cross attention) or >= 1"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"UNet3DConfig.dropout={self.dropout}: must be in [0, 1)")
        if self.relative_key not in RELATIVE_KEY_CONVENTIONS:
            raise ValueError(
                f"UNet3DConfig.relative_key={self.relative_key!r}: choose one of {RELATIVE_KEY_CONVENTIONS} "
                "('official' for the released LVDM checkpoints)"
            )
        if self.temporal_transformer and self.context_dim is None:
            raise ValueError(
                "UNet3DConfig.temporal_transformer=true needs context_dim (the text tokens' width); "
                "set context_dim or temporal_transformer: false"
            )

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)

    @property
    def attention_channels(self) -> tuple[int, ...]:
        """Channels of every level with attention, the middle (last level) included."""
        levels = [c for i, c in enumerate(self.level_channels) if 2**i in self.attention_resolutions]
        return (*levels, self.level_channels[-1])

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def spatial_factor(self) -> int:
        """h and w must be divisible by this: one 2x downsampling per level but the last."""
        return 2 ** (len(self.channel_mult) - 1)


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


class UNet3D(nn.Module):
    """LVDM's video denoiser: `x: b c t h w`, timesteps `t: b` -> `eps: b c_out t h w`.

    The keyword arguments are the fields of `UNet3DConfig` (see there), so
    `UNet3D(**yaml_section)` builds the network a pipeline file describes.
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        model_channels: int = 256,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 3,
        attention_resolutions: Sequence[int] = (2, 4, 8),
        num_heads: int = 4,
        temporal_length: int = 4,
        norm_groups: int = 32,
        dropout: float = 0.0,
        use_checkpoint: bool = False,
        max_noise_level: int = 0,
        max_stride: int = 0,
        context_dim: int | None = None,
        transformer_depth: int = 1,
        relative_key: str = "standard",
        use_scale_shift_norm: bool = True,
        temporal_transformer: bool = False,
        frame_group_norm: bool = False,
    ) -> None:
        super().__init__()
        self.config = config = UNet3DConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            num_heads=num_heads,
            temporal_length=temporal_length,
            norm_groups=norm_groups,
            dropout=dropout,
            use_checkpoint=use_checkpoint,
            max_noise_level=max_noise_level,
            max_stride=max_stride,
            context_dim=context_dim,
            transformer_depth=transformer_depth,
            relative_key=relative_key,
            use_scale_shift_norm=use_scale_shift_norm,
            temporal_transformer=temporal_transformer,
            frame_group_norm=frame_group_norm,
        )
        mc, emb_dim, groups = config.model_channels, config.time_embed_dim, config.norm_groups

        resblock_class, attention_class = _t2v_block_classes(config)

        def res_block(c_in: int, c_out: int) -> ResBlock:
            return resblock_class(c_in, c_out, emb_dim, groups, config.dropout)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.noise_level_embed = None
        if config.max_noise_level > 0:
            # Zero rows: a fresh conditional model ignores the noise level, so one initialised
            # from the unconditional model (`init_from_unconditional`) starts out equal to it.
            # Built from zeros (not drawn, then zeroed): on the meta device a draw costs seconds.
            zeros = torch.zeros(config.max_noise_level + 1, emb_dim)
            self.noise_level_embed = nn.Embedding.from_pretrained(zeros, freeze=False)
        self.stride_embed = None
        if config.max_stride > 0:
            # Zero rows too, for the same reason: initialised from the unconditional model, the
            # network starts out ignoring the stride and learns what each pace means.
            self.stride_embed = nn.Embedding(config.max_stride + 1, emb_dim)
            nn.init.zeros_(self.stride_embed.weight)

        self.input_blocks = nn.ModuleList([EmbedSequential([frame_conv(config.in_channels, mc)])])
        skip_channels, ch, factor = [mc], mc, 1
        last = len(config.channel_mult) - 1
        for level, level_ch in enumerate(config.level_channels):
            for _ in range(config.num_res_blocks):
                layers: list[nn.Module] = [res_block(ch, level_ch)]
                ch = level_ch
                if factor in config.attention_resolutions:
                    layers.append(attention_class(ch, config))
                self.input_blocks.append(EmbedSequential(layers))
                skip_channels.append(ch)
            if level != last:
                self.input_blocks.append(EmbedSequential([Downsample(ch)]))
                skip_channels.append(ch)
                factor *= 2

        self.middle_block = EmbedSequential(
            [res_block(ch, ch), attention_class(ch, config), res_block(ch, ch)]
        )

        # Each decoder block takes the matching encoder output as a skip: num_res_blocks + 1
        # per level (the extra one for the stem or downsampling output).
        self.output_blocks = nn.ModuleList()
        for level, level_ch in reversed(list(enumerate(config.level_channels))):
            for i in range(config.num_res_blocks + 1):
                layers = [res_block(ch + skip_channels.pop(), level_ch)]
                ch = level_ch
                if factor in config.attention_resolutions:
                    layers.append(attention_class(ch, config))
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    factor //= 2
                self.output_blocks.append(EmbedSequential(layers))

        self.out = nn.Sequential(
            nn.GroupNorm(groups, ch), nn.SiLU(), zero_module(frame_conv(ch, config.out_channels))
        )
        if config.frame_group_norm:
            from lvdm.t2v_blocks import frame_wise_group_norm  # t2v_blocks builds on this module

            frame_wise_group_norm(self)

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        *,
        noise_level: Tensor | None = None,
        context: Tensor | None = None,
        stride: Tensor | None = None,
    ) -> Tensor:
        """Predict the noise in `x: b c t h w` at diffusion timesteps `t: b` (long).

        `noise_level: b` (long, 0..max_noise_level) is the perturbation level of the
        conditioning latents, required iff the model has a noise-level embedding;
        `context: b m context_dim` the text tokens, required iff `context_dim` is set;
        `stride: b` (long, 1..max_stride) the distance in latents between the window's frames,
        for a model with a stride embedding: None means 1, the data's own pace.
        """
        self._check_inputs(x, t, noise_level, context)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))
        if self.noise_level_embed is not None:
            emb = emb + self.noise_level_embed(noise_level)
        if self.stride_embed is not None:
            emb = emb + self.stride_embed(self._stride_index(stride, x.shape[0], x.device))
        elif stride is not None:
            raise ValueError(
                "UNet3D: stride given, but max_stride=0 (no stride embedding); "
                "drop it or build the model with max_stride > 0"
            )
        use_checkpoint = self.config.use_checkpoint and self.training and torch.is_grad_enabled()

        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb, context, use_checkpoint)
            skips.append(h)
        h = self.middle_block(h, emb, context, use_checkpoint)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, use_checkpoint)
        return self.out(h)

    def _stride_index(self, stride: Tensor | None, b: int, device: torch.device) -> Tensor:
        if stride is None:
            return torch.ones(b, dtype=torch.long, device=device)
        stride = torch.as_tensor(stride, device=device).long().expand(b)
        if bool(((stride < 1) | (stride > self.config.max_stride)).any()):
            raise ValueError(
                f"UNet3D: stride {stride.tolist()} outside 1..max_stride={self.config.max_stride}; "
                "sample at a stride the model was trained on (train_pred.strides)"
            )
        return stride

    def _check_inputs(self, x: Tensor, t: Tensor, noise_level: Tensor | None, context: Tensor | None) -> None:
        config = self.config
        if x.ndim != 5 or x.shape[1] != config.in_channels:
            raise ValueError(
                f"UNet3D: x has shape {tuple(x.shape)}; expected (b, {config.in_channels}, t, h, w)"
            )
        b, _, _, h, w = x.shape
        if h % config.spatial_factor or w % config.spatial_factor:
            raise ValueError(
                f"UNet3D: h={h}, w={w} must be divisible by {config.spatial_factor} "
                f"(2 ** (levels - 1), levels = len(channel_mult) = {len(config.channel_mult)})"
            )
        if t.shape != (b,):
            raise ValueError(f"UNet3D: t has shape {tuple(t.shape)}; expected one timestep per clip, ({b},)")
        if config.max_noise_level > 0 and noise_level is None:
            raise ValueError(
                f"UNet3D: this model has a noise-level embedding (max_noise_level={config.max_noise_level}); "
                "pass noise_level=(b,) long tensor, the perturbation level of the conditioning latents "
                "(zeros for clean ones)"
            )
        if config.max_noise_level == 0 and noise_level is not None:
            raise ValueError(
                "UNet3D: noise_level given, but max_noise_level=0 (no noise-level embedding); "
                "drop it or build the model with max_noise_level > 0"
            )
        if noise_level is not None and noise_level.shape != (b,):
            raise ValueError(f"UNet3D: noise_level has shape {tuple(noise_level.shape)}; expected ({b},)")
        if (config.context_dim is None) != (context is None):
            raise ValueError(
                f"UNet3D: context_dim={config.context_dim} but context is "
                f"{'None' if context is None else tuple(context.shape)}; pass context (b, n, context_dim) "
                "exactly when context_dim is set"
            )


def _t2v_block_classes(config: UNet3DConfig) -> tuple[type[ResBlock], type[SpaceTimeAttention]]:
    """The ResBlock and attention classes a config asks for: LVDM's, or SD's / the T2V release's."""
    if config.use_scale_shift_norm and not config.temporal_transformer:
        return ResBlock, SpaceTimeAttention
    # Imported here: lvdm/t2v_blocks.py subclasses this module's blocks.
    from lvdm import t2v_blocks

    return (
        ResBlock if config.use_scale_shift_norm else t2v_blocks.AdditiveEmbeddingResBlock,
        t2v_blocks.SpatioTemporalTransformer if config.temporal_transformer else SpaceTimeAttention,
    )


def init_from_unconditional(model: UNet3D, state_dict: dict[str, Tensor]) -> None:
    """Load an unconditional UNet's weights into a conditional one (LVDM §4.1).

    The prediction and interpolation models start from the unconditional model. Tensors of the
    same name and shape are copied; the stem convolution's extra input channels (the mask
    channel, last) get zero weights; the noise-level and stride embeddings keep their zero initialisation;
    relative position tables of a different `temporal_length` are aligned at distance 0, and
    where the new table is longer its outer rows repeat the old outermost ones — exactly the
    rows the unconditional model used for those clipped distances. So the result computes the
    same function as the unconditional model on input whose mask channel is zero, at any noise
    level. Any other difference raises ValueError.
    """
    target = model.state_dict()
    stem = "input_blocks.0.0.weight"
    unexpected = sorted(set(state_dict) - set(target))
    if unexpected:
        raise ValueError(f"init_from_unconditional: weights not in the model: {unexpected}")
    merged, problems = {}, []
    for name, current in target.items():
        if name not in state_dict:
            if name.startswith(("noise_level_embed.", "stride_embed.")):
                merged[name] = current
            else:
                problems.append(f"{name}: missing from the unconditional weights")
            continue
        source = state_dict[name]
        if source.shape == current.shape:
            merged[name] = source
        elif name == stem and _pads_input_channels(source.shape, current.shape):
            # The mask channel is new: zero weights leave the stem's output as it was.
            padded = source.new_zeros(current.shape)
            padded[:, : source.shape[1]] = source
            merged[name] = padded
        elif name.endswith(("relative_key", "relative_value")) and source.shape[1] == current.shape[1]:
            merged[name] = _align_relative_table(source, current.shape[0])
        else:
            problems.append(f"{name}: shape {tuple(source.shape)} cannot become {tuple(current.shape)}")
    if problems:
        raise ValueError("init_from_unconditional: " + "; ".join(problems))
    model.load_state_dict(merged)


def _pads_input_channels(source: torch.Size, target: torch.Size) -> bool:
    """Whether a conv weight `(c_out, c_in, k...)` differs from `target` only by fewer input channels."""
    return source[0] == target[0] and source[2:] == target[2:] and source[1] < target[1]


def _align_relative_table(source: Tensor, rows: int) -> Tensor:
    """`(2L+1, d)` -> `(rows, d)`, distance 0 to distance 0; new outer rows repeat the old edge rows."""
    source_max, target_max = source.shape[0] // 2, rows // 2
    distance = torch.arange(-target_max, target_max + 1, device=source.device)
    return source[distance.clamp(-source_max, source_max) + source_max]
