"""Video decoding behind one small interface: decord first, PyAV where decord is missing.

decord is the fast random-access reader the LVDM loaders use, but it has no wheel for
aarch64 or macOS and is unmaintained, so PyAV (always installed: we encode with it too) is
the fallback. Readers are built per call from a path or bytes, never stored: decord readers
do not pickle, so anything shipped to a Ray task carries paths or bytes only.

Every decoding failure becomes `SkipSample`, so the shard loop can count a corrupt file
instead of crashing on it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep import storage
from data_prep.skip import SkipSample

try:  # decord has no wheel on aarch64/macOS
    import decord

    decord.bridge.set_bridge("native")
    _HAVE_DECORD = True
except ImportError:  # pragma: no cover - depends on the platform
    _HAVE_DECORD = False

VideoSource = str | Path | bytes


@dataclass(frozen=True)
class DecodedVideo:
    """Frames `(t h w c)` uint8 RGB, the source's fps and its total frame count."""

    frames: np.ndarray
    fps: float
    num_frames: int


def available_backends() -> list[str]:
    return (["decord"] if _HAVE_DECORD else []) + ["pyav"]


def decode_video(
    src: VideoSource, indices: Sequence[int] | None = None, backend: str = "auto", name: str | None = None
) -> DecodedVideo:
    """Decode all frames, or only `indices` (which must be inside the video).

    `name` is what a `SkipSample` calls the video (default: the path, or `<N bytes>`), e.g.
    the URI that `src` bytes were fetched from. A URI `src` (a workdir or dataset on an object
    store) is fetched whole and decoded in memory.
    """
    name = name or _describe(src)
    if isinstance(src, str) and storage.is_uri(src):
        src = storage.read_bytes(src)
    empty = len(src) == 0 if isinstance(src, bytes) else Path(src).stat().st_size == 0
    if empty:
        raise SkipSample(f"{name}: zero-byte file")
    chosen = _pick(backend)
    try:
        if chosen == "decord":
            try:
                return _decode_decord(src, indices, name)
            except SkipSample:
                raise
            except Exception:
                # decord 0.6 fails on some valid frame widths (16, 24, 48 px: "DECORDArrayCopyFromTo:
                # The size must exactly match"); under "auto" PyAV gets a second try.
                if backend != "auto":
                    raise
        return _decode_pyav(src, indices, name)
    except SkipSample:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types; all mean "unusable"
        raise SkipSample(f"{name}: cannot decode ({type(err).__name__}: {err})") from err


def _pick(backend: str) -> str:
    if backend == "auto":
        return "decord" if _HAVE_DECORD else "pyav"
    if backend not in available_backends():
        raise ValueError(f"video backend {backend!r} is not available; use one of {available_backends()}")
    return backend


def _describe(src: VideoSource) -> str:
    return f"<{len(src)} bytes>" if isinstance(src, bytes) else str(src)


def _check_indices(indices: Sequence[int], num_frames: int, name: str) -> None:
    bad = [i for i in indices if not 0 <= i < num_frames]
    if bad:
        raise SkipSample(f"{name}: frame indices {bad[:3]} outside a video of {num_frames} frames")


def _decode_decord(src: VideoSource, indices: Sequence[int] | None, name: str) -> DecodedVideo:
    handle = io.BytesIO(src) if isinstance(src, bytes) else str(src)
    reader = decord.VideoReader(handle, ctx=decord.cpu(0), num_threads=1)
    num_frames = len(reader)
    if num_frames == 0:
        raise SkipSample(f"{name}: no video frames")
    wanted = list(range(num_frames)) if indices is None else list(indices)
    _check_indices(wanted, num_frames, name)
    frames = reader.get_batch(wanted).asnumpy()
    return DecodedVideo(frames=frames, fps=float(reader.get_avg_fps()), num_frames=num_frames)


def _decode_pyav(src: VideoSource, indices: Sequence[int] | None, name: str) -> DecodedVideo:
    import av

    handle = io.BytesIO(src) if isinstance(src, bytes) else str(src)
    with av.open(handle) as container:
        if not container.streams.video:
            raise SkipSample(f"{name}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        # Sequential decode: PyAV seeking is keyframe-granular, and clips are short.
        all_frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not all_frames:
        raise SkipSample(f"{name}: no video frames")
    wanted = list(range(len(all_frames))) if indices is None else list(indices)
    _check_indices(wanted, len(all_frames), name)
    frames = np.stack([all_frames[i] for i in wanted])
    return DecodedVideo(frames=frames, fps=fps, num_frames=len(all_frames))
