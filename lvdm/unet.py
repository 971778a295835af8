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
text-to-video can reuse SD's spatial weights; `use_scale_shift_norm=False,
temporal_transformer=True` builds the release's text-to-video UNet (§5) from the blocks after
`SpaceTimeAttention`, which subclass this file's.

Departures from the release, each a defect it has: no in-place residual adds (its
`x += out` breaks backward at batch size 1), and one attention module for every kind of
attention (`lvdm/attention.py`). The function equals the release's (imported checkpoints,
`lvdm weights import`) with `relative_key="official"`, its temporal attention's key term.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lvdm.t2v_blocks import AdditiveEmbeddingResBlock, SpatioTemporalTransformer, frame_wise_group_norm
from lvdm.unet_blocks import (
    Downsample,
    EmbedSequential,
    ResBlock,
    SelfAttentionBlock,
    SpaceTimeAttention,
    Upsample,
    frame_conv,
    timestep_embedding,
    zero_module,
)
from lvdm.unet_config import UNet3DConfig

__all__ = ["UNet3D", "UNet3DConfig", "init_from_unconditional"]


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
        temporal_attention_resolutions: Sequence[int] = (),
        prediction: str = "eps",
    ) -> None:
        super().__init__()
        self.config = config = UNet3DConfig(
            in_channels=in_channels,
            out_channels=out_channels,
            model_channels=model_channels,
            channel_mult=channel_mult,
            num_res_blocks=num_res_blocks,
            attention_resolutions=attention_resolutions,
            temporal_attention_resolutions=temporal_attention_resolutions,
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
            prediction=prediction,
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
                layers += self._attention(ch, factor, attention_class)
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
                layers += self._attention(ch, factor, attention_class)
                if level and i == config.num_res_blocks:
                    layers.append(Upsample(ch))
                    factor //= 2
                self.output_blocks.append(EmbedSequential(layers))

        self.out = nn.Sequential(
            nn.GroupNorm(groups, ch), nn.SiLU(), zero_module(frame_conv(ch, config.out_channels))
        )
        if config.frame_group_norm:
            frame_wise_group_norm(self)

    def _attention(self, channels: int, factor: int, attention_class: type[nn.Module]) -> list[nn.Module]:
        """The attention a block at downsampling `factor` ends in: space-time, temporal only, or none."""
        config = self.config
        if factor in config.attention_resolutions:
            return [attention_class(channels, config)]
        if factor in config.temporal_attention_resolutions:
            return [
                SelfAttentionBlock(
                    channels,
                    config.num_heads,
                    config.norm_groups,
                    "time",
                    max_distance=config.temporal_length,
                    relative_key=config.relative_key,
                )
            ]
        return []

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
    return (
        ResBlock if config.use_scale_shift_norm else AdditiveEmbeddingResBlock,
        SpatioTemporalTransformer if config.temporal_transformer else SpaceTimeAttention,
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
