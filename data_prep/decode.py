"""Video decoding behind one small interface: decord first, PyAV where decord is missing.

decord is the fast random-access reader the LVDM loaders use, but it has no wheel for
aarch64 or macOS and is unmaintained, so PyAV (always installed: we encode with it too) is
the fallback. Readers are built per call from a path or bytes, never stored: decord readers
do not pickle, so anything shipped to a Ray task carries paths or bytes only.

Every decoding failure becomes `SkipSample`, so the shard loop can count a corrupt file
instead of crashing on it. So does a video over its `DecodeBudget`: a 38 KB H.264 file can
hold 600 frames of 1080p (3.7 GB decoded), and a worker killed for memory is a Ray error
that fails the same chunk on every rerun, not a skip. The budget is checked against the
stored size and the container's width x height x frames before anything is decoded, and
again frame by frame while decoding (a header can lie).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pyarrow import fs as pafs

from data_prep import storage
from data_prep.skip import SkipSample

try:  # decord has no wheel on aarch64/macOS
    import decord

    decord.bridge.set_bridge("native")
    _HAVE_DECORD = True
except ImportError:  # pragma: no cover - depends on the platform
    _HAVE_DECORD = False

VideoSource = str | Path | bytes
DEFAULT_MAX_PIXELS = 2**29  # 537 M pixels: 1.5 GiB as RGB; UCF-101's longest video is 138 M
DEFAULT_MAX_FILE_BYTES = 1 << 30


@dataclass(frozen=True)
class DecodeBudget:
    """What one video may cost to decode; over it, the video is skipped with the reason.

    `pixels` bounds width x height x frames decoded (each frame counted as at least
    `min_frame_pixels`: the shard stage holds every frame resized to `data.resolution`², so a
    video of a million tiny frames costs that much per frame), `file_bytes` the stored size.
    """

    pixels: int = DEFAULT_MAX_PIXELS
    file_bytes: int = DEFAULT_MAX_FILE_BYTES
    min_frame_pixels: int = 0

    def check_file(self, size: int, name: str) -> None:
        if size > self.file_bytes:
            raise SkipSample(
                f"{name}: {size / 2**20:.0f} MiB stored, over the decode budget of "
                f"{self.file_bytes / 2**20:.0f} MiB (data.max_file_mib)"
            )

    def check_pixels(self, width: int, height: int, frames: int, name: str) -> None:
        """Refuse `frames` frames of `width` x `height` if together they are over the budget."""
        cost = max(width * height, self.min_frame_pixels) * frames
        if cost > self.pixels:
            raise SkipSample(
                f"{name}: {frames} frames of {width}x{height} = {cost:,} pixels to decode, over the "
                f"decode budget of {self.pixels:,} (data.max_decode_pixels); skipped unread"
            )


@dataclass(frozen=True)
class DecodedVideo:
    """Frames `(t h w c)` uint8 RGB, the source's fps and its total frame count."""

    frames: np.ndarray
    fps: float
    num_frames: int


def available_backends() -> list[str]:
    return (["decord"] if _HAVE_DECORD else []) + ["pyav"]


def decode_video(
    src: VideoSource,
    indices: Sequence[int] | None = None,
    backend: str = "auto",
    name: str | None = None,
    budget: DecodeBudget | None = None,
) -> DecodedVideo:
    """Decode all frames, or only `indices` (which must be inside the video).

    `name` is what a `SkipSample` calls the video (default: the path, or `<N bytes>`), e.g.
    the URI that `src` bytes were fetched from. A URI `src` (a workdir or dataset on an object
    store) is fetched whole and decoded in memory. With a `budget`, a video over it is skipped
    before it is fetched or decoded (see `DecodeBudget`).
    """
    name = name or _describe(src)
    size = _stored_size(src)
    if size == 0:
        raise SkipSample(f"{name}: zero-byte file")
    if budget is not None:
        budget.check_file(size, name)
    if isinstance(src, str) and storage.is_uri(src):
        src = storage.read_bytes(src)
    chosen = _pick(backend)
    try:
        size_of_frames = _check_header(src, indices, budget, name) if budget is not None else None
        if chosen == "decord":
            try:
                return _decode_decord(src, indices, name, budget, size_of_frames)
            except SkipSample:
                raise
            except Exception:
                # decord 0.6 fails on some valid frame widths (16, 24, 48 px: "DECORDArrayCopyFromTo:
                # The size must exactly match"); under "auto" PyAV gets a second try.
                if backend != "auto":
                    raise
        return _decode_pyav(src, indices, name, budget)
    except SkipSample:
        raise
    except Exception as err:  # noqa: BLE001 - decoders raise many types; all mean "unusable"
        raise SkipSample(f"{name}: cannot decode ({type(err).__name__}: {err})") from err


