"""Frame geometry for training clips: resize the short side, then centre-crop to a square.

This is the LVDM preprocessing (short side to the target size, centre crop), done once at
shard time so training reads clips at their final size. The resize is antialiased: plain
bilinear downsampling of 320x240 UCF frames to 64 px aliases badly, and a model trained on
aliased clips learns the shimmer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """`(t h w c)` uint8 -> `(t size size c)` uint8: short side to `size`, centre crop."""
    if frames.ndim != 4 or frames.dtype != np.uint8:
        raise ValueError(
            f"resize_center_crop expects uint8 frames (t, h, w, c); got {frames.dtype} {frames.shape}"
        )
    if size < 1:
        raise ValueError(f"resize_center_crop size must be >= 1; got {size}")
    height, width = frames.shape[1:3]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    if (new_h, new_w) != (height, width):
        video = rearrange(torch.from_numpy(frames), "t h w c -> t c h w").float()
        video = F.interpolate(
            video, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False
        )
        frames = rearrange(video.round().clamp(0, 255).to(torch.uint8), "t c h w -> t h w c").numpy()
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(frames[:, top : top + size, left : left + size])
