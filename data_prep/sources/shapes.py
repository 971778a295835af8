"""Drawing one synthetic sample's frames from its meta: the bouncing shapes, nothing else.

Apart from `synthetic.py` (which lists samples and simulates their motion) because
`sources.base.load_frames` renders a synthetic `SourceVideo` and `synthetic.py` builds on
`sources.base`: the drawing is the piece both need, so it sits below both. Coordinates and
meta are as `data_prep.sources.synthetic` describes them.
"""

from __future__ import annotations

import numpy as np


def render(meta: dict) -> np.ndarray:
    """Frames `(t h w c)` uint8 of one synthetic sample, from its meta alone."""
    size = int(meta["resolution"])
    centres = np.arange(size) + 0.5
    ys, xs = np.meshgrid(centres, centres, indexing="ij")  # (h w) pixel centres
    frames = np.zeros((len(meta["positions"]), size, size, 3), dtype=np.uint8)
    for frame, frame_positions in zip(frames, meta["positions"], strict=True):
        for shape, (x, y) in zip(meta["shapes"], frame_positions, strict=True):
            half = shape["half_size"]
            if shape["shape"] == "circle":
                inside = (xs - x) ** 2 + (ys - y) ** 2 <= half**2
            else:
                inside = np.maximum(np.abs(xs - x), np.abs(ys - y)) <= half
            frame[inside] = shape["colour"]
    return frames
