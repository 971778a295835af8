"""The KL video autoencoder of LVDM (He et al. 2022, §3.1).

A lightweight 3D-conv encoder E compresses a clip `x: (b c t h w)` in [-1, 1] to a latent
`z: (b c' t/ft h/fs w/fs)`; a decoder D maps it back. The layout follows the official LVDM
release (`lvdm/models/modules/aemodules3d.py`), which itself derives from TATS: a stem conv,
one strided conv + residual block per level in the encoder, one transposed conv + two
residual blocks per level in the decoder, GroupNorm + SiLU, kernel 4 for every resampling
conv, and *replicate ("repeat") padding in every 3D conv* — the paper's choice that keeps
the codec temporally shift-equivariant: shifting a clip by `ft` frames shifts its latent by
one frame (away from the borders), so windows encoded separately line up in latent space.

The latent is KL-regularised as in latent diffusion: the encoder predicts a mean and a
log-variance per latent element (`DiagonalGaussian`). Diffusion runs on latents normalised
to unit variance with `latent_normalisation`, computed from data rather than hard-coded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

UPSAMPLE_KINDS = ("transposed", "nearest")


@dataclass
class AutoencoderConfig:
    """Architecture of `VideoAutoencoder`.

    The number of levels is `max(log2 fs, log2 ft)`; level `i` of the encoder strides by 2 in
    time while `i < log2 ft` and in space while `i < log2 fs`, exactly as the official
    release derives its strides from `downsample: [ft, fs, fs]`.
    """

    in_channels: int = 3
    hidden: int = 32
    # Output channels of each level are `hidden * channel_multipliers[i]`; None gives the
    # official doubling (2, 4, 8, ...) with one entry per level.
    channel_multipliers: tuple[int, ...] | None = None
    latent_channels: int = 4
    fs: int = 8
    ft: int = 4
    encoder_res_blocks: int = 1
    decoder_res_blocks: int = 2
    kernel_size: int = 4
    norm_groups: int = 32
    # How the decoder upsamples: "transposed" is the release's kernel-4 transposed conv;
    # "nearest" repeats each voxel `stride` times, then a 3x3x3 conv (Odena et al. 2016,
    # "Deconvolution and checkerboard artifacts"): no checkerboard at initialisation, where a
    # transposed conv starts with one and has to learn it away.
    upsample: str = "transposed"
    # Latent diffusion clamps the predicted log-variance so exp() never over/underflows.
    logvar_min: float = -30.0
    logvar_max: float = 20.0

    def __post_init__(self) -> None:
        for name in ("fs", "ft"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"AutoencoderConfig.{name}={value}: must be a power of 2 (1, 2, 4, 8, ...)")
        if self.num_levels == 0:
            raise ValueError(
                "AutoencoderConfig: fs=1 and ft=1 leave no downsampling level; set fs or ft >= 2"
            )
        if self.channel_multipliers is None:
            self.channel_multipliers = tuple(2 ** (i + 1) for i in range(self.num_levels))
        self.channel_multipliers = tuple(self.channel_multipliers)
        if len(self.channel_multipliers) != self.num_levels:
            raise ValueError(
                f"AutoencoderConfig.channel_multipliers={self.channel_multipliers} has "
                f"{len(self.channel_multipliers)} entries, but fs={self.fs}, ft={self.ft} need "
                f"max(log2 fs, log2 ft) = {self.num_levels} levels; give one multiplier per level or None"
            )
        if self.upsample not in UPSAMPLE_KINDS:
            raise ValueError(f"AutoencoderConfig.upsample={self.upsample!r}: choose one of {UPSAMPLE_KINDS}")
        if self.kernel_size < 2:
            raise ValueError(f"AutoencoderConfig.kernel_size={self.kernel_size}: must be >= 2 (stride 2)")
        for channels in (self.hidden, *self.level_channels):
            if channels % self.norm_groups:
                raise ValueError(
                    f"AutoencoderConfig.norm_groups={self.norm_groups} does not divide {channels} channels; "
                    "pick norm_groups dividing hidden * every channel multiplier"
                )

    @property
    def num_levels(self) -> int:
        return max(int(math.log2(self.fs)), int(math.log2(self.ft)))

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.hidden * m for m in self.channel_multipliers)

    @property
    def strides(self) -> tuple[tuple[int, int, int], ...]:
        """Per-level `(t, h, w)` stride of the encoder (and, as in the release, the decoder)."""
        log_t, log_s = int(math.log2(self.ft)), int(math.log2(self.fs))
        return tuple(
            (2 if i < log_t else 1, 2 if i < log_s else 1, 2 if i < log_s else 1)
            for i in range(self.num_levels)
        )

    @classmethod
    def paper(cls) -> AutoencoderConfig:
        """The official sky/ucf/taichi autoencoder: fs=8, ft=4, channels 32->64->128->256.

        256x256x16 clips become 4x4x32x32 latents; about 7.5M encoder + 12.0M decoder weights.
        """
        return cls(hidden=32, channel_multipliers=(2, 4, 8), latent_channels=4, fs=8, ft=4)


class SamePadConv3d(nn.Module):
    """Conv3d whose output is `input / stride`, padded by replicating the border voxels.

    Replicate padding is the paper's "repeat padding": zero padding would make the first and
    last latent frames see a black frame that no real clip has, and break the alignment of
    windows encoded separately. Total padding `k - s` is split with the extra voxel in front,
    as in TATS. Inputs must be divisible by the stride.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=(1, 1, 1)) -> None:
        super().__init__()
        kernel = (kernel_size,) * 3
        self.pad = _same_padding(kernel, stride)
        self.conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class SamePadConvTranspose3d(nn.Module):
    """ConvTranspose3d whose output is `input * stride`, replicate padded like SamePadConv3d.

    Padding the input by `k - s` and cropping `k - 1` in the transposed conv is the TATS
    construction; it keeps the upsampled grid aligned with the encoder's downsampled one.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride=(1, 1, 1)) -> None:
        super().__init__()
        kernel = (kernel_size,) * 3
        self.pad = _same_padding(kernel, stride)
        self.conv = nn.ConvTranspose3d(
            in_channels, out_channels, kernel, stride=stride, padding=tuple(k - 1 for k in kernel)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad, mode="replicate"))


class NearestUpsampleConv3d(nn.Module):
    """Nearest-neighbour upsampling by `stride`, then a replicate-padded 3x3x3 conv.

    A transposed conv with stride 2 gives every output phase its own kernel taps, so a
    constant latent decodes to a checkerboard until those taps are learned equal; repeating
    voxels first makes every phase see the same weights.
    """

    def __init__(self, in_channels: int, out_channels: int, stride=(1, 1, 1)) -> None:
        super().__init__()
        self.stride = tuple(stride)
        self.conv = SamePadConv3d(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        if any(s > 1 for s in self.stride):
            x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return self.conv(x)


def _same_padding(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    # F.pad takes (w_front, w_back, h_front, h_back, t_front, t_back): last dim first.
    pad: list[int] = []
    for k, s in reversed(list(zip(kernel, stride, strict=True))):
        total = k - s
        pad += [total // 2 + total % 2, total // 2]
    return tuple(pad)


class ResBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, SiLU, 3x3x3 conv) twice, plus the input."""

    def __init__(self, channels: int, norm_groups: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(norm_groups, channels, eps=1e-6),
            nn.SiLU(),
            SamePadConv3d(channels, channels, 3),
            nn.GroupNorm(norm_groups, channels, eps=1e-6),
            nn.SiLU(),
            SamePadConv3d(channels, channels, 3),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


@dataclass
class DiagonalGaussian:
    """The posterior q(z | x) = N(mean, exp(logvar)), elementwise; shapes `b c t h w`."""

    mean: Tensor
    logvar: Tensor

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    @property
    def var(self) -> Tensor:
        return torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * noise

    def mode(self) -> Tensor:
        return self.mean

    def kl(self) -> Tensor:
        """KL(q || N(0, I)) summed over every latent element: one value per sample, `(b,)`."""
        return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).flatten(1).sum(dim=1)


