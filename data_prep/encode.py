"""Writing frames as H.264 mp4 with PyAV.

`yuv420p` with even width and height is what browsers (and MLflow's artifact viewer) can
play; odd sizes are padded by one pixel rather than rejected, since previews are often
side-by-side strips of arbitrary width.

`encode_mp4` / `write_mp4` take a whole clip; `Mp4Writer` takes frames chunk by chunk, so a
generated video of 1,024+ frames goes to disk without ever being held whole
(`lvdm.long_video.long_video_frames` yields such chunks, `write_mp4_streams` writes them).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

from data_prep import storage


def encode_mp4(frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> bytes:
    """Encode `(t h w c)` uint8 RGB frames to mp4 bytes."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"encode_mp4 expects uint8 frames of shape (t, h, w, 3); got {frames.dtype} {frames.shape}"
        )
    frames = _pad_to_even(frames)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = _h264_stream(container, fps, crf, width=frames.shape[2], height=frames.shape[1])
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def write_mp4(path: str | Path, frames: np.ndarray, fps: float = 8.0, crf: int = 18) -> Path:
    """Write an mp4 atomically: a crash never leaves a truncated file at `path`."""
    path = Path(path)
    storage.write_bytes(path, encode_mp4(frames, fps=fps, crf=crf))
    return path


class Mp4Writer:
    """Write one H.264 mp4 chunk by chunk: `with Mp4Writer(path) as out: out.write(chunk)`.

    Chunks are uint8 RGB `(t h w 3)` (numpy, or anything `np.asarray` takes, e.g. a CPU
    tensor), all of one size; odd sizes are padded to even like `write_mp4`. Frames go to a
    temporary file as they come and it is renamed to `path` on a clean exit only, so an
    interrupted long video never leaves a truncated file under the final name.
    """

    def __init__(self, path: str | Path, fps: float = 8.0, crf: int = 18) -> None:
        self.path = Path(path)
        self.fps, self.crf = fps, crf
        self.frames = 0
        self._tmp: Path | None = None  # a fresh name on entry (`storage.temporary_sibling`)
        self._container: av.container.OutputContainer | None = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> Mp4Writer:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file, self._tmp = storage.temporary_sibling(self.path)
        try:
            # The open file, not its name: the name could be swapped for a link in between.
            self._container = av.open(self._file, mode="w", format="mp4")
        except BaseException:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
            raise
        return self

    def write(self, frames: np.ndarray) -> None:
        """Append `(t h w 3)` uint8 frames."""
        if self._container is None:
            raise RuntimeError("Mp4Writer.write outside its `with` block")
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"Mp4Writer expects uint8 frames of shape (t, h, w, 3); got {frames.dtype} {frames.shape}"
            )
        if self._size is None:
            self._size = frames.shape[1:3]
            padded = _pad_to_even(frames[:1])
            self._stream = _h264_stream(
                self._container, self.fps, self.crf, width=padded.shape[2], height=padded.shape[1]
            )
        elif frames.shape[1:3] != self._size:
            raise ValueError(
                f"{self.path.name}: chunk of {frames.shape[1]}x{frames.shape[2]} frames after "
                f"{self._size[0]}x{self._size[1]} ones; every frame of a video must have one size"
            )
        for frame in _pad_to_even(frames):
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                self._container.mux(packet)
        self.frames += frames.shape[0]

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        container, self._container = self._container, None
        complete = False
        try:
            if kind is None and self._stream is None:
                raise ValueError(f"{self.path.name}: no frames written; an mp4 needs at least one")
            if kind is None:
                for packet in self._stream.encode():
                    container.mux(packet)
                complete = True
        finally:
            try:
                container.close()
            finally:
                self._file.close()
                if complete:
                    self._tmp.replace(self.path)
                else:
                    self._tmp.unlink(missing_ok=True)


def write_mp4_streams(
    paths: Sequence[str | Path], chunks: Iterable[np.ndarray], fps: float = 8.0, crf: int = 18
) -> list[Path]:
    """Write n videos from chunks `(n t h w 3)` uint8 (chunk i of video j is `chunk[j]`), one
    mp4 per path, each held open and fed as the chunks come: memory does not grow with length."""
    paths = [Path(p) for p in paths]
    with ExitStack() as stack:
        writers = [stack.enter_context(Mp4Writer(p, fps=fps, crf=crf)) for p in paths]
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.ndim != 5 or chunk.shape[0] != len(writers):
                raise ValueError(
                    f"write_mp4_streams expects chunks (n t h w 3) with n = {len(writers)} paths; "
                    f"got shape {chunk.shape}"
                )
            for writer, frames in zip(writers, chunk, strict=True):
                writer.write(frames)
    return paths


def _h264_stream(container, fps: float, crf: int, *, width: int, height: int):
    """The H.264 yuv420p stream both writers use: plays in browsers and MLflow's viewer."""
    stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(crf), "preset": "veryfast"}
    return stream


def _pad_to_even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frames