def _stored_size(src: VideoSource) -> int:
    if isinstance(src, bytes):
        return len(src)
    filesystem, path = storage.resolve(src)
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SkipSample(f"{src}: no such file (moved or deleted after it was listed)")
    return info.size or 0


def _check_header(
    src: VideoSource, indices: Sequence[int] | None, budget: DecodeBudget, name: str
) -> tuple[int, int]:
    """The budget against what the container says (width, height, frame count), nothing decoded;
    returns (width, height) for the decoders' own checks (a header may not state the count)."""
    import av

    with av.open(io.BytesIO(src) if isinstance(src, bytes) else str(src)) as container:
        if not container.streams.video:
            return 0, 0  # the decoder says so
        stream = container.streams.video[0]
        frames = stream.frames
        if not frames and stream.duration and stream.time_base and stream.average_rate:
            frames = int(stream.duration * stream.time_base * stream.average_rate)
        needed = len(indices) if indices is not None else max(frames, 1)
        width, height = stream.codec_context.width, stream.codec_context.height
        budget.check_pixels(width, height, needed, name)
        return width, height


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


def _decode_decord(
    src: VideoSource,
    indices: Sequence[int] | None,
    name: str,
    budget: DecodeBudget | None = None,
    size: tuple[int, int] | None = None,
) -> DecodedVideo:
    handle = io.BytesIO(src) if isinstance(src, bytes) else str(src)
    reader = decord.VideoReader(handle, ctx=decord.cpu(0), num_threads=1)
    num_frames = len(reader)
    if num_frames == 0:
        raise SkipSample(f"{name}: no video frames")
    wanted = list(range(num_frames)) if indices is None else list(indices)
    _check_indices(wanted, num_frames, name)
    if budget is not None and size is not None:  # decord's own count, where the header had none
        budget.check_pixels(*size, len(wanted), name)
    frames = reader.get_batch(wanted).asnumpy()
    return DecodedVideo(frames=frames, fps=float(reader.get_avg_fps()), num_frames=num_frames)


def _decode_pyav(
    src: VideoSource, indices: Sequence[int] | None, name: str, budget: DecodeBudget | None = None
) -> DecodedVideo:
    import av

    wanted = None if indices is None else set(indices)
    kept: dict[int, np.ndarray] = {}
    decoded = count = 0
    handle = io.BytesIO(src) if isinstance(src, bytes) else str(src)
    with av.open(handle) as container:
        if not container.streams.video:
            raise SkipSample(f"{name}: no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        # Sequential decode (PyAV seeking is keyframe-granular, and clips are short), keeping only
        # the frames asked for. Frames are counted to the end: `num_frames` is the video's length.
        for count, frame in enumerate(container.decode(stream), start=1):
            if budget is not None and (wanted is None or count - 1 in wanted):
                decoded += 1
                budget.check_pixels(frame.width, frame.height, decoded, name)  # a header can lie
            if wanted is None or count - 1 in wanted:
                kept[count - 1] = frame.to_ndarray(format="rgb24")
    if not count:
        raise SkipSample(f"{name}: no video frames")
    order = list(range(count)) if indices is None else list(indices)
    _check_indices(order, count, name)
    return DecodedVideo(frames=np.stack([kept[i] for i in order]), fps=fps, num_frames=count)