class Encoder(nn.Module):
    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        k = config.kernel_size
        self.stem = SamePadConv3d(config.in_channels, config.hidden, 3)
        channels = (config.hidden, *config.level_channels)
        self.levels = nn.ModuleList(
            nn.Sequential(
                SamePadConv3d(channels[i], channels[i + 1], k, stride=stride),
                *(ResBlock(channels[i + 1], config.norm_groups) for _ in range(config.encoder_res_blocks)),
            )
            for i, stride in enumerate(config.strides)
        )
        self.head = nn.Sequential(
            nn.GroupNorm(config.norm_groups, channels[-1], eps=1e-6),
            nn.SiLU(),
            SamePadConv3d(channels[-1], 2 * config.latent_channels, 3),
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        for level in self.levels:
            h = level(h)
        return self.head(h)


class Decoder(nn.Module):
    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        # Mirrors the encoder's channels (256 -> 128 -> 64 for the paper). The strides are
        # applied in the encoder's order, as in the release: temporal upsampling happens at
        # the coarse end, which does not change shapes or parameter counts.
        channels = (config.latent_channels, *reversed(config.level_channels))
        self.levels = nn.ModuleList(
            nn.Sequential(
                _upsample(config, channels[i], channels[i + 1], stride),
                *(ResBlock(channels[i + 1], config.norm_groups) for _ in range(config.decoder_res_blocks)),
            )
            for i, stride in enumerate(config.strides)
        )
        self.conv_out = SamePadConv3d(channels[-1], config.in_channels, 3)

    def forward(self, z: Tensor) -> Tensor:
        h = z
        for level in self.levels:
            h = level(h)
        return self.conv_out(h)


def _upsample(config: AutoencoderConfig, in_channels: int, out_channels: int, stride) -> nn.Module:
    if config.upsample == "nearest":
        return NearestUpsampleConv3d(in_channels, out_channels, stride)
    return SamePadConvTranspose3d(in_channels, out_channels, config.kernel_size, stride=stride)


class VideoAutoencoder(nn.Module):
    """KL video autoencoder: `x (b c t h w)` in [-1, 1] <-> `z (b latent_channels t/ft h/fs w/fs)`.

    Key for key the release's layout, 1x1x1 `quant_conv` (encoder output -> posterior moments)
    and `post_quant_conv` (latent -> decoder input) included, so its checkpoints load as they
    are (19,446,759 parameters for `AutoencoderConfig.paper()`). They cannot be folded away
    exactly: the `post_quant_conv` bias feeds a stride-2 transposed conv, which spreads a
    constant unevenly. Files written before they existed load with identity quant convs
    (`identity_quant_convs`), which computes what those files were trained to.
    """

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        moments, latent = 2 * config.latent_channels, config.latent_channels
        self.quant_conv = SamePadConv3d(moments, moments, 1)
        self.post_quant_conv = SamePadConv3d(latent, latent, 1)
        self.decoder = Decoder(config)

    def encode(self, x: Tensor) -> DiagonalGaussian:
        self._check_video(x)
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        logvar = logvar.clamp(self.config.logvar_min, self.config.logvar_max)
        return DiagonalGaussian(mean, logvar)

    def decode(self, z: Tensor) -> Tensor:
        if z.ndim != 5 or z.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"decode expects latents (b {self.config.latent_channels} t h w), got shape {tuple(z.shape)}"
            )
        return self.decoder(self.post_quant_conv(z))

    def forward(
        self, x: Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, DiagonalGaussian]:
        """`(reconstruction, posterior)`; `generator` makes the posterior sample reproducible."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode(z), posterior

    @property
    def last_layer_weight(self) -> Tensor:
        """The decoder's output conv weight: where VQGAN's adaptive weight compares gradients."""
        return self.decoder.conv_out.conv.weight

    def latent_shape(self, t: int, h: int, w: int) -> tuple[int, int, int, int]:
        """`(c, t, h, w)` of the latent of one `t x h x w` clip."""
        c = self.config
        return (c.latent_channels, t // c.ft, h // c.fs, w // c.fs)

    def _check_video(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != 5 or x.shape[1] != c.in_channels:
            raise ValueError(f"encode expects video (b {c.in_channels} t h w), got shape {tuple(x.shape)}")
        t, h, w = x.shape[2:]
        if t % c.ft or h % c.fs or w % c.fs:
            raise ValueError(
                f"video of {t} frames of {h}x{w} does not divide by ft={c.ft} (frames) and fs={c.fs} "
                "(height, width); crop or resize clips to multiples of them"
            )


QUANT_CONVS = ("quant_conv", "post_quant_conv")


def identity_quant_convs(model: VideoAutoencoder) -> dict[str, Tensor]:
    """`quant_conv.*` / `post_quant_conv.*` weights that make both 1x1x1 convs the identity.

    For state dicts saved before the autoencoder had them: with these it computes exactly
    what it computed then.
    """
    weights = {}
    for name in QUANT_CONVS:
        conv = getattr(model, name).conv
        channels = conv.out_channels
        eye = torch.eye(channels, dtype=conv.weight.dtype).reshape(channels, channels, 1, 1, 1)
        weights[f"{name}.conv.weight"] = eye
        weights[f"{name}.conv.bias"] = torch.zeros(channels, dtype=conv.bias.dtype)
    return weights


Normalisation = float | list[float]


def latent_normalisation(latents: Tensor, per_channel: bool = False) -> tuple[Normalisation, Normalisation]:
    """`(scale, shift)` that bring a sample of latents `b c ...` to zero mean and unit variance.

    Convention: `z_norm = (z + shift) * scale`, inverse `z = z_norm / scale - shift`, with
    `scale = 1 / std` and `shift = -mean`. The official release hard-codes one scalar pair per
    dataset (sky 0.334 / 1.461, ...); computing them from the trained encoder's latents gives
    the diffusion model the unit-variance input latent diffusion assumes, for any dataset.

    `per_channel`: one pair per latent channel (lists), as later video VAEs ship (Wan's
    `latents_mean`/`latents_std`). Issue 21 found why it matters: the demo's 4 channels have
    means −0.61, 1.28, −0.64, −0.05 after the scalar normalisation, and a small diffusion model
    in a few hundred steps reproduced channel 1's offset only two thirds of the way (sampled
    mean 0.82), which decodes to wrong colours and blobs; per channel there is no offset left
    to learn (benchmarks/bench_generation_quality.py).
    """
    if latents.numel() < 2:
        raise ValueError(f"latent_normalisation needs at least 2 latent values, got {latents.numel()}")
    values = latents.detach().double()
    if per_channel:
        if values.ndim < 2 or values[:, 0].numel() < 2:
            shape = tuple(latents.shape)
            raise ValueError(f"per-channel normalisation needs (b, c, ...) latents, got {shape}")
        per = values.transpose(0, 1).flatten(1)  # c (b ...)
        mean, std = per.mean(dim=1), per.std(dim=1)
        if not bool(torch.isfinite(std).all()) or bool((std == 0).any()):
            raise ValueError(f"latent_normalisation: channel stds {std.tolist()}; the encoder is degenerate")
        return (1.0 / std).tolist(), (-mean).tolist()
    values = values.flatten()
    mean, std = values.mean().item(), values.std().item()
    if not math.isfinite(std) or std == 0.0:
        raise ValueError(f"latent_normalisation: latents have std {std}; the encoder output is degenerate")
    return 1.0 / std, -mean


def normalise(z: Tensor, scale: Normalisation, shift: Normalisation) -> Tensor:
    """`(z + shift) * scale` over latents `b c t h w` (or `c t h w`), scalar or per channel."""
    return (z + _over_channels(shift, z)) * _over_channels(scale, z)


def denormalise(z: Tensor, scale: Normalisation, shift: Normalisation) -> Tensor:
    """`z / scale - shift`, the inverse of `normalise`: what the decoder takes."""
    return z / _over_channels(scale, z) - _over_channels(shift, z)


def _over_channels(value: Normalisation, like: Tensor) -> float | Tensor:
    if isinstance(value, int | float):
        return float(value)
    values = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    if values.numel() != like.shape[-4]:
        raise ValueError(
            f"{values.numel()} per-channel normalisation values for latents with {like.shape[-4]} channels "
            f"(shape {tuple(like.shape)}): the latents come from another autoencoder"
        )
    return values.reshape(-1, 1, 1, 1)
