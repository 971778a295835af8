"""Writing frames as H.264 mp4 with PyAV.

`yuv420p` with even width and height is what browsers (and MLflow's artifact viewer) can
play; odd sizes are padded by one pixel rather than rejected, since previews are often
side-by-side strips of arbitrary width.
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def encode_mp4(frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> bytes:
    """Encode `(t h w c)` uint8 RGB frames to mp4 bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"encode_mp4 expects uint8 frames of shape (t, h, w, 3); got {frames.dtype} {frames.shape}"
        )
    frames = _pad_to_even(frames)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Write an mp4 atomically: a crash never leaves a truncated file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(encode_mp4(frames, fps=fps, crf=crf))
    tmp.replace(path)
    return path


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames
