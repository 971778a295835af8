"""Patch discriminators for the autoencoder's adversarial loss (LVDM §3.1).

Two kinds, selected by name with `build_discriminator`:

- `"frame"`: the official release's choice — the 3-layer PatchGAN of pix2pix / taming
  (`NLayerDiscriminator`) applied to every frame on its own. It judges texture, not motion.
- `"spacetime"`: the same PatchGAN in 3D, so each logit judges a space-time patch; the
  paper's text ("realism over time") suggests a reconstruction should also move like video.

Both take `x: (b c t h w)` in [-1, 1] and return logits, one per patch.
"""

from __future__ import annotations

import math

from einops import rearrange
from torch import Tensor, nn

DISCRIMINATOR_KINDS = ("frame", "spacetime")
NORM_KINDS = ("batch", "group")


def _norm(kind: str, channels: int, dims: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    # GroupNorm is batch-size independent: the choice for tiny per-worker batches under DDP.
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _min_frame_size(num_layers: int) -> int:
    # Each stride-2 conv (k4, p1) halves the size; the two stride-1 convs (k4, p1) each
    # remove one pixel, so the last one needs at least 1 pixel in: size / 2^n >= 3.
    return 3 * 2**num_layers


def _patchgan_layers(
    conv: type[nn.Conv2d] | type[nn.Conv3d],
    in_channels: int,
    base_channels: int,
    num_layers: int,
    norm: str,
    kernel: int | tuple[int, ...],
    padding: int | tuple[int, ...],
    stride2: int | tuple[int, ...],
) -> nn.Sequential:
    """The taming `NLayerDiscriminator` stack, parameterised over 2D/3D convs."""
    dims = 2 if conv is nn.Conv2d else 3
    layers: list[nn.Module] = [
        conv(in_channels, base_channels, kernel, stride=stride2, padding=padding),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    mult = 1
    for n in range(1, num_layers + 1):
        prev, mult = mult, min(2**n, 8)
        stride = stride2 if n < num_layers else 1
        # No bias before a norm layer: the norm's shift makes it redundant (taming does the same).
        layers += [
            conv(
                base_channels * prev, base_channels * mult, kernel, stride=stride, padding=padding, bias=False
            ),
            _norm(norm, base_channels * mult, dims),
            nn.LeakyReLU(0.2, inplace=True),
        ]
    layers.append(conv(base_channels * mult, 1, kernel, stride=1, padding=padding))
    return nn.Sequential(*layers)


def _init_weights(module: nn.Module) -> None:
    # pix2pix / taming `weights_init`: N(0, 0.02) convs, N(1, 0.02) norm scales.
    if isinstance(module, nn.Conv2d | nn.Conv3d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm3d | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class FramePatchDiscriminator(nn.Module):
    """The official per-frame 2D PatchGAN: logits `(b t) 1 h' w'` for `x: (b c t h w)`."""

    def __init__(
        self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"
    ):
        super().__init__()
        self.num_layers = num_layers
        self.net = _patchgan_layers(nn.Conv2d, in_channels, base_channels, num_layers, norm, 4, 1, 2)
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_size(x, self.num_layers)
        return self.net(rearrange(x, "b c t h w -> (b t) c h w"))


class SpaceTimePatchDiscriminator(nn.Module):
    """A 3D PatchGAN: logits `b 1 t' h' w'`, each judging a space-time patch.

    Kernels are 3 frames x 4 x 4 pixels with temporal padding 1: time halves (rounding up) at
    each stride-2 layer and never vanishes, so clips as short as one frame are accepted,
    while the spatial path is exactly the 2D PatchGAN's.
    """

    def __init__(
        self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"
    ):
        super().__init__()
        self.num_layers = num_layers
        self.net = _patchgan_layers(
            nn.Conv3d, in_channels, base_channels, num_layers, norm, (3, 4, 4), (1, 1, 1), (2, 2, 2)
        )
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        _check_size(x, self.num_layers)
        return self.net(x)


def _check_size(x: Tensor, num_layers: int) -> None:
    if x.ndim != 5:
        raise ValueError(f"discriminator expects video (b c t h w), got shape {tuple(x.shape)}")
    smallest = _min_frame_size(num_layers)
    if min(x.shape[-2:]) < smallest:
        raise ValueError(
            f"discriminator with num_layers={num_layers} needs frames of at least {smallest}x{smallest}, "
            f"got {x.shape[-2]}x{x.shape[-1]}; use fewer layers or larger frames"
        )


def build_discriminator(
    kind: str, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"
) -> nn.Module:
    """`"frame"` (official per-frame 2D PatchGAN) or `"spacetime"` (3D PatchGAN)."""
    if norm not in NORM_KINDS:
        raise ValueError(f"discriminator norm={norm!r}: choose one of {NORM_KINDS}")
    if num_layers < 1:
        raise ValueError(f"discriminator num_layers={num_layers}: must be >= 1")
    if kind == "frame":
        return FramePatchDiscriminator(in_channels, base_channels, num_layers, norm)
    if kind == "spacetime":
        return SpaceTimePatchDiscriminator(in_channels, base_channels, num_layers, norm)
    raise ValueError(f"discriminator kind={kind!r}: choose one of {DISCRIMINATOR_KINDS}")
